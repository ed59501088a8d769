"""The notification receiver, health and metrics endpoints: a small ASGI app that uvicorn serves
in the engine's own event loop.

``POST /api/v4/container_registry_event/events`` is where a primary's Distribution posts its
notifications (the path GitLab uses). An event is written to the tracking database before the
200 goes out, so nothing acknowledged is lost if the process dies right after.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .engine import Engine
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .notifications import EnvelopeError, parse_envelope

__all__ = ["EVENTS_PATH", "MAX_BODY", "ReceiverApp"]

log = logging.getLogger("geo_tui.receiver")

EVENTS_PATH = "/api/v4/container_registry_event/events"
HEALTH_PATH = "/-/health"
METRICS_PATH = "/metrics"
MAX_BODY = 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ReceiverApp:
    """ASGI application. ``secret`` is the exact ``Authorization`` value the primary sends."""

    def __init__(self, engine: Engine, secret: str | None) -> None:
        self._engine = engine
        self._secret = secret.encode() if secret is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if path == EVENTS_PATH and self._secret is not None:
            if method != "POST":
                await _reply(send, 405, {"error": "use POST"}, extra=[(b"allow", b"POST")])
                return
            await self._events(scope, receive, send)
        elif path == HEALTH_PATH and method in ("GET", "HEAD"):
            await _reply(send, 200, self.health())
        elif path == METRICS_PATH and method in ("GET", "HEAD"):
            body = self._engine.metrics.render()
            await _send(send, 200, body, METRICS_CONTENT_TYPE.encode())
        else:
            await _reply(send, 404, {"error": "not found"})

    def health(self) -> dict[str, Any]:
        snapshot = self._engine.snapshot()
        queued = sum(s.counts.pending for s in snapshot.sites if s.counts is not None)
        queued += self._engine.tracking.push_queue_depth()  # pushes waiting for their copy
        state = "paused" if snapshot.paused else ("running" if snapshot.running else "stopped")
        return {
            "status": "ok",
            "engine": state,
            "queue_depth": queued,
            "in_flight": snapshot.in_flight,
            "last_event_at": self._engine.last_event_at,
        }

    async def _events(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self._secret is not None
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if not hmac.compare_digest(given, self._secret):
            self._engine.metrics.rejected.labels("401").inc()
            await _reply(send, 401, {"error": "unauthorized"})
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_BODY:
            await self._too_large(send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
            if len(body) > MAX_BODY:
                await self._too_large(send)
                return
        try:
            events = parse_envelope(bytes(body))
        except EnvelopeError as exc:
            self._engine.metrics.rejected.labels("400").inc()
            await _reply(send, 400, {"error": str(exc)})
            return
        try:
            queued = self._engine.accept_notifications(events)
        except Exception:  # not stored: answer 5xx so the registry sends it again
            log.exception("could not store %d notification events", len(events))
            await _reply(send, 503, {"error": "could not store the events; retry"})
            return
        await _reply(send, 200, {"accepted": len(events), "queued": queued})

    async def _too_large(self, send: Send) -> None:
        self._engine.metrics.rejected.labels("413").inc()
        await _reply(send, 413, {"error": f"body over {MAX_BODY} bytes"})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _reply(
    send: Send, status: int, document: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    await _send(send, status, json.dumps(document).encode(), b"application/json", extra)


async def _send(
    send: Send, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
