"""Distribution-format notifications: one ``{"events": [...]}`` envelope per event, POSTed in order.

Events wait in a queue on the lab's loop; one sender posts them one at a time and retries a failed post
(any non-2xx or transport error) with backoff until it is accepted, so a request never waits for the
endpoint and order within a registry is kept. As in Distribution, the queue lives in memory: what is still
queued when the lab stops is lost (geo-tui's periodic reconcile is there for that).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import socket
import uuid
from typing import Any

import httpx

__all__ = ["EVENTS_MEDIA_TYPE", "Notifier", "event"]

EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 2.0

log = logging.getLogger(__name__)


def event(
    action: str,
    *,
    repository: str,
    digest: str,
    media_type: str | None = None,
    size: int | None = None,
    url: str = "",
    tag: str | None = None,
    request: dict[str, str] | None = None,
    source_addr: str = "",
    instance_id: str = "",
) -> dict[str, Any]:
    """One event as Distribution writes it (``target`` fields it leaves out when unknown stay out)."""
    target: dict[str, Any] = {"repository": repository}
    if digest:
        target["digest"] = digest
    if media_type is not None:
        target["mediaType"] = media_type
    if size is not None:
        target["size"] = target["length"] = size
    if url:
        target["url"] = url
    if tag:
        target["tag"] = tag
    return {
        "id": str(uuid.uuid4()),
        "timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        "action": action,
        "target": target,
        "request": request or {},
        "actor": {},
        "source": {"addr": source_addr or socket.gethostname(), "instanceID": instance_id},
    }


class Notifier:
    """Posts queued events to `url` with `secret` as the Authorization value; start/stop on the lab's loop.
    Events whose action is in `ignore_actions`, or whose target's media type is in `ignore_media_types`,
    are not sent (Distribution's ``ignore.actions`` and ``ignore.mediatypes``)."""

    def __init__(
        self,
        url: str,
        secret: str | None,
        *,
        timeout: float = 2.0,
        ignore_actions: frozenset[str] = frozenset(),
        ignore_media_types: frozenset[str] = frozenset(),
    ) -> None:
        self.url = url
        self.ignore_actions = ignore_actions
        self.ignore_media_types = ignore_media_types
        self._secret = secret
        self._timeout = timeout
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0

    def __repr__(self) -> str:  # the secret stays out of every repr and log
        return f"Notifier(url={self.url!r})"

    def start(self) -> None:
        """Start the sender on the running loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._send_forever(), name="lab-notifier")

    def publish(self, payload: dict[str, Any]) -> None:
        """Queue one event (never blocks); dropped when the notifier is not running or ignores it."""
        if self._queue is None or payload.get("action") in self.ignore_actions:
            return
        if payload.get("target", {}).get("mediaType") in self.ignore_media_types:
            return
        self._queue.put_nowait(payload)

    async def stop(self) -> None:
        task, self._task, self._queue = self._task, None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _send_forever(self) -> None:
        assert self._queue is not None
        queue = self._queue
        headers = {"Content-Type": EVENTS_MEDIA_TYPE}
        if self._secret:
            headers["Authorization"] = self._secret
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            while True:
                payload = await queue.get()
                await self._deliver(client, {"events": [payload]}, headers)
                self.delivered += 1

    async def _deliver(
        self, client: httpx.AsyncClient, envelope: dict[str, Any], headers: dict[str, str]
    ) -> None:
        delay = _BACKOFF_FIRST
        while True:
            try:
                body = json.dumps(envelope).encode()
                response = await client.post(self.url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    return
                reason = f"status {response.status_code}"
            except httpx.HTTPError as exc:
                reason = exc.__class__.__name__
            log.debug("notification to %s failed (%s); retrying in %.1f s", self.url, reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)
