"""`geo-tui serve`: the engine running for good, with the notification receiver beside it.

Backfill at start, events as they arrive, retries on their schedule, and a periodic reconcile
(Distribution keeps its notification queue in memory, so events do get lost). SIGTERM or SIGINT:
stop accepting, let copies in flight finish for a few seconds or leave them pending, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator

import uvicorn

from geo_tui.config import Config

from .engine import Engine
from .receiver import ReceiverApp

__all__ = ["ListenError", "serve"]

log = logging.getLogger("geo_tui.serve")
SHUTDOWN_GRACE = 5.0


class ListenError(Exception):
    """The receiver's address cannot be bound."""


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handling: serve() handles SIGTERM/SIGINT for the engine and the server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without
    # it every answer waits ~40 ms for a delayed ACK (Distribution sends events one at a time).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(config: Config, *, on_ready: Callable[[Engine], None] | None = None) -> int:
    """Run until SIGTERM or SIGINT; returns the exit status."""
    notifications = config.notifications
    sock = _bind(notifications.listen_host, notifications.listen_port) if notifications else None
    engine = Engine(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server: _Server | None = None
    server_task: asyncio.Task[None] | None = None
    try:
        await engine.start()
        if notifications is not None and sock is not None:
            app = ReceiverApp(engine, notifications.secret.reveal())
            server = _Server(
                uvicorn.Config(
                    app,
                    log_config=None,
                    access_log=False,
                    lifespan="off",
                    log_level="warning",
                    timeout_graceful_shutdown=2,
                    server_header=False,
                    date_header=False,
                )
            )
            server_task = asyncio.ensure_future(server.serve(sockets=[sock]))
            engine.log(
                "info",
                f"receiving notifications on http://{notifications.listen_host}:"
                f"{notifications.listen_port}/api/v4/container_registry_event/events",
            )
        else:
            engine.log(
                "warning",
                "no [notifications] section: relying on the periodic reconcile every "
                f"{config.engine.reconcile_interval:.0f} s",
            )
        if on_ready is not None:
            on_ready(engine)
        waiters = [asyncio.ensure_future(stop.wait())] + ([server_task] if server_task else [])
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        waiters[0].cancel()
        engine.log(
            "info",
            "shutting down: no new notifications; copies in flight get "
            f"{SHUTDOWN_GRACE:.0f} s, then stay pending",
        )
    finally:
        if server is not None and server_task is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await server_task
        await engine.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if sock is not None:
            sock.close()
    return 0
