"""The registry client's own sockets (geo_tui/registry/_network.py), against small HTTP/1.1 servers on
127.0.0.1: bodies streamed whole both ways, backpressure, timeouts, refused connections, idle connections
the server closed, TLS verified against a CA file (and refused without it), and proxies left to httpx."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpcore
import httpx
import pytest

from geo_tui.registry import RegistryClient, RegistryError
from geo_tui.registry._auth import NoAuth
from geo_tui.registry._network import DirectTransport, direct_transport
from tests.support.distribution import free_port
from tests.support.tls import make_tls_files

pytestmark = pytest.mark.timeout(30)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def serving(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """A server on a free loopback port running `handler` per connection: its base URL."""
    connections: list[asyncio.Task[None]] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        server.close()
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    line, *fields = head.split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields if f)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return line, headers, body


def response(status: int, body: bytes = b"", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def client(url: str, connections: int = 2, verify: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    transport = DirectTransport(verify or ssl.create_default_context(), connections)
    return httpx.AsyncClient(transport=transport, base_url=url, timeout=httpx.Timeout(5.0))


def pattern(size: int) -> bytes:
    return (hashlib.sha256(b"geo-tui").digest() * (size // 32 + 1))[:size]


async def test_large_bodies_stream_whole_both_ways() -> None:
    size = 24 * 1024 * 1024 + 13
    data = pattern(size)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line, _, body = await read_request(reader)
            if line.startswith("PUT"):
                writer.write(response(201, hashlib.sha256(body).hexdigest().encode()))
            else:
                writer.write(response(200, data))
            await writer.drain()

    async def upload() -> AsyncIterator[bytes]:
        for start in range(0, size, 1024 * 1024):
            yield data[start : start + 1024 * 1024]

    async with serving(handler) as url, client(url) as http:
        put = await http.put("/up", content=upload(), headers={"Content-Length": str(size)})
        assert put.status_code == 201 and put.text == hashlib.sha256(data).hexdigest()
        got = hashlib.sha256()
        async with http.stream("GET", "/down") as down:
            async for chunk in down.aiter_raw():
                got.update(chunk)
        assert got.hexdigest() == hashlib.sha256(data).hexdigest()


async def test_a_slow_reader_gets_every_byte_of_a_write() -> None:
    """The kernel takes part of a big write at a time; the rest must follow, in order."""
    size = 6 * 1024 * 1024

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
        length = int(head.split("content-length:")[1].split("\r\n")[0])
        digest, left = hashlib.sha256(), length
        while left:
            await asyncio.sleep(0.002)
            piece = await reader.read(min(left, 64 * 1024))
            digest.update(piece)
            left -= len(piece)
        writer.write(response(201, digest.hexdigest().encode()))
        await writer.drain()

    data = pattern(size)
    async with serving(handler) as url, client(url) as http:
        reply = await http.put("/slow", content=data)
    assert reply.text == hashlib.sha256(data).hexdigest()


async def test_a_server_that_never_answers_is_a_read_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async with serving(handler) as url, client(url) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/", timeout=httpx.Timeout(5.0, read=0.3))


async def test_nobody_listening_is_a_connect_error() -> None:
    async with client(f"http://127.0.0.1:{free_port()}") as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/")


async def test_an_idle_connection_the_server_closed_is_replaced() -> None:
    """The server closes each connection right after its answer (without saying so): the pool sees the
    idle socket readable (EOF) and opens a new one instead of failing the next request."""
    opened = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal opened
        opened += 1
        await read_request(reader)
        writer.write(response(200, b"ok"))
        await writer.drain()

    async with serving(handler) as url, client(url, connections=1) as http:
        for _ in range(3):
            assert (await http.get("/")).text == "ok"
            await asyncio.sleep(0.05)
    assert opened == 3


async def test_many_requests_at_once_share_the_capped_connections() -> None:
    """40 requests at once through a pool of 3: never more than 3 connections open or requests being
    answered at a time, each connection kept and reused, and a request that fails (its connection
    refused mid-answer) gives its slot back, so the others still all finish."""
    opened = busy = most_busy = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal opened, busy, most_busy
        opened += 1
        while True:
            line, _, _ = await read_request(reader)
            busy += 1
            most_busy = max(most_busy, busy)
            await asyncio.sleep(0.005)
            busy -= 1
            if "/broken" in line:
                writer.write(b"HTTP/1.1 200 X\r\nContent-Length: 10\r\n\r\nshort")
                await writer.drain()
                return  # closes the connection five bytes short
            writer.write(response(200, line.split()[1].encode()))
            await writer.drain()

    async with serving(handler) as url, client(url, connections=3) as http:
        paths = [f"/{i}" if i % 10 else f"/broken-{i}" for i in range(40)]
        results = await asyncio.gather(*(http.get(p) for p in paths), return_exceptions=True)
        for path, result in zip(paths, results, strict=True):
            if "broken" in path:
                assert isinstance(result, httpx.RemoteProtocolError | httpx.ReadError), result
            else:
                assert isinstance(result, httpx.Response) and result.text == path
        assert (await http.get("/after")).text == "/after"  # every slot came back
    assert most_busy <= 3
    assert opened <= 3 + 4  # the three kept, and one new one after each of the 4 broken answers


async def test_tls_verified_against_a_ca_file_and_refused_without_it(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "tls")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(files.certificate, files.key)
    body = pattern(3 * 1024 * 1024)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(response(200, body))
            await writer.drain()

    async with serving(handler, server_context) as url:
        async with client(url, verify=ssl.create_default_context(cafile=files.ca)) as http:
            for _ in range(2):  # the second one reuses the TLS connection
                assert (await http.get("/")).content == body
        async with client(url) as http:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get("/")


def test_a_proxy_in_the_environment_leaves_the_registry_to_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    context = ssl.create_default_context()
    url = httpx.URL("https://registry.example:5050")
    assert isinstance(direct_transport(url, context, 2), DirectTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert direct_transport(url, context, 2) is None
    assert isinstance(direct_transport(httpx.URL("http://registry.example"), context, 2), DirectTransport)
    monkeypatch.setenv("NO_PROXY", "registry.example")
    assert isinstance(direct_transport(url, context, 2), DirectTransport)


async def test_the_registry_client_uses_its_own_sockets() -> None:
    """Every registry client goes through DirectTransport (unless a proxy applies): both its pools."""
    async with RegistryClient("r", "http://127.0.0.1:1", NoAuth()) as registry:
        pools = (registry._session.meta, registry._session.blobs)
        assert all(isinstance(pool._transport, DirectTransport) for pool in pools)


async def test_a_cookie_the_registry_sets_goes_back_to_it() -> None:
    """Responses are only handed to the cookie jar when they set a cookie (a load balancer's sticky
    session, say): that cookie still goes back on the requests after it, and nothing before it."""
    cookies: list[str | None] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, headers, _ = await read_request(reader)
            cookies.append(headers.get("cookie"))
            extra = "Set-Cookie: lb=node-2; Path=/\r\n" if len(cookies) == 2 else ""
            writer.write(response(200, b"{}", extra))
            await writer.drain()

    async with serving(handler) as url, RegistryClient("r", url, NoAuth()) as registry:
        for _ in range(4):
            await registry.ping()
    assert cookies == [None, None, "lb=node-2", "lb=node-2"]


async def test_reading_or_writing_a_closed_stream_is_a_network_error() -> None:
    """httpx sees its own error types (ReadError, WriteError), never a bare OSError."""
    from geo_tui.registry._network import AsyncioBackend

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async with serving(handler) as url:
        port = int(url.rsplit(":", 1)[1])
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        await stream.aclose()
        with pytest.raises(httpcore.ReadError):
            await stream.read(1024, timeout=1)
        with pytest.raises(httpcore.WriteError):
            await stream.write(b"GET / HTTP/1.1\r\n\r\n", timeout=1)


async def test_the_registry_client_verifies_tls_unless_told_not_to(tmp_path: Path) -> None:
    """verify=True (certifi's bundle) refuses the test CA's certificate, naming the registry; a CA
    bundle path trusts it; verify=False (tls_verify = false) skips the check."""
    files = make_tls_files(tmp_path / "tls")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(files.certificate, files.key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(response(200, b"{}", "Content-Type: application/json\r\n"))
            await writer.drain()

    async with serving(handler, server_context) as url:
        async with RegistryClient("tls-site", url, NoAuth(), retries=0) as registry:
            with pytest.raises(RegistryError, match=r"tls-site.*CERTIFICATE_VERIFY_FAILED"):
                await registry.ping()
        for verify in (str(files.ca), False):
            async with RegistryClient("tls-site", url, NoAuth(), verify=verify) as registry:
                assert await registry.ping() >= 0


async def test_httpcore_connection_locks_take_a_free_lock_without_a_loop_cycle() -> None:
    """The one private name of httpcore the client relies on (`_httpcore_patches.locks_without_checkpoint`):
    `httpcore._synchronization.AsyncLock`, whose `setup` makes the anyio lock that the patch replaces
    with a fast-acquire one. This fails when httpcore renames or reshapes it (pyproject pins httpcore
    below 1.1 for that reason): a free lock must be taken without yielding to the event loop."""
    from httpcore import _synchronization

    direct_transport(httpx.URL("http://127.0.0.1:1/"), ssl.create_default_context(), 1)  # applies the patch
    lock = _synchronization.AsyncLock()
    yielded = False

    def mark() -> None:
        nonlocal yielded
        yielded = True

    asyncio.get_running_loop().call_soon(mark)
    async with lock:
        assert not yielded, "httpcore's AsyncLock yielded for a free lock: the patch no longer applies"
    await asyncio.sleep(0)
    assert yielded


async def test_the_deadline_starts_when_the_request_has_its_connection_and_httpcore_traces_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over our own transport, a request's deadline starts once our pool gives it a connection (the
    transport says so; httpcore is handed no `trace`, which would cost it ~10 awaits a request): the
    second of two HEADs on one connection waits out the first without that wait counting, and a request
    slow on its own still fails at its deadline, naming the site."""
    delays = [0.3, 0.2, 1.0]
    traced: list[str] = []
    real_request = httpcore.Request.__init__

    def request(self: httpcore.Request, *args: object, **kwargs: object) -> None:
        extensions = kwargs.get("extensions") or {}
        assert isinstance(extensions, dict)
        traced.extend(str(k) for k in extensions if k in ("trace", "geo_tui.connected"))
        real_request(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpcore.Request, "__init__", request)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await asyncio.sleep(delays.pop(0))
            writer.write(response(200, b"", "Docker-Content-Digest: sha256:" + "a" * 64 + "\r\n"))
            await writer.drain()

    async with (
        serving(handler) as url,
        # a deadline of 0.4 s a small request (the base timeout; min_transfer_rate adds nothing at 0 bytes)
        RegistryClient("slow-site", url, NoAuth(), max_connections=1, timeout=0.4, retries=0) as registry,
    ):
        started = asyncio.get_running_loop().time()
        first, second = await asyncio.gather(
            registry.ping(), registry.ping()
        )  # 0.3 s, then 0.2 s after waiting 0.3 s for the one connection
        assert asyncio.get_running_loop().time() - started >= 0.5
        assert first >= 0 and second >= 0
        with pytest.raises(RegistryError) as slow:
            await registry.ping()  # 1.0 s on its own: past the 0.4 s deadline
    assert "slow-site" in str(slow.value) and "too slow" in str(slow.value), slow.value
    assert traced == [], traced
