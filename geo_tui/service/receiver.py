"""The notification receiver, health and metrics endpoints: a small ASGI app that uvicorn serves
in the engine's own event loop.

``POST /api/v4/container_registry_event/events`` is where a primary's Distribution posts its
notifications (the path GitLab uses). An event is written to the tracking database before the
200 goes out, so nothing acknowledged is lost if the process dies right after.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from geo_tui._asgi import (
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    declared_length,
    header,
    read_body,
    send_json,
    send_response,
)
from geo_tui.engine.describe import describe_error
from geo_tui.engine.engine import Engine
from geo_tui.engine.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from geo_tui.engine.notifications import EnvelopeError, RegistryEvent, parse_envelope
from geo_tui.engine.tracking.dialect import is_passing_fault

__all__ = ["EVENTS_PATH", "MAX_BODY", "ReceiverApp"]

log = logging.getLogger("geo_tui.receiver")

EVENTS_PATH = "/api/v4/container_registry_event/events"
HEALTH_PATH = "/-/health"
METRICS_PATH = "/metrics"
MAX_BODY = 1024 * 1024
# How long /-/health waits for the tracking database's counts before it answers without them: a monitor
# polling it must hear "waiting for its database" at once, not when libpq gives up.
HEALTH_READ_TIMEOUT = 0.5
METRICS_READ_TIMEOUT = 2.0  # and /metrics for the repositories' counts (it answers without them)
KNOWN_ACTIONS = frozenset({"push", "pull", "delete", "mount"})  # a metric label: never the sender's text


class ReceiverApp:
    """ASGI application. ``secret`` is the exact ``Authorization`` value the primary sends."""

    def __init__(self, engine: Engine, secret: str | None) -> None:
        self._engine = engine
        self._secret = secret.encode() if secret is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if path == EVENTS_PATH and self._secret is not None:
            if method != "POST":
                await send_json(send, 405, {"error": "use POST"}, [(b"allow", b"POST")])
                return
            await self._events(scope, receive, send)
        elif path == HEALTH_PATH and method in ("GET", "HEAD"):
            health = await self.health()
            # A background task down is an engine that no longer replicates: say so to the monitor.
            await send_json(send, 503 if health["unhealthy"] else 200, health)
        elif path == METRICS_PATH and method in ("GET", "HEAD"):
            body = await self._engine.read.metrics(timeout=METRICS_READ_TIMEOUT)
            await send_response(send, 200, body, METRICS_CONTENT_TYPE.encode())
        else:
            await send_json(send, 404, {"error": "not found"})

    async def health(self) -> dict[str, Any]:
        """The engine's state; ``unhealthy`` (a 503) while a task is down or the database away. Answers
        within HEALTH_READ_TIMEOUT seconds whatever the database does (issue 16: a frozen server)."""
        engine = self._engine
        queued: int | None = None
        state = "waiting for its database"
        try:
            snapshot, pushes = await engine.read.snapshot_and(
                engine.tracking.push_queue_depth, timeout=HEALTH_READ_TIMEOUT
            )
            # the rows waiting, and the pushes waiting for their copy
            queued = sum(s.counts.pending for s in snapshot.sites if s.counts is not None) + pushes
            state = "paused" if snapshot.paused else ("running" if snapshot.running else "stopped")
        except Exception as exc:
            if not is_passing_fault(exc):
                raise
            engine.wakeups.database.lost("reads", describe_error(exc))
        down = engine.tasks_down()
        database = engine.wakeups.database.describe()
        status = [f"task down: {', '.join(down)}"] if down else []
        status += [f"tracking database {database}"] if database else []
        return {
            "status": "; ".join(status) or "ok",
            "unhealthy": bool(status),
            "tasks_down": down,
            "database": database or "ok",
            "engine": state,
            "queue_depth": queued,
            "in_flight": engine.scheduler.in_flight,
            "last_event_at": engine.last_event_at,
        }

    async def _events(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self._secret is not None
        if not hmac.compare_digest(header(scope, b"authorization"), self._secret):
            self._engine.metrics.rejected.labels("401").inc()
            await send_json(send, 401, {"error": "unauthorized"})
            return
        try:
            body = await read_body(receive, MAX_BODY, declared=declared_length(scope))
        except BodyTooLarge:
            self._engine.metrics.rejected.labels("413").inc()
            await send_json(send, 413, {"error": f"body over {MAX_BODY} bytes"})
            return
        except ClientGone:
            return
        try:
            events = parse_envelope(body)
        except EnvelopeError as exc:
            self._engine.metrics.rejected.labels("400").inc()
            await send_json(send, 400, {"error": str(exc)})
            return
        received = time.time()
        self._observe(events, received)
        try:
            queued = await self._engine.accept_notifications(events)
        except Exception as exc:  # not stored: answer 5xx so the registry sends it again
            log.error("could not store %d notification events: %s", len(events), describe_error(exc))
            await send_json(send, 503, {"error": "could not store the events; retry"})
            return
        if queued:
            self._engine.metrics.push_stage.labels("store").observe(time.time() - received)
        await send_json(send, 200, {"accepted": len(events), "queued": queued})

    def _observe(self, events: list[RegistryEvent], received: float) -> None:
        """How long the primary held each event (its queue, and what it delivered before it), and
        geo-tui's own manifest pulls come back (they pace background reads of the primary)."""
        metrics = self._engine.metrics
        own_pulls = 0
        for event in events:
            own = event.own
            if own and event.action == "pull" and event.is_manifest:
                own_pulls += 1
            created = event.created_at
            if created is not None and event.action:
                delay = max(0.0, received - created)
                action = event.action if event.action in KNOWN_ACTIONS else "other"
                metrics.notification_delay.labels(action, "own" if own else "other").observe(delay)
        if own_pulls:
            self._engine.pull_backlog.seen(own_pulls)
