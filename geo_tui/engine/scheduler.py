"""The scheduler: which due rows run now, in how many slots, and the waiting in between.

Rows of one repository run as one job (engine/jobs.py), at most ``repository_concurrency`` jobs at once.
On PostgreSQL (many workers) rows are claimed under this worker's lease (`tracking.claims`), within each
secondary's cluster-wide ``max_repositories``; a job whose lease is lost is cancelled (engine/workers.py).
A repository whose pushes are being copied waits for them. The scheduler wakes when poked (new work,
a job done, a NOTIFY from the tracking database: wakeups.py) or after ``[engine] poll_interval``; a
one-shot pass ends when nothing it may still run is left. While the tracking database does not answer,
it starts nothing and looks again with backoff; the jobs running go on, and record when it is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .describe import describe_error
from .model import SyncSummary
from .passes import Pass
from .tracking import RepositoryRow, SyncState
from .tracking.dialect import is_passing_fault
from .wakeups import Wake

Key = tuple[str, str]  # (site, repository)

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Scheduler"]

DATABASE_RETRY = 0.25  # seconds before the first look at a database that did not answer; doubles to:
DATABASE_MAX_RETRY = 2.0


class Scheduler:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.jobs: dict[str, asyncio.Task[None]] = {}  # running repository jobs, by repository
        self._wake: Wake | None = None
        self._database_retry = DATABASE_RETRY
        self._leased: dict[str, list[Key]] = {}  # the rows each job holds under this worker's lease
        self._first: set[Key] = set()  # claimed rows whose sync never started before

    def open(self) -> None:
        self._wake = Wake("scheduler", self._engine.metrics, self._engine._clock)

    def poke(self, cause: str = "local", sent: float | None = None) -> None:
        """Look for due rows now (new work arrived, or a job ended); ``cause`` and ``sent``: see Wake."""
        if self._wake is not None:
            self._wake.set(cause, sent)

    @property
    def in_flight(self) -> int:
        """Repository jobs running now: whole-repository runs and push copies."""
        return len(self.jobs) + len(self._engine._pushes.running)

    async def run_pass(self, run: Pass, prepare: Callable[[], Awaitable[None]] | None = None) -> SyncSummary:
        """Run a one-shot pass to its end (after ``prepare``, if given) and sum it up. Cancelled, it
        cancels its jobs: their rows go back to pending, and nothing keeps copying."""
        clock = self._engine._clock
        started = clock()
        leases = self._engine.leases
        # serve renews its leases in a task of its own; a one-shot pass on PostgreSQL renews them here
        alone = leases.owner is not None and not self._engine.running
        renewing = asyncio.ensure_future(leases.run_forever()) if alone else None
        try:
            if prepare is not None:
                await prepare()
            await self.run(run)
            self._engine._flush_bytes()
            return run.summary(clock() - started)
        except asyncio.CancelledError:
            await self._cancel_jobs()
            raise
        finally:
            if renewing is not None:
                renewing.cancel()
                await asyncio.gather(renewing, return_exceptions=True)

    async def run(self, run: Pass) -> None:
        """Start the due rows of ``run`` as slots free up; return when a one-shot pass is done."""
        engine = self._engine
        wake = self._wake
        assert wake is not None
        while True:
            wake.clear()
            try:
                if not engine.paused:
                    for repository, rows in (await self._due(run)).items():
                        self.jobs[repository] = asyncio.ensure_future(self._job(repository, rows, run))
                    engine.wakeups.database.answered("reads")
                engine._supervisor.beat("scheduler")
                if not run.is_standing and not self.jobs and not engine.paused:
                    pending_retry = await self._next_in_run_retry(run)
                    if pending_retry is None:
                        return
                    await self._wait(wake, max(0.0, pending_retry - engine._clock()))
                    wake.woke()
                    continue
            except Exception as exc:
                if not is_passing_fault(exc) or not run.is_standing:  # a one-shot run fails and says so
                    raise
                # No database: claim nothing, look again with backoff (a poke does not hurry it).
                engine._supervisor.beat("scheduler")
                engine.wakeups.database.lost("reads", describe_error(exc))
                await asyncio.sleep(self._database_retry)
                self._database_retry = min(self._database_retry * 2, DATABASE_MAX_RETRY)
                continue
            self._database_retry = DATABASE_RETRY
            await self._wait(wake, engine.config.engine.poll_interval)
            wake.woke()

    async def _due(self, run: Pass) -> dict[str, list[RepositoryRow]]:
        """The rows to start now, by repository: one job each, as many jobs as free slots."""
        engine = self._engine
        room = engine.config.engine.repository_concurrency - len(self.jobs)
        groups: dict[str, list[RepositoryRow]] = {}
        if room <= 0:
            return groups
        if engine.leases.owner is not None:
            return await self._claim(run, room, engine.leases.owner)
        due = await engine.read(
            engine.tracking.due,
            engine._clock(),
            sites=run.sites,
            repositories=run.repositories,
            limit=max(100, room * 8),
        )
        for row in due:
            # A repository whose pushes are being copied waits for them: its run would copy the same
            # tags a second time.
            if row.repository in self.jobs or row.repository in engine._pushes.running:
                continue
            if not run.may_start(row.key):
                continue
            if row.repository not in groups and len(groups) >= room:
                continue
            groups.setdefault(row.repository, []).append(row)
        return groups

    async def _claim(self, run: Pass, room: int, owner: str) -> dict[str, list[RepositoryRow]]:
        """Claim due rows under this worker's lease, one job's worth per free slot; claimed rows left
        over (more repositories than slots, or rows this pass may not start again) are given back."""
        engine = self._engine
        secondaries = {site.name: site for site in engine.config.secondaries}
        caps = {name: s.max_repositories for name, s in secondaries.items() if s.max_repositories}
        rows = await engine._db(
            engine.tracking.claim_due,
            owner,
            engine._clock(),
            limit=room * max(1, len(run.sites)),
            lease_seconds=engine.config.engine.lease_seconds,
            caps=caps,
            sites=run.sites,
            repositories=run.repositories,
            skip={*self.jobs, *engine._pushes.running},
            first=self._first,
        )
        groups: dict[str, list[RepositoryRow]] = {}
        for row in rows:
            if run.may_start(row.key) and (row.repository in groups or len(groups) < room):
                groups.setdefault(row.repository, []).append(row)
                continue
            self._first.discard(row.key)
            await engine._db(engine.tracking.mark_pending, row.site, row.repository, owner=owner)
        for repository, chosen in groups.items():
            self._leased[repository] = [row.key for row in chosen]
        return groups

    def first_run(self, key: Key) -> bool | None:
        """For a claimed row: whether its sync never started before (None: not claimed here)."""
        if key[1] not in self._leased:
            return None
        if key in self._first:
            self._first.discard(key)
            return True
        return False

    def leased_keys(self) -> dict[str, tuple[asyncio.Task[None], list[Key]]]:
        """The job of each repository running under this worker's lease, and the rows it holds."""
        return {r: (self.jobs[r], list(keys)) for r, keys in self._leased.items() if r in self.jobs and keys}

    def settled(self, key: Key) -> None:
        """The run of `key` was recorded: its lease went with it, and is no longer renewed."""
        keys = self._leased.get(key[1])
        if keys is not None and key in keys:
            keys.remove(key)

    def holds(self, key: Key) -> bool:
        """Whether a job here still holds the lease of `key` (claimed, and not recorded yet)."""
        return key in self._leased.get(key[1], ())

    def lost(self, repository: str, job: asyncio.Task[None]) -> bool:
        """Cancel `job` (of `repository`) if it still runs: its lease is gone. True if it was."""
        if self.jobs.get(repository) is not job or job.done():
            return False
        job.cancel()
        return True

    async def _job(self, repository: str, rows: list[RepositoryRow], run: Pass) -> None:
        try:
            await self._engine.jobs.run(repository, rows, run)
        finally:
            self.jobs.pop(repository, None)
            for key in self._leased.pop(repository, []):
                self._first.discard(key)
            self._engine._flush_bytes()
            self.poke()

    async def _next_in_run_retry(self, run: Pass) -> float | None:
        wanted = set(run.repositories) if run.repositories is not None else None
        tracking = self._engine.tracking
        rows = await self._engine.read(
            tracking.rows, sites=run.sites, states=[SyncState.FAILED, SyncState.PENDING]
        )
        due = [
            row.retry_at
            for row in rows
            if row.on_primary and run.may_start(row.key) and (wanted is None or row.repository in wanted)
        ]
        return min((d or 0.0) for d in due) if due else None

    async def _wait(self, wake: Wake, timeout: float) -> None:
        tasks = [asyncio.ensure_future(wake.wait()), *self.jobs.values()]
        try:
            await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tasks[0].cancel()

    async def _cancel_jobs(self) -> None:
        jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
