"""A tiny Docker token realm: `GET /auth?service=..&scope=..` answers a token signed by the test key pair.

Distribution's `WWW-Authenticate: Bearer realm=...` points clients (skopeo, the code under test) here. By
default every requested scope is granted; `grant` narrows it (e.g. pull only), and `username`/`password` make
Basic credentials mandatory (401 otherwise), as Harbor's or GitLab's realm would.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.keys import DEFAULT_ISSUER, TestKeyPair

#: grant(username, requested_scope) -> the actions to grant for that scope (empty list: omit it).
GrantPolicy = Callable[[str | None, dict[str, Any]], list[str]]


def parse_scope(scope: str) -> dict[str, Any]:
    """`repository:group/app:pull,push` -> `{"type": "repository", "name": "group/app", "actions": [...]}`."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


@dataclass(frozen=True)
class TokenRequest:
    """One request the realm received."""

    path: str
    service: str | None
    scopes: list[str]
    username: str | None
    status: int
    at: float = field(default_factory=time.time)


class TokenServer:
    """A Docker token realm on a free loopback port, served from a background thread."""

    def __init__(
        self,
        key_pair: TestKeyPair,
        *,
        issuer: str = DEFAULT_ISSUER,
        ttl: int = 300,
        username: str | None = None,
        password: str | None = None,
        grant: GrantPolicy | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """`host`: the loopback address to listen on (127.0.0.2 is another host than the registries')."""
        self.key_pair = key_pair
        self.host = host
        self.issuer = issuer
        self.ttl = ttl
        self.username = username
        self.password = password
        self.grant = grant
        self._requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("token server is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The realm URL to put in Distribution's `auth.token.realm`."""
        return f"http://{self.host}:{self.port}/auth"

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def start(self) -> TokenServer:
        if self._server is not None:
            return self
        self._server = ThreadingHTTPServer((self.host, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-realm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # Called from the handler thread.
    def _answer(self, path: str, query: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        params = parse_qs(query)
        service = params.get("service", [None])[0]
        scopes = params.get("scope", [])
        username = _basic_username(authorization, self.password)
        status = 200
        if urlsplit(path).path != "/auth":
            status = 404
        elif self.username is not None and username != self.username:
            status = 401
        with self._lock:
            self._requests.append(TokenRequest(path, service, scopes, username, status))
        if status != 200:
            return status, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        access = []
        for raw in scopes:
            # One query value may hold several space-separated scopes (older clients do this).
            for requested in map(parse_scope, raw.split()):
                actions = self.grant(username, requested) if self.grant else requested["actions"]
                if actions:
                    access.append({**requested, "actions": actions})
        token = self.key_pair.mint(
            access, issuer=self.issuer, service=service or "", ttl=self.ttl, subject=username or "anonymous"
        )
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return 200, {"token": token, "access_token": token, "expires_in": self.ttl, "issued_at": issued}


def _basic_username(authorization: str | None, password: str | None) -> str | None:
    """The Basic username if the header's password matches `password` (any password when that is None)."""
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    try:
        user, _, given = base64.b64decode(authorization[6:]).decode().partition(":")
    except ValueError:
        return None
    return user if password is None or given == password else None


def _handler_for(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = server._answer(
                self.path, urlsplit(self.path).query, self.headers.get("Authorization")
            )
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="geo-tui test realm"')
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

    return Handler
