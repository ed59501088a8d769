"""Where `auth = "token"` sends the username and password: only to a realm on the registry's own host or on
a host named in `token_realm_hosts`, never over http when the registry is https; and the realm's answer
is read up to 1 MiB, not whole.

The registry is a fake behind MockTransport (it only answers 401 challenges naming the realm, then the
tag list for a token); the realms are real servers on loopback, so what they received is what was sent.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from geo_tui.registry import BearerChallengeAuth, RegistryAuthError, RegistryClient
from tests.support.keys import TestKeyPair
from tests.support.token_server import TokenServer

PASSWORD = "realm-pass-0123456789"
BASIC = base64.b64encode(f"geo:{PASSWORD}".encode()).decode()


class ChallengingRegistry(httpx.AsyncBaseTransport):
    """`registry` (its scheme, host and port) answers like a token-auth registry whose challenges name
    `realm`; anything else (the realm) is reached over the real loopback network."""

    def __init__(self, registry: str, realm: str) -> None:
        self.registry = httpx.URL(registry)
        self.realm = realm
        self.network = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if (request.url.host, request.url.port) != (self.registry.host, self.registry.port):
            return await self.network.handle_async_request(request)
        if request.headers.get("authorization", "").startswith("Bearer "):
            return httpx.Response(200, json={"name": "a/b", "tags": ["v1"]})
        challenge = f'Bearer realm="{self.realm}",service="reg",scope="repository:a/b:pull"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge}, json={"errors": []})

    async def aclose(self) -> None:
        await self.network.aclose()


def client(registry: str, realm: str, **auth_options: Any) -> RegistryClient:
    auth = BearerChallengeAuth("geo", PASSWORD, registry=registry, **auth_options)
    return RegistryClient("eu", registry, auth, transport=ChallengingRegistry(registry, realm), retries=0)


@pytest.fixture
def other_realm(key_pair: TestKeyPair) -> Iterator[TokenServer]:
    """A realm on 127.0.0.2: another host than the registry's."""
    with TokenServer(key_pair, host="127.0.0.2") as server:
        yield server


async def test_credentials_never_go_to_a_realm_on_another_host(other_realm: TokenServer) -> None:
    async with client("http://reg.test", other_realm.url) as eu:
        with pytest.raises(RegistryAuthError) as caught:
            await eu.list_tags("a/b")
    message = str(caught.value)
    assert message.startswith("eu: GET tags a/b: 401")
    assert "127.0.0.2" in message and "token_realm_hosts" in message
    assert PASSWORD not in message and BASIC not in message
    assert other_realm.requests == []  # nothing at all was sent there


async def test_a_realm_host_the_config_names_gets_them(other_realm: TokenServer) -> None:
    async with client("http://reg.test", other_realm.url, realm_hosts=["127.0.0.2"]) as eu:
        assert await eu.list_tags("a/b") == ["v1"]
    assert [r.username for r in other_realm.requests] == ["geo"]


async def test_the_registrys_own_host_gets_them_on_any_port(key_pair: TestKeyPair) -> None:
    with TokenServer(key_pair) as realm:  # 127.0.0.1, another port than the registry's
        async with client("http://127.0.0.1:1", realm.url) as eu:
            assert await eu.list_tags("a/b") == ["v1"]
        assert [r.username for r in realm.requests] == ["geo"]


async def test_never_over_http_when_the_registry_is_https(other_realm: TokenServer) -> None:
    async with client("https://reg.test", other_realm.url, realm_hosts=["127.0.0.2"]) as eu:
        with pytest.raises(RegistryAuthError) as caught:
            await eu.list_tags("a/b")
    assert "plain http while the registry is https" in str(caught.value)
    assert other_realm.requests == []


async def test_anonymous_token_requests_may_go_anywhere(other_realm: TokenServer) -> None:
    transport = ChallengingRegistry("https://reg.test", other_realm.url)
    async with RegistryClient("eu", "https://reg.test", BearerChallengeAuth(), transport=transport) as eu:
        assert await eu.list_tags("a/b") == ["v1"]
    assert [r.username for r in other_realm.requests] == [None]


class RedirectingRealm:
    """A realm on the registry's host (127.0.0.1) that redirects every request to `target`."""

    def __init__(self, target: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = self.path.partition("?")[2]
                self.send_response(302)
                self.send_header("Location", f"{target}?{query}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/auth"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_a_redirect_from_the_registrys_realm_to_another_host_loses_the_credentials(
    other_realm: TokenServer,
) -> None:
    realm = RedirectingRealm(other_realm.url)
    try:
        async with client("http://127.0.0.1:1", realm.url) as eu:
            assert await eu.list_tags("a/b") == ["v1"]  # that realm grants anonymous pulls
    finally:
        realm.stop()
    assert [r.username for r in other_realm.requests] == [None]  # asked, but without the password


class HugeRealm:
    """A realm whose answer is 200 MiB of JSON-ish bytes, with or without a Content-Length; counts what
    it managed to write before the client hung up."""

    SIZE = 200 * 1024 * 1024

    def __init__(self, *, declare_length: bool) -> None:
        self.declare_length = declare_length
        self.written = 0
        realm = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if realm.declare_length:
                    self.send_header("Content-Length", str(HugeRealm.SIZE))
                else:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b" " * 65536
                try:
                    while realm.written < HugeRealm.SIZE:
                        if realm.declare_length:
                            self.wfile.write(chunk)
                        else:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        realm.written += len(chunk)
                except OSError:
                    pass  # the client stopped reading and closed

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/auth"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
async def test_a_huge_realm_answer_is_refused_after_1_mib(declare_length: bool) -> None:
    realm = HugeRealm(declare_length=declare_length)
    try:
        async with client("http://127.0.0.1:1", realm.url) as eu:
            with pytest.raises(RegistryAuthError) as caught:
                await eu.list_tags("a/b")
    finally:
        realm.stop()
    assert str(caught.value) == "eu: GET tags a/b: 401: token realm answer is larger than 1.0 MiB"
    # Read up to the cap and hung up: the rest of the 200 MiB was never taken in (kernel buffers aside).
    assert realm.written < 32 * 1024 * 1024
