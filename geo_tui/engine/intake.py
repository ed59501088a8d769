"""The notification intake: what a request's events name, in the tracking database before its 200.

A push that names its manifest is queued for a copy of exactly that (see `pushes`); a deletion, or an
event that names too little, queues a whole-repository run in the background. Pulls and blob pushes
are counted and dropped.

Stored before the answer, and batched: requests that arrive while one commit is under way wait for
the next, which stores them all in one transaction (one commit, one NOTIFY), so a burst of concurrent
requests costs a few commits, not one each, and no request waits for a timer. A request answered 200
is in the database; one whose batch could not be stored within NOTIFICATION_STORE_TIMEOUT gets the
error, and the receiver a 503, so the registry sends it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .database import DatabaseBusy
from .notifications import RegistryEvent
from .tracking import NotificationBatch

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["NOTIFICATION_STORE_TIMEOUT", "NotificationIntake"]

# A notification not stored within this gets a 503, and the registry sends it again (issue 12, case 4).
NOTIFICATION_STORE_TIMEOUT = 3.0
WRITE_MARGIN = 0.5  # seconds past its deadline a request waits for a write already begun
LOGGED_EVENTS = 20  # log lines one request's events get at most


class NotificationIntake:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._waiting: list[tuple[NotificationBatch, asyncio.Future[int], float]] = []  # (.., deadline)
        self._flushing: asyncio.Task[None] | None = None
        self.commits = 0  # transactions that stored notifications (batches), for tests and figures
        self.stored = 0  # requests they stored

    async def accept(self, events: Sequence[RegistryEvent]) -> int:
        """Durably queue what ``events`` name, then wake the copiers. Returns how many pushes and (site,
        repository) rows were queued."""
        engine = self._engine
        now = engine._clock()
        relevant = [e for e in events if e.matters]
        engine.discovery.named([e.repository for e in relevant])
        for event in events:
            engine.metrics.notifications.labels(event.action or "unknown").inc()
        if events:
            engine.last_event_at = now
        if not relevant:
            # Pulls and blob pushes: a primary not ignoring pulls sends a pull event for every manifest
            # HEAD, so a reconcile's own reads come back here by the thousand. Nothing to store.
            return 0
        secondaries = engine.config.secondaries
        pushes: list[RegistryEvent] = []
        whole: list[RegistryEvent] = []
        for event in relevant:
            if any(site.wants(event.repository) for site in secondaries):
                (pushes if event.copyable else whole).append(event)
        if pushes:
            engine._pushes.priority.announce()  # background work gives way from here, not from the copy

        def pairs(chosen: list[RegistryEvent]) -> list[tuple[str, str]]:
            return sorted(
                {(s.name, e.repository) for e in chosen for s in secondaries if s.wants(e.repository)}
            )

        queued = await self._store(
            NotificationBatch(
                [(e.id, e.action, e.repository, e.tag, e.digest) for e in relevant],
                pairs(whole),
                now,
                pushes=[(e.repository, e.tag, e.digest or "") for e in pushes],
                push_rows=pairs(pushes),
            )
        )
        for event in relevant[:LOGGED_EVENTS]:
            what = event.tag or event.digest or "?"
            engine.log(
                "info", f"notification: {event.action} {event.repository}:{what}", repository=event.repository
            )
        if whole:
            engine._poke()
        if pushes:
            engine._pushes.wake()
        return queued

    async def _store(self, batch: NotificationBatch) -> int:
        """Stored with the requests waiting beside it, in the next commit; DatabaseBusy if that is not
        done within NOTIFICATION_STORE_TIMEOUT of this request's arrival (waits for an earlier batch
        count against it)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        deadline = loop.time() + NOTIFICATION_STORE_TIMEOUT
        self._waiting.append((batch, future, deadline))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush())
        try:
            async with asyncio.timeout_at(deadline + WRITE_MARGIN):
                return await asyncio.shield(future)
        except TimeoutError:
            raise DatabaseBusy(
                f"the tracking database stored no notification for {NOTIFICATION_STORE_TIMEOUT:.0f} s"
            ) from None
        finally:
            # Timed out or cancelled (the client left): not written if its batch has not begun, and
            # no outcome is set on it later that nobody would read.
            future.cancel()

    async def _flush(self) -> None:
        engine = self._engine
        loop = asyncio.get_running_loop()
        while self._waiting:
            taken = [waiting for waiting in self._waiting if not waiting[1].done()]
            self._waiting = []
            if not taken:
                continue
            try:
                # Urgent: the primary sends an endpoint's events one at a time, so every event behind
                # this one waits for its 200; behind a reconcile's writes it outlasted Distribution's
                # 500 ms timeout at 20,000 tags, and the event came again (issue 17).
                counts = await engine._db(
                    engine.tracking.record_notification_batches,
                    [batch for batch, _, _ in taken],
                    timeout=max(0.1, min(deadline for _, _, deadline in taken) - loop.time()),
                    urgent=True,
                )
            except Exception as exc:  # each request gets the error: a 503, and the registry retries
                for _, future, _ in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.commits += 1
            self.stored += len(taken)
            for (_, future, _), queued in zip(taken, counts, strict=True):
                if not future.done():  # a request whose client left: stored all the same
                    future.set_result(queued)
