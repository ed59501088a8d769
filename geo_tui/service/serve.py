"""`geo-tui serve`: the engine running for good, with the notification receiver beside it.

Backfill at start, events as they arrive, retries on their schedule, and a periodic reconcile
(Distribution keeps its notification queue in memory, so events do get lost). SIGTERM or SIGINT:
stop accepting, let copies in flight finish for a few seconds or leave them pending, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from geo_tui._http_server import LimitedServer, server_limits
from geo_tui.config import ApiConfig, Config, default_api_socket
from geo_tui.config.rules import host_port
from geo_tui.engine.engine import Engine

from .api import ApiApp, mount_api
from .receiver import EVENTS_PATH, ReceiverApp

__all__ = ["ListenError", "QuietServer", "asgi_server", "bind_tcp", "serve"]

log = logging.getLogger("geo_tui.serve")
SHUTDOWN_GRACE = 5.0


class ListenError(Exception):
    """The receiver's address cannot be bound."""


class QuietServer(LimitedServer):
    """uvicorn, minus its signal handling: serve() handles SIGTERM/SIGINT for the engine and the server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket with TCP_NODELAY; ListenError names the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without
    # it every answer waits ~40 ms for a delayed ACK (Distribution sends events one at a time).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host_port(host, port)}: {exc.strerror or exc}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _bind_unix(path: Path) -> socket.socket:
    """A unix socket only its owner may use (mode 0600), replacing a stale one left by a dead serve."""
    if path.is_socket():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)  # nobody answers: left behind by a process that died
        else:
            raise ListenError(f"cannot listen on {path}: another process is serving there")
        finally:
            probe.close()
    elif path.exists():
        raise ListenError(f"cannot listen on {path}: a file that is not a socket is in the way")
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # created 0600: no moment when others could connect
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old_umask)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _http_url(host: str, port: int) -> str:
    return f"http://{host_port(host, port)}"


def asgi_server(app: Any) -> QuietServer:
    """The uvicorn server every geo-tui listener runs: quiet logs, no lifespan, short graceful shutdown,
    and the limits of geo_tui._http_server (connections, a header deadline, throttled accept errors)."""
    return QuietServer(
        uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            log_level="warning",
            timeout_graceful_shutdown=2,
            server_header=False,
            date_header=False,
            **server_limits(),
        )
    )


class _Listeners:
    """The sockets `serve` answers on: the notification receiver's, and the API's if it has its own."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.api = config.api or ApiConfig(socket=default_api_socket(config.engine.database))
        notifications = config.notifications
        self.receiver: socket.socket | None = None
        self.api_socket: socket.socket | None = None
        self.unix_path: Path | None = None
        try:
            if notifications is not None:
                try:
                    self.receiver = bind_tcp(notifications.listen_host, notifications.listen_port)
                except ListenError as exc:
                    raise ListenError(f"notifications.listen: {exc}") from None
            self._bind_api()
        except BaseException:
            self.close()
            raise

    def _bind_api(self) -> None:
        if self.api.socket is None and self.api.token is None:  # load_config refuses this too
            raise ListenError("api.listen: a TCP address needs [api] token; without one use a unix socket")
        if self.api.shared and self.config.notifications is None:
            raise ListenError("api.listen: no [notifications] receiver to share an address with")
        try:
            if self.api.socket is not None:
                self.api_socket = _bind_unix(self.api.socket)
                self.unix_path = self.api.socket
            elif self.api.listen_host is not None and self.api.listen_port is not None:
                self.api_socket = bind_tcp(self.api.listen_host, self.api.listen_port)
        except ListenError as exc:
            raise ListenError(f"api.listen: {exc}") from None

    @property
    def api_address(self) -> str:
        """Where a console attaches: an http:// URL or a unix socket path."""
        if self.api.socket is not None:
            return str(self.api.socket)
        if self.api.listen_host is not None and self.api.listen_port is not None:
            return _http_url(self.api.listen_host, self.api.listen_port)
        assert self.config.notifications is not None  # a shared API needs the receiver (config checks)
        return _http_url(self.config.notifications.listen_host, self.config.notifications.listen_port)

    def describe(self) -> tuple[str, ...]:
        where = []
        if self.config.notifications is not None:
            n = self.config.notifications
            where.append(
                host_port(n.listen_host, n.listen_port)
                + (" (notifications and API)" if self.api.shared else "")
            )
        if self.api_socket is not None:
            where.append(f"{self.api_address} (API)")
        return tuple(where)

    def close(self) -> None:
        for sock in (self.receiver, self.api_socket):
            if sock is not None:
                sock.close()
        if self.unix_path is not None:
            self.unix_path.unlink(missing_ok=True)


async def serve(
    config: Config,
    *,
    command: str = "geo-tui serve",
    on_ready: Callable[[Engine, str], None] | None = None,
    engine_factory: Callable[[Config, str], Engine] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until SIGTERM or SIGINT; returns the exit status. Raises DatabaseInUse if another engine holds
    the tracking database, ListenError if an address cannot be bound. `command` names this engine to
    whoever finds the database held; `on_ready` gets the engine and the API's address once it listens.
    Tests that serve an engine they built (fault transports, a clock) on a thread of their own give its
    `engine_factory(config, command)` and a `stop` event, set instead of a signal."""
    engine = engine_factory(config, command) if engine_factory else Engine(config, command=command)
    await engine.open()  # the claim first: a second serve is refused by name, not by a busy port
    try:
        listeners = _Listeners(config)
    except BaseException:
        await engine.close()
        raise
    signals = (signal.SIGTERM, signal.SIGINT) if stop is None else ()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    api = ApiApp(engine, token=listeners.api.token, read_token=listeners.api.read_token)
    servers: list[tuple[QuietServer, asyncio.Task[None]]] = []
    status = 0
    try:
        await engine.start()
        if listeners.receiver is not None:
            receiver = ReceiverApp(
                engine, config.notifications.secret.reveal() if config.notifications else None
            )
            app = mount_api(api, receiver) if listeners.api.shared else receiver
            server = asgi_server(app)
            servers.append((server, asyncio.ensure_future(server.serve(sockets=[listeners.receiver]))))
            assert config.notifications is not None
            n = config.notifications
            engine.log(
                "info", f"receiving notifications on {_http_url(n.listen_host, n.listen_port)}{EVENTS_PATH}"
            )
        else:
            engine.log(
                "warning",
                "no [notifications] section: relying on the periodic reconcile every "
                f"{config.engine.reconcile_interval:.0f} s",
            )
        if listeners.api_socket is not None:
            server = asgi_server(api)
            servers.append((server, asyncio.ensure_future(server.serve(sockets=[listeners.api_socket]))))
        engine.claim.advertise(listen=listeners.describe(), api=listeners.api_address)
        await engine.leases.register(", ".join(listeners.describe()))  # PostgreSQL: the worker's row says it
        engine.log("info", f"engine API for consoles at {listeners.api_address}")
        if on_ready is not None:
            on_ready(engine, listeners.api_address)
        waiters = [asyncio.ensure_future(stop.wait())] + [task for _, task in servers]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        waiters[0].cancel()
        if not stop.is_set():
            # A listener ended without being asked to: serve must not look like a clean stop (exit 0).
            ended = next(task for _, task in servers if task.done())
            cause = ended.exception() if not ended.cancelled() else None
            failure = f"a listener stopped by itself ({cause!r})" if cause else "a listener stopped by itself"
            engine.log("error", f"{failure}: shutting down; copies in flight stay pending")
            status = 1
        engine.log(
            "info",
            "shutting down: no new notifications; copies in flight get "
            f"{SHUTDOWN_GRACE:.0f} s, then stay pending",
        )
    finally:
        api.close()
        for server, _ in servers:
            server.should_exit = True
        for _, task in servers:
            with contextlib.suppress(Exception):
                await task
        await engine.close()
        for sig in signals:
            loop.remove_signal_handler(sig)
        listeners.close()
    return status
