"""Limits of every uvicorn server geo-tui runs (the notification receiver, the engine API, the lab
registry): a bound on concurrent connections, a deadline for a request's headers, and an accept loop
whose "too many open files" is logged at most once a minute.

uvicorn has no header timeout: a connection that never finishes its request head is kept forever (its
keep-alive timer only runs between requests), so ~580 such sockets used up the file descriptors
(issue 12). `HeaderDeadlineProtocol` is uvicorn's h11 protocol, passed through the public
``uvicorn.Config(http=...)`` hook, with a timer that closes a connection whose request head is not
complete within `HEADER_TIMEOUT`. It reads the h11 connection state (`conn.their_state`, h11's public
API) of uvicorn's protocol; tests/unit/test_http_server.py fails if uvicorn changes that.

When accept() fails with EMFILE, asyncio logs the error once per backlog slot on every retry, thousands of
tracebacks a second; `throttle_accept_errors` keeps one line a minute. Each of those errors also schedules a
retry (a timer asyncio keeps no handle of for us) one second later; once the server has closed its
listening socket, every such timer still pending fails on the closed socket ("Invalid file descriptor:
-1"). Thousands of tracebacks then held up a stopping `serve` for seconds (issue 12); they are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "ACCEPT_ERROR_INTERVAL",
    "HEADER_TIMEOUT",
    "LIMIT_CONCURRENCY",
    "HeaderDeadlineProtocol",
    "LimitedServer",
    "server_limits",
    "throttle_accept_errors",
]

log = logging.getLogger("geo_tui.http")

HEADER_TIMEOUT = 10.0  # seconds from the first byte of a request (or the connection) to its last header
# Connections and requests at once; beyond it uvicorn answers 503 at once. Far above what registries and
# consoles need, below the default 1024 file descriptors.
LIMIT_CONCURRENCY = 500
ACCEPT_ERROR_INTERVAL = 60.0
# What asyncio's accept loop reports for EMFILE, ENFILE, ENOBUFS and ENOMEM (selector_events.py).
_ACCEPT_OUT_OF_RESOURCES = "socket.accept() out of system resource"
# The retry it schedules (BaseSelectorEventLoop._start_serving), failing once the listener is closed.
_ACCEPT_RETRY = "_start_serving("


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head takes over `header_timeout`."""

    header_timeout = HEADER_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # IDLE: no whole request head yet. After a response it is IDLE again, but then uvicorn's
        # keep-alive timer watches the silence, and this one starts with the next request's first byte.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def server_limits(header_timeout: float = HEADER_TIMEOUT) -> dict[str, Any]:
    """The `uvicorn.Config` arguments that bound a server: pass them to every server geo-tui runs."""
    protocol: type[HeaderDeadlineProtocol] = HeaderDeadlineProtocol
    if header_timeout != HEADER_TIMEOUT:
        bases = (HeaderDeadlineProtocol,)
        protocol = type("HeaderDeadlineProtocol", bases, {"header_timeout": header_timeout})
    return {"http": protocol, "limit_concurrency": LIMIT_CONCURRENCY}


class LimitedServer(uvicorn.Server):
    """A uvicorn server whose event loop logs accept() running out of descriptors once a minute."""

    async def serve(self, sockets: list[Any] | None = None) -> None:
        throttle_accept_errors(asyncio.get_running_loop())
        await super().serve(sockets=sockets)


def throttle_accept_errors(
    loop: asyncio.AbstractEventLoop,
    interval: float = ACCEPT_ERROR_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Log asyncio's accept-loop resource errors on `loop` at most once per `interval` seconds, in one
    line with how many were left out; every other error goes to the handler that was there. Installing it
    twice on one loop is a no-op."""
    previous = loop.get_exception_handler()
    if getattr(previous, "_geo_tui_throttle", False):
        return
    last = -interval
    skipped = 0

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal last, skipped
        if _retry_on_closed_listener(context):
            return  # nothing left to accept on: the server stopped while out of descriptors
        if context.get("message") != _ACCEPT_OUT_OF_RESOURCES:
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = clock()
        if now - last < interval:
            skipped += 1
            return
        exc = context.get("exception")
        reason = getattr(exc, "strerror", None) or str(exc)
        more = f" ({skipped} more since the last such line)" if skipped else ""
        log.error(
            "cannot accept connections: %s%s; they wait in the queue until descriptors free up "
            "(logged at most once a minute; raise `ulimit -n`?)",
            reason,
            more,
        )
        last, skipped = now, 0

    handler._geo_tui_throttle = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


def _retry_on_closed_listener(context: dict[str, Any]) -> bool:
    """Whether `context` is an accept retry of asyncio's that fired after its listening socket was closed
    (a ValueError for file descriptor -1). tests/unit/test_http_server.py fails if asyncio changes it."""
    message = str(context.get("message", ""))
    return isinstance(context.get("exception"), ValueError) and _ACCEPT_RETRY in message
