"""The notification receiver of an engine embedded in the console: the same ASGI app and socket
options as `geo-tui serve`, on the engine's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from geo_tui.config import Config
from geo_tui.config.rules import host_port

from .engine import Engine
from .receiver import EVENTS_PATH, ReceiverApp
from .serve import ListenError, QuietServer, asgi_server, bind_tcp

__all__ = ["NotificationListener"]


class NotificationListener:
    """Receives the primary's notifications for `engine` while it runs; a no-op without `[notifications]`."""

    def __init__(self, engine: Engine, config: Config) -> None:
        self._engine = engine
        self._config = config
        self._server: QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start listening. An address already in use is logged, not raised: the periodic reconcile
        still finds every push, only later."""
        notifications = self._config.notifications
        if notifications is None:
            return
        try:
            sock = bind_tcp(notifications.listen_host, notifications.listen_port)
        except ListenError as exc:
            self._engine.log(
                "error",
                f"not receiving notifications: {exc}; relying on the periodic reconcile every "
                f"{self._config.engine.reconcile_interval:.0f} s",
            )
            return
        app = ReceiverApp(self._engine, notifications.secret.reveal())
        self._server = asgi_server(app)
        self._task = asyncio.ensure_future(self._serve(sock))
        # The config's listen rule prints the address, so an IPv6 one is in brackets.
        where = host_port(notifications.listen_host, notifications.listen_port)
        self._engine.log("info", f"receiving notifications on http://{where}{EVENTS_PATH}")

    async def _serve(self, sock: socket.socket) -> None:
        assert self._server is not None
        try:
            await self._server.serve(sockets=[sock])
        finally:
            sock.close()

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await self._task
        self._server = self._task = None
