"""What a copy's outcome becomes: tracking writes, metrics, log lines, updates and the pass's summary.

Every whole-repository run ends here, in `outcome` or `failed`, and every push copy into a secondary, in
`pushed` or `push_failed`.
A failure is a `Failure` up to here: its words go to the database and the log (redacted first), and
its fields label the metric.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .backoff import in_run_delay, retry_delay
from .database import is_passing_fault
from .describe import describe_stats
from .failure import Failure
from .passes import Pass
from .replicate import repository_size
from .repository import CopyStats, PrimaryRepository, RepositoryOutcome
from .tracking import QueuedPush, RepositoryRow, VerificationState
from .updates import RepositoryUpdated

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Recorder"]


class Recorder:
    def __init__(self, engine: Engine, in_run_retry_base: float) -> None:
        self._engine = engine
        self._in_run_retry_base = in_run_retry_base
        self._announcing: set[asyncio.Future[None]] = set()  # rows read for the watchers (PostgreSQL)

    async def outcome(
        self,
        row: RepositoryRow,
        view: PrimaryRepository,
        outcome: RepositoryOutcome,
        generation: int,
        run: Pass,
        started: float,
        seen: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """Record how one (secondary, repository) run ended; ``started``: when it began (tracking time);
        ``seen``: the tags its last chunk saw (site -> tag -> digest), not recorded yet."""
        engine, site_name, repository = self._engine, row.site, view.name
        site = engine._sites[site_name]
        site.stats.add(outcome.stats)
        self.count(site_name, outcome.stats)
        warnings = [engine.redactor.redact(w) for w in outcome.warnings]
        run.add(site_name, outcome.stats, warnings)
        for warning in warnings:
            engine.log("warning", warning, site=site_name, repository=repository)
        if not outcome.ok:
            if seen:
                await engine._db(engine.tracking.record_seen, repository, seen)
            await self.failed(site_name, repository, outcome.failure, run, generation)
            return
        # A streamed run stamped every tag it saw (the last chunk's with the mark): those not seen are
        # gone. A view read whole records its tags as the whole list.
        if not view.streamed:
            await engine._db(
                engine.tracking.record_tags_seen, site_name, repository, view.digests, complete=True
            )
        synced = await engine._db(
            engine.tracking.mark_synced,
            site_name,
            repository,
            generation,
            tag_count=outcome.tag_count,
            size=await self._size_if_changed(row, view, outcome.stats),
            owner=engine.leases.owner,  # a lease lost meanwhile: another worker's row, left alone
            seen=seen,
            forget=(engine.config.primary.name, site_name) if view.streamed else (),
            before=started if view.streamed else None,
        )
        engine.scheduler.settled(row.key)
        if outcome.stats.writes:
            await engine._db(
                engine.tracking.mark_verification, site_name, repository, VerificationState.PENDING
            )
            engine.log(
                "info", f"synced: {describe_stats(outcome.stats)}", site=site_name, repository=repository
            )
        site.completions.record()
        event_at = row.oldest_unsynced_event_at
        if synced and event_at is not None:
            engine.metrics.event_to_synced.labels(site_name).observe(max(0.0, engine._clock() - event_at))
        run.synced(site_name, repository)
        if not synced:
            engine._poke()  # new work arrived during the run
        self.row_changed(site_name, repository)

    async def _size_if_changed(
        self, row: RepositoryRow, view: PrimaryRepository, stats: CopyStats
    ) -> int | None:
        """The repository's size when this run changed it or it was never measured; None keeps the stored
        one (a run that wrote nothing reads no manifest for it)."""
        if not stats.writes and row.bytes is not None:
            return None
        return await repository_size(view, self._engine.primary, self._engine._cache)

    async def failed(
        self, site: str, repository: str, failure: Failure, run: Pass, generation: int | None = None
    ) -> None:
        """Record a failed run: the row fails and waits (within a one-shot pass, a short in-run retry;
        else its backoff), the failure is counted by its label, logged, and shown."""
        engine = self._engine
        failure = failure.said(engine.redactor.redact)  # before the summary, the database and the log
        now = engine._clock()
        key = (site, repository)
        attempts = run.tries(key)
        row = await engine.read(engine.tracking.row, site, repository)
        count = (row.retry_count if row else 0) + 1
        final = not run.retries_in_run(key)
        if final:
            retry_at = now + retry_delay(count, engine._rng)
        else:
            retry_at = now + in_run_delay(attempts, self._in_run_retry_base)
        recorded = await engine._db(
            engine.tracking.mark_failed,
            site,
            repository,
            failure.text,
            retry_at,
            generation,
            owner=engine.leases.owner,
        )
        engine.scheduler.settled(key)
        if not recorded and engine.leases.owner is not None:  # the lease was lost: another worker's row now
            engine.log(
                "warning",
                f"not recorded, the lease was lost: {failure.text}",
                site=site,
                repository=repository,
            )
            return
        engine.metrics.failures.labels(site, failure.label).inc()
        if final:
            run.failed(site, repository, failure.text)
        engine.log("error", f"failed (attempt {attempts}): {failure.text}", site=site, repository=repository)
        self.row_changed(site, repository)
        engine.monitor.wake()  # is the site down? the operator should see it now, not at the next check
        engine._poke()  # a push that came during the failed run makes the row due at once

    async def pushed(
        self,
        site: str,
        repository: str,
        named: str,
        tags: dict[str, str],
        stats: CopyStats,
        queued: list[QueuedPush],
        now: float,
    ) -> None:
        """Record a push copy into one secondary (``named``: its tags, for the log): its blobs, the tags
        as seen there, each push's latency, a log line and the row's update."""
        engine = self._engine
        engine._sites[site].stats.add(stats)
        self.count(site, stats)
        await engine._db(engine.tracking.record_tags_seen, site, repository, tags, complete=False)
        for push in queued:
            # Both: the push histogram's buckets resolve the sub-second copies, and event_to_synced
            # keeps covering every event, whichever path replicated it.
            engine.metrics.push_to_secondary.labels(site).observe(max(0.0, now - push.received_at))
            engine.metrics.event_to_synced.labels(site).observe(max(0.0, now - push.received_at))
        engine.log(
            "info", f"copied pushed {named}: {describe_stats(stats)}", site=site, repository=repository
        )
        self.row_changed(site, repository)

    async def push_failed(
        self, site: str, repository: str, named: str, failure: Failure, queued: list[QueuedPush]
    ) -> None:
        """A push copy into one secondary failed: said, and a full sync of the repository there queued
        instead (as of the oldest push's event); that sync's outcome is the one counted."""
        engine = self._engine
        failure = failure.said(engine.redactor.redact)
        engine.log(
            "warning",
            f"copy of pushed {named} failed: {failure.text}; the repository is queued for a full sync",
            site=site,
            repository=repository,
        )
        await engine._db(
            engine.tracking.request_sync,
            sites=[site],
            repositories=[repository],
            event_at=queued[0].received_at,
        )
        engine._poke()

    def count(self, site: str, stats: CopyStats) -> None:
        metrics = self._engine.metrics
        if stats.bytes_copied:
            metrics.bytes_copied.labels(site).inc(stats.bytes_copied)
        for how, value in (
            ("copied", stats.blobs_copied),
            ("mounted", stats.blobs_mounted),
            ("present", stats.blobs_present),
        ):
            if value:
                metrics.blobs.labels(site, how).inc(value)

    def row_changed(self, site: str, repository: str) -> None:
        """Tell every watcher the row's new state (read only when someone watches)."""
        engine = self._engine
        if not engine._broadcast.watched:
            return
        if engine.read.threaded:  # PostgreSQL: read off the loop
            task = asyncio.ensure_future(self._announce_row(site, repository))
            self._announcing.add(task)
            task.add_done_callback(self._announcing.discard)
            return
        row = engine.tracking.row(site, repository)
        if row is not None:
            engine._emit(RepositoryUpdated(row))

    async def _announce_row(self, site: str, repository: str) -> None:
        try:
            row = await self._engine.read(self._engine.tracking.row, site, repository)
        except Exception as exc:
            if not is_passing_fault(exc):
                raise
            return  # the database away (said once, elsewhere): the watchers reload when it is back
        if row is not None:
            self._engine._emit(RepositoryUpdated(row))
