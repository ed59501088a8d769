"""LabRegistry: one lab registry served by uvicorn on a thread of its own, with its own event loop.

Several run in one process (the demo runs three beside the engine and the console), so nothing here is
global and no signal handler is installed: uvicorn only installs them on the main thread, and the server
runs on its own thread. The listening socket is bound here, so the port picked at the first start is
bound again on every restart.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx
import uvicorn

from geo_tui._http_server import LimitedServer, server_limits

from .asgi import AccessLog
from .auth import TokenVerifier
from .notify import Notifier
from .registry import LabApp, LabSettings
from .storage import LabStorage

__all__ = ["LabRegistry", "LabStartError"]

START_TIMEOUT = 10.0


class LabStartError(RuntimeError):
    """The lab registry did not come up (port taken, or no answer to ``GET /v2/`` in time)."""


class LabRegistry:
    """A small OCI registry on 127.0.0.1 keeping its content under `root` (see the module docstring).

    `auth` is ``"token"`` (Bearer JWTs signed by the key of `trust_pem`, with `issuer` and `service`) or
    ``"none"``. Notifications go to `notification_url` with `notification_secret` as Authorization, but
    for the actions in `ignore_actions` and the media types in `ignore_media_types` (Distribution's
    ``notifications.endpoints[].ignore``).
    `schema1` and `read_only` mimic Distribution's ``compatibility.schema1.enabled`` and
    ``storage.maintenance.readonly``; both are read at start(). `referrers` serves the OCI 1.1 referrers
    API (Distribution 2.8 has none), listing `referrers_page_size` descriptors a page.
    """

    def __init__(
        self,
        root: Path,
        *,
        name: str = "registry",
        host: str = "127.0.0.1",
        port: int = 0,
        auth: str = "token",
        trust_pem: bytes | None = None,
        issuer: str = "gitlab-issuer",
        service: str = "container_registry",
        token_realm: str | None = None,
        notification_url: str | None = None,
        notification_secret: str | None = None,
        ignore_actions: frozenset[str] = frozenset(),
        ignore_media_types: frozenset[str] = frozenset(),
        delete_enabled: bool = True,
        access_log: Path | None = None,
        schema1: bool = True,
        read_only: bool = False,
        referrers: bool = False,
        referrers_page_size: int = 100,
    ) -> None:
        if auth not in ("token", "none"):
            raise ValueError(f"lab registry {name}: auth must be 'token' or 'none', not {auth!r}")
        self.verifier = None
        if auth == "token":
            if trust_pem is None:
                raise ValueError(f"lab registry {name}: token auth needs trust_pem")
            self.verifier = TokenVerifier(trust_pem, issuer=issuer, service=service)
        self.root = Path(root)
        self.name = name
        self._bind_host = host
        self.port = port
        self.auth = auth
        self.issuer = issuer
        self.service = service
        self.token_realm = token_realm
        self.notification_url = notification_url
        self._notification_secret = notification_secret
        self.ignore_actions = ignore_actions
        self.ignore_media_types = ignore_media_types
        self.delete_enabled = delete_enabled
        self.access_log = access_log
        self.schema1 = schema1
        self.read_only = read_only
        self.referrers = referrers
        self.referrers_page_size = referrers_page_size
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._failure: BaseException | None = None

    def __repr__(self) -> str:
        return f"<LabRegistry {self.name} {self.url} {'running' if self.running else 'stopped'}>"

    @property
    def host(self) -> str:
        """``HOST:PORT`` as used in image references."""
        return f"{self._bind_host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _app(self, access_log: AccessLog | None, notifier: Notifier | None) -> LabApp:
        settings = LabSettings(
            realm=self.token_realm or f"{self.url}/auth",
            service=self.service,
            delete_enabled=self.delete_enabled,
            schema1=self.schema1,
            read_only=self.read_only,
            referrers=self.referrers,
            referrers_page_size=self.referrers_page_size,
        )
        storage = LabStorage(self.root)
        return LabApp(storage, settings, verifier=self.verifier, notifier=notifier, access_log=access_log)

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._bind_host, self.port))
        except OSError as exc:
            sock.close()
            raise LabStartError(f"lab registry {self.name}: cannot listen on {self.host}: {exc}") from None
        sock.listen(128)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = int(sock.getsockname()[1])
        return sock

    def start(self) -> LabRegistry:
        """Serve on a background thread; return once ``GET /v2/`` answers. Restarts keep port and storage."""
        if self.running:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        self._socket = self._bind()
        access_log = AccessLog(self.access_log) if self.access_log is not None else None
        notifier = (
            Notifier(
                self.notification_url,
                self._notification_secret,
                ignore_actions=self.ignore_actions,
                ignore_media_types=self.ignore_media_types,
            )
            if self.notification_url
            else None
        )
        app = self._app(access_log, notifier)
        # log_config=None: uvicorn must not reconfigure the process's logging (the console owns the screen).
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            **server_limits(),
        )
        self._server = LimitedServer(config)
        self._failure = None
        self._thread = threading.Thread(
            target=self._serve, args=(self._server, self._socket, access_log, notifier),
            name=f"lab-registry-{self.name}", daemon=True,
        )  # fmt: skip
        self._thread.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _serve(
        self,
        server: uvicorn.Server,
        sock: socket.socket,
        access_log: AccessLog | None,
        notifier: Notifier | None,
    ) -> None:
        async def main() -> None:
            if access_log is not None:
                access_log.open()
            if notifier is not None:
                notifier.start()
            try:
                await server.serve(sockets=[sock])
            finally:
                if notifier is not None:
                    await notifier.stop()
                if access_log is not None:
                    access_log.close()

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by start(); a thread has no one else to tell
            self._failure = exc

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.running:
                raise LabStartError(f"lab registry {self.name} stopped while starting: {self._failure!r}")
            try:
                httpx.get(f"{self.url}/v2/", timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.02)
        raise LabStartError(f"lab registry {self.name}: no answer on {self.url}/v2/ in {START_TIMEOUT:.0f} s")

    def stop(self) -> None:
        """Stop serving; returns once the port is closed. Storage and port stay. Idempotent."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=10)
        if sock is not None:
            sock.close()

    def __enter__(self) -> LabRegistry:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
