"""Live replication of push events (issue 17): a push costs that push, not its repository.

A push event names the repository, the tag and the manifest digest. `PushCopier` copies exactly
that into every secondary that wants the repository: the manifest tree (read once from the primary
for all secondaries), then the tag. No tag list is read and no other tag is looked at. Pushes of one
repository that arrive together coalesce into one job (`CopyPlan`); jobs run beside the engine's
whole-repository runs, never behind them, and a repository's whole-repository run waits while its
pushes are being copied.

A whole-repository run that reads the primary while a push is copied could list the secondary before
the pushed tag is there (and delete it), or write an older digest of it: the copier puts the tag into
that run's view of the primary before writing it, and copies the tags again after the run, at their
digest on the primary then.

Part of the engine: it uses the engine's sites, database thread, cache, metrics and log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from geo_tui.registry import ManifestInfo, RegistryError

from .budget import Work, set_work
from .describe import describe_error
from .failure import failure_of
from .priority import PushPriority
from .replicate import CopyPlan, PrimaryRepository, SharedReads, copy_pushed
from .tracking import PushClaim, QueuedPush
from .tracking.dialect import is_passing_fault
from .wakeups import Wake

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["DIGEST_PUSH_GRACE", "PushCopier"]

log = logging.getLogger("geo_tui.engine")

# A push by digest alone (an index's child, a referrer) waits this long for the push that references it,
# so both are copied in one run; after it, it is copied on its own.
DIGEST_PUSH_GRACE = 0.5
# A verification waits this long at most for the pushes of a repository to be copied (PushCopier.copied).
SETTLE_WAIT = 30.0
# Manifests a coalesced job reads from the primary at once, before its copies start.
MANIFEST_READS = 8


class PushCopier:
    """The copies of queued pushes, one job per repository at a time."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.running: dict[str, asyncio.Task[None]] = {}
        self._wake = Wake("push", engine.metrics, engine._clock)
        # background requests wait for pushes on their way, for a bounded share of the time (on the
        # loop's own clock: its waits are timed by it, whatever clock the engine was given)
        self.priority = PushPriority()
        # A whole-repository run's primary view, and the pushes copied while it runs (see module doc).
        self._views: dict[str, PrimaryRepository] = {}
        self._pushed_during: dict[str, list[QueuedPush]] = {}
        self._whole_runs: dict[str, int] = {}
        self._held: dict[str, list[int]] = {}  # push ids each running job holds under this worker's lease

    def wake(self, cause: str = "local", sent: float | None = None) -> None:
        self._wake.set(cause, sent)

    # -- what the engine's whole-repository runs tell it ------------------------------------------------

    def whole_run_started(self, repository: str) -> None:
        self._whole_runs[repository] = self._whole_runs.get(repository, 0) + 1
        self._pushed_during[repository] = []

    def whole_run_read(self, view: PrimaryRepository) -> None:
        """The run has read the primary: tags pushed meanwhile count as the primary's in its view."""
        if not view.exists:
            return
        for push in self._pushed_during.get(view.name, []):
            if push.tag is not None and push.digest and push.tag not in view.tags:
                view.tags[push.tag] = ManifestInfo(push.digest, "", -1)
        self._views[view.name] = view

    async def whole_run_ended(self, repository: str) -> None:
        self._views.pop(repository, None)
        again = self._pushed_during.pop(repository, [])
        if again:
            with contextlib.suppress(Exception):  # the database refusing: the reconcile still heals
                await self._requeue(again)

    async def yield_to_pushes(self, _request: object, background: bool) -> None:
        """A request gate (budget.request_hook): background work gives way to pushes on their way (see
        .priority). A push's copy never waits here."""
        if background:
            await self.priority.give_way()

    async def copied(self, repository: str) -> None:
        """Return once no push of ``repository`` is queued or being copied, or after SETTLE_WAIT seconds
        (a verification reads the tags that differ again after it)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE_WAIT):
                while True:
                    running = self.running.get(repository)
                    if running is not None:
                        await asyncio.wait([running])
                    elif await self._engine.read(  # any worker's
                        self._engine.tracking.queued_pushes, 1, repository=repository
                    ):
                        await asyncio.sleep(DIGEST_PUSH_GRACE / 5)
                    else:
                        return

    # -- the copies ---------------------------------------------------------------------------------------

    async def run_forever(self) -> None:
        """Start a copy for each repository with queued pushes: one job per repository at a time, so
        pushes that arrive together coalesce. Never waits on whole-repository work. With many workers
        (PostgreSQL) the pushes are claimed under this worker's lease, a repository's whole."""
        engine = self._engine
        while True:
            self._wake.clear()
            engine._supervisor.beat("push")
            waiting_digests = database_down = False
            if not engine.paused:
                try:
                    claim = await self._claim()
                except Exception as exc:
                    if not is_passing_fault(exc):
                        raise
                    # No database: start nothing; the scheduler reports it, and both look again.
                    engine.wakeups.database.lost("reads", describe_error(exc))
                    claim, database_down = PushClaim(), True
                waiting_digests = claim.waiting
                for repository, owner in claim.taken_over.items():
                    engine.log(
                        "warning",
                        f"the lease of worker {owner} on pushes ran out (it stopped renewing it): "
                        "copying them here",
                        repository=repository,
                    )
                for repository, queued in claim.repositories.items():
                    self._held[repository] = [p.id for p in queued]
                    job = asyncio.ensure_future(self._job(repository, queued))
                    self.running[repository] = job
                    self.priority.copy_started()  # ended when the task is done, even cancelled unstarted
                    job.add_done_callback(lambda _job: self.priority.copy_ended())
            waiters = [asyncio.ensure_future(self._wake.wait()), *self.running.values()]
            try:
                await asyncio.wait(
                    waiters,
                    timeout=self._timeout(waiting_digests, database_down),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                waiters[0].cancel()
            self._wake.woke()

    async def _claim(self) -> PushClaim:
        """The repositories whose pushes to copy now, one per free slot. Many workers: claimed under
        this worker's lease on the database thread. One engine (SQLite): read as they are."""
        engine = self._engine
        owner = engine.leases.owner
        claim = partial(
            engine.tracking.claim_pushes,
            owner,
            engine._clock(),
            slots=engine.config.engine.repository_concurrency - len(self.running),
            lease_seconds=engine.leases.lease_seconds,
            skip=set(self.running),
            grace=DIGEST_PUSH_GRACE,
        )
        return claim() if owner is None else await engine._db(claim)

    # -- this worker's leases (workers.WorkerLeases renews them) -----------------------------------------

    def leased(self) -> dict[str, tuple[asyncio.Task[None], list[int]]]:
        """The job of each repository copied here under this worker's lease, and the push ids it holds."""
        return {r: (self.running[r], ids) for r, ids in self._held.items() if r in self.running and ids}

    def holds(self, repository: str, push: int) -> bool:
        """Whether the job of `repository` still holds `push` (claimed, and not taken off the queue)."""
        return push in self._held.get(repository, ())

    def lost(self, repository: str, job: asyncio.Task[None]) -> bool:
        """Cancel `job` (of `repository`) if it still runs: its lease is gone. True if it was."""
        if self.running.get(repository) is not job or job.done():
            return False
        job.cancel()
        return True

    async def _done(self, repository: str, queued: list[QueuedPush]) -> None:
        """Take the copied pushes off the queue, those this worker still holds (all, on SQLite)."""
        engine = self._engine
        self._held.pop(repository, None)  # no longer renewed: a renewal meanwhile must not count it lost
        await engine._db(engine.tracking.done_pushes, [p.id for p in queued], owner=engine.leases.owner)

    def _timeout(self, waiting_digests: bool, database_down: bool) -> float:
        """How long to wait for a wake: a digest push's grace, a second without a database (look again
        soon), else the poll interval."""
        poll = self._engine.config.engine.poll_interval
        if waiting_digests:
            return DIGEST_PUSH_GRACE / 5
        return min(1.0, poll) if database_down else poll

    async def _job(self, repository: str, queued: list[QueuedPush]) -> None:
        engine = self._engine
        whole_runs = self._whole_runs.get(repository, 0)
        started = engine._clock()
        engine.pull_backlog.pushes_coming()  # fewer own pulls ahead of the next push's event
        for push in queued:
            engine.metrics.push_stage.labels("queued").observe(max(0.0, started - push.received_at))
        try:
            work = Work()
            set_work(work)  # counts this job's requests, on every site
            plan = CopyPlan.from_pushes(await self._resolve(repository, queued))
            sites = [s.name for s in engine.config.secondaries if s.wants(repository)]
            plan = await self._not_yet_copied(repository, plan, queued, sites)
            # Empty: queued again and deleted on the primary since, or copied already (below).
            if not plan.tags and not plan.digests:
                await self._done(repository, queued)
                return
            await self._read_manifests(repository, [digest for _, digest in plan.tags])
            engine.metrics.push_stage.labels("manifest").observe(max(0.0, engine._clock() - started))
            reads = SharedReads(len(sites))  # each new small blob read from the primary once, for all
            copied = await asyncio.gather(
                *(self._to_site(name, repository, plan, queued, started, reads) for name in sites)
            )
            if any(copied):
                await engine._db(
                    engine.tracking.record_tags_seen,
                    engine.config.primary.name,
                    repository,
                    dict(plan.tags),
                    complete=False,
                )
            await self._done(repository, queued)
            engine.metrics.push_events.inc(len(queued))
            engine.metrics.push_requests.inc(work.requests)
            engine.metrics.requests_per_event.observe(work.requests / len(queued))
            if any(copied):  # nothing written: the full syncs asked for instead need no second copy
                # As copied: a push queued again carries no digest, and a run's view needs the one copied.
                digests = dict(plan.tags)
                pushed = [replace(p, digest=digests[p.tag]) for p in queued if p.tag in digests]
                await self._after_whole_runs(repository, pushed, whole_runs)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not stop the copies: the reconcile still covers the events
            log.exception("push copy of %s failed", repository)
            with contextlib.suppress(Exception):  # the database refusing: the pushes stay queued
                await self._done(repository, queued)
                await engine._db(
                    engine.tracking.request_sync, repositories=[repository], event_at=queued[0].received_at
                )
            engine._poke()
        finally:
            self.running.pop(repository, None)
            self._held.pop(repository, None)
            engine._flush_bytes()
            self._wake.set()

    async def _not_yet_copied(
        self, repository: str, plan: CopyPlan, queued: list[QueuedPush], sites: list[str]
    ) -> CopyPlan:
        """The plan without the tags that every secondary holds at the pushed digest already, as this
        engine (or another worker) last wrote or read them there. The primary may notify several
        workers' receivers of one push, each of which queues it: one worker copies it, and the rows
        queued meanwhile find it there (one manifest PUT per secondary). Only the digest pushed is
        skipped, never another, so nothing is rolled back; a push queued again after a whole run (no
        digest) always copies. A tag changed behind geo-tui's back is the reconcile's to heal."""
        if not plan.tags or not sites:
            return plan
        again = {push.tag for push in queued if push.tag is not None and not push.digest}
        tags = [tag for tag, _ in plan.tags]
        seen = await self._engine.read(self._engine.tracking.tags_seen_on, sites, repository, tags)

        def there(tag: str, digest: str) -> bool:
            return tag not in again and all(seen.get((site, tag), ("", 0.0))[0] == digest for site in sites)

        return replace(plan, tags=tuple((t, d) for t, d in plan.tags if not there(t, d)))

    async def _read_manifests(self, repository: str, digests: list[str]) -> None:
        """Each tag's manifest, read from the primary once for every secondary, side by side: a burst's
        coalesced job read them one after another (14 reads at 40-400 ms each on the loaded bench
        machine) before any copy began."""
        engine = self._engine
        slots = asyncio.Semaphore(MANIFEST_READS)

        async def read(digest: str) -> None:
            async with slots:
                with contextlib.suppress(RegistryError):  # each secondary's copy fails and says why
                    engine._cache.put(await engine.primary.get_manifest(repository, digest))

        await asyncio.gather(*(read(d) for d in dict.fromkeys(digests) if engine._cache.get(d) is None))

    async def _after_whole_runs(self, repository: str, queued: list[QueuedPush], whole_runs: int) -> None:
        """A whole-repository run of this repository beside this copy may have listed the secondary
        before these tags were there, or written an older digest of them: copy them again after it."""
        if repository in self._pushed_during:
            self._pushed_during[repository].extend(queued)
        elif self._whole_runs.get(repository, 0) != whole_runs:
            await self._requeue(queued)  # one ran and ended while this copy ran

    async def _resolve(self, repository: str, queued: list[QueuedPush]) -> list[tuple[str | None, str]]:
        """(tag, digest) of each push; a copy queued again (no digest) takes the tag's digest on the
        primary now, as a later push of it may have moved it since."""
        pushes: list[tuple[str | None, str]] = []
        for push in queued:
            if push.digest:
                pushes.append((push.tag, push.digest))
            elif push.tag is not None:
                info = await self._engine.primary.head_manifest(repository, push.tag)
                if info is not None:  # None: deleted since; its deletion event does the rest
                    pushes.append((push.tag, info.digest))
        return pushes

    async def _requeue(self, pushes: list[QueuedPush]) -> None:
        """Copy these tags again, at their digest on the primary then (not one a later push replaced)."""
        engine = self._engine
        again = [replace(p, digest="") for p in pushes if p.tag is not None]
        await engine._db(engine.tracking.enqueue_pushes, again)
        self._wake.set()

    async def _to_site(
        self,
        site_name: str,
        repository: str,
        plan: CopyPlan,
        queued: list[QueuedPush],
        started: float,
        reads: SharedReads,
    ) -> bool:
        """Copy the plan into one secondary. False if it failed: a full sync of it is queued instead."""
        engine = self._engine
        site = engine._sites[site_name]
        assert site.copier is not None

        blobs_in = False

        def before_tag(tag: str, digest: str) -> None:
            nonlocal blobs_in
            if not blobs_in:
                blobs_in = True
                engine.metrics.push_stage.labels("blobs").observe(max(0.0, engine._clock() - started))
            # A whole-repository run reading this repository now must count the tag as the primary's,
            # or its deletion pass could take the tag this copy is about to write.
            view = self._views.get(repository)
            if view is not None and tag not in view.tags:
                view.tags[tag] = ManifestInfo(digest, "", -1)

        try:
            stats = await copy_pushed(
                repository,
                plan,
                site.client,
                site.copier,
                engine._cache,
                blob_concurrency=engine.config.engine.blob_concurrency,
                before_tag=before_tag,
                reads=reads,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = failure_of(exc, engine.config.primary.name, text=describe_error(exc))
            await engine.recorder.push_failed(site_name, repository, _named(plan), failure, queued)
            return False
        now = engine._clock()
        engine.metrics.push_stage.labels("copy").observe(max(0.0, now - started))
        await engine.recorder.pushed(site_name, repository, _named(plan), dict(plan.tags), stats, queued, now)
        return True


def _named(plan: CopyPlan) -> str:
    """The tags (or digests) a push copy covers, for a log line: a few, then how many more."""
    names = [tag for tag, _ in plan.tags] + list(plan.digests)
    shown = ", ".join(names[:5])
    return f"{shown} and {len(names) - 5} more" if len(names) > 5 else shown
