"""The sockets under the registry client: an httpx transport over a connection pool of its own
(`ConnectionPool`: httpcore's HTTP/1.1 connections, a semaphore instead of httpcore's request queue)
whose network backend is plain asyncio sockets.

httpcore's default backend goes through anyio, which opens a cancel scope around every read and
write, keeps a copy of what the kernel did not take yet, and rebuilds a socket's attributes (a
getpeername call) each time the pool asks whether an idle connection is still open, which it does
for every idle connection at every request and response. In bench/backfill.py that was ~15% of
geo-tui's CPU. This backend does the same job with the event loop's own primitives:

- a read or a write first tries the non-blocking socket call, and waits on the event loop only when
  the socket is not ready (the bytes of a blob are usually already buffered);
- a write sends straight from the caller's buffer, never copying what the kernel did not take yet;
- TLS is a non-blocking `ssl.SSLSocket`: OpenSSL's C code encrypts and decrypts, and a read takes
  every record already there (up to READ_SIZE), not one 16 KiB record at a time;
- "is this idle connection readable?" is one poll(2) on the descriptor.

Errors and timeouts raise httpcore's exception types, as any backend must; the transport turns them
into httpx's, as httpx's own transport does. A registry reached through a proxy (HTTP_PROXY and the
like) keeps httpx's own transport, which knows proxies: see `direct_transport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import select
import socket
import ssl
import urllib.request
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import httpcore
import httpx

from ._httpcore_patches import READ_SIZE, locks_without_checkpoint, read_more_per_call
from ._pool import ConnectionPool
from ._session import CONNECTED

SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]

# What a wait on the socket was for: the exception to raise when the timeout runs out.
_Timeout = type[httpcore.TimeoutException]


@contextlib.contextmanager
def _mapped(error: type[httpcore.NetworkError]) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise error(str(exc) or type(exc).__name__) from exc


class SocketStream(httpcore.AsyncNetworkStream):
    """One connected socket (plain or TLS) in non-blocking mode."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._loop = asyncio.get_running_loop()

    async def _ready(self, readable: bool, timeout: float | None, expired: _Timeout) -> None:
        """Wait until the socket is readable (or writable), at most `timeout` seconds."""
        loop = self._loop
        fd = self._sock.fileno()
        waiter = loop.create_future()

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)

        if readable:
            loop.add_reader(fd, wake)
        else:
            loop.add_writer(fd, wake)
        try:
            if timeout is None:
                await waiter
            else:
                async with asyncio.timeout(timeout):
                    await waiter
        except TimeoutError:
            raise expired(f"no progress in {timeout} s") from None
        finally:
            if readable:
                loop.remove_reader(fd)
            else:
                loop.remove_writer(fd)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        sock = self._sock
        size = min(max_bytes, READ_SIZE)
        with _mapped(httpcore.ReadError):
            while True:
                try:
                    data = sock.recv(size)
                except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                    await self._ready(True, timeout, httpcore.ReadTimeout)
                except ssl.SSLWantWriteError:
                    await self._ready(False, timeout, httpcore.ReadTimeout)
                else:
                    if self._tls and 0 < len(data) < size:
                        return self._more_records(data, size)
                    return data

    def _more_records(self, data: bytes, size: int) -> bytes:
        """A TLS read returns one record (16 KiB at most): take the records already here as well, up
        to `size`, so a blob goes through Python in pieces as big as over plain TCP."""
        parts, got = [data], len(data)
        while got < size:
            try:
                more = self._sock.recv(size - got)
            except OSError:  # nothing more yet (or an error the next read will meet)
                break
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        sock = self._sock
        view = memoryview(buffer)
        with _mapped(httpcore.WriteError):
            while view:
                try:
                    sent = sock.send(view)
                except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                    await self._ready(False, timeout, httpcore.WriteTimeout)
                    continue
                except ssl.SSLWantReadError:
                    await self._ready(True, timeout, httpcore.WriteTimeout)
                    continue
                view = view[sent:]

    async def aclose(self) -> None:
        self._sock.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> SocketStream:
        sock = ssl_context.wrap_socket(
            self._sock, server_hostname=server_hostname, do_handshake_on_connect=False
        )
        tls = SocketStream(sock)
        try:
            async with asyncio.timeout(timeout):
                with _mapped(httpcore.ConnectError):
                    await tls._handshake()
        except TimeoutError:
            sock.close()
            raise httpcore.ConnectTimeout(f"TLS handshake took more than {timeout} s") from None
        except BaseException:
            sock.close()
            raise
        return tls

    async def _handshake(self) -> None:
        sock = self._sock
        assert isinstance(sock, ssl.SSLSocket)
        while True:
            try:
                sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                await self._ready(True, None, httpcore.ConnectTimeout)
            except ssl.SSLWantWriteError:
                await self._ready(False, None, httpcore.ConnectTimeout)

    def get_extra_info(self, info: str) -> Any:
        sock = self._sock
        if info == "is_readable":
            return _readable(sock)
        if info == "ssl_object":
            return sock if isinstance(sock, ssl.SSLSocket) else None
        if info == "socket":
            return sock
        with contextlib.suppress(OSError):
            if info == "client_addr":
                return sock.getsockname()
            if info == "server_addr":
                return sock.getpeername()
        return None


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: for HTTP/1.1 that can only be the server
    closing it. A closed socket counts as readable, so the pool drops it."""
    fd = sock.fileno()
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Connects TCP and Unix sockets with the running event loop."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> SocketStream:
        def options(sock: socket.socket) -> None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if local_address is not None:
                sock.bind((local_address, 0))

        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                addresses = await _resolve(loop, host, port)
                return await _connect_first(loop, addresses, options, socket_options)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} took more than {timeout} s") from None

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> SocketStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                return await _connect_first(loop, [(socket.AF_UNIX, path)], lambda sock: None, socket_options)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {path} took more than {timeout} s") from None

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[tuple[int, Any]]:
    """The addresses to try for host:port; a literal IP address needs no resolver thread."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        return [(family, (host, port))]
    with _mapped(httpcore.ConnectError):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise httpcore.ConnectError(f"{host} has no address")
    return [(family, address) for family, _, _, _, address in infos]


async def _connect_first(
    loop: asyncio.AbstractEventLoop,
    addresses: list[tuple[int, Any]],
    prepare: Callable[[socket.socket], None],
    socket_options: Iterable[SocketOption] | None,
) -> SocketStream:
    """The first address that accepts a connection, in the resolver's order."""
    failure: OSError = OSError(errno.ECONNREFUSED, "no address to connect to")
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if family != socket.AF_UNIX:
                prepare(sock)
            for option in socket_options or ():
                sock.setsockopt(*option)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        return SocketStream(sock)
    raise httpcore.ConnectError(str(failure)) from failure


# httpcore's exceptions and the httpx ones they become (both name them alike), the most specific first.
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = tuple(
    (getattr(httpcore, name), getattr(httpx, name))
    for name in (
        "ConnectTimeout",
        "ReadTimeout",
        "WriteTimeout",
        "PoolTimeout",
        "TimeoutException",
        "ConnectError",
        "ReadError",
        "WriteError",
        "NetworkError",
        "UnsupportedProtocol",
        "RemoteProtocolError",
        "LocalProtocolError",
        "ProtocolError",
    )
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, error in _HTTPX_ERRORS:
            if isinstance(exc, core):
                raise error(str(exc) or type(exc).__name__) from exc
        raise


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        closing = getattr(self._stream, "aclose", None)
        if closing is not None:
            with _as_httpx_errors():
                await closing()


class DirectTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 straight to one registry over `AsyncioBackend` sockets, `connections` at most."""

    def __init__(self, ssl_context: ssl.SSLContext, connections: int, keepalive_expiry: float = 5.0) -> None:
        self._pool = ConnectionPool(ssl_context, connections, keepalive_expiry, AsyncioBackend())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        assert isinstance(request.stream, httpx.AsyncByteStream)
        extensions = request.extensions  # the timeouts, among others
        connected = extensions.get(CONNECTED)
        if connected is not None:  # the pool says when the request has its connection: no trace needed
            extensions = {k: v for k, v in extensions.items() if k != "trace" and k != CONNECTED}
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=extensions,
        )
        with _as_httpx_errors():
            response = await self._pool.handle_async_request(core, connected)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def direct_transport(url: httpx.URL, ssl_context: ssl.SSLContext, connections: int) -> DirectTransport | None:
    """A DirectTransport for a registry, or None when the environment routes `url` through a proxy
    (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, minus NO_PROXY): httpx's own transport then does the job."""
    read_more_per_call()
    locks_without_checkpoint()
    proxies = urllib.request.getproxies_environment()
    if (proxies.get(url.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(url.host):
        return None
    return DirectTransport(ssl_context, connections)
