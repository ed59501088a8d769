"""Many workers on one PostgreSQL tracking database (issue 16): this worker's row and leases, and the
leadership that runs the duties the cluster needs once.

`WorkerLeases` registers the worker at start, and every ``lease_seconds / 3`` renews the leases of the
rows its jobs copy and of the pushes its push copies hold (a job whose lease was lost is cancelled:
another worker has the row, and this one must neither copy on nor mark it), renews its turns at
streaming blobs (streams.py), stamps its row's heartbeat with how much it has in hand, and sweeps the
leases that ran out (any worker's: a dead worker's rows go back through the failure path; its pushes are
simply anyone's claim). A clean stop takes the row away and gives its pushes back.

`Leadership` is a session ``pg_try_advisory_lock`` on a connection of its own: the worker holding it runs
discovery, the periodic reconcile and verification; the others try again every few seconds, and one of
them takes over when the holder's session ends (the server drops the lock with it). On SQLite there is
one engine per file, and it always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .backoff import retry_delay
from .describe import describe_error
from .streams import ClusterStreams, StreamRecords

if TYPE_CHECKING:
    import psycopg

    from .engine import Engine
    from .tracking.postgres import PostgresDatabase

__all__ = ["Leadership", "WorkerLeases"]

Key = tuple[str, str]
LEADERSHIP_RETRY = 3.0  # seconds between a follower's tries of the leadership lock (and the leader's check)


class WorkerLeases:
    """This worker's row and leases; `owner` None (SQLite: one engine per file) holds no leases."""

    def __init__(self, engine: Engine, owner: str | None) -> None:
        self._engine = engine
        self.owner = owner
        self.lease_seconds = engine.config.engine.lease_seconds
        self.expired = 0  # rows whose lease this worker's sweeps found run out
        self._renewed_at = engine._clock()  # the last heartbeat that reached the database
        self.streams: ClusterStreams | None = None  # this worker's blob streams (open_streams)

    def open_streams(self, records: StreamRecords) -> ClusterStreams | None:
        """The cluster-wide turns at streaming blobs that this worker's copiers take (None on SQLite:
        one engine per file, its copiers' own turns suffice, and no database write is added)."""
        if self.owner is None:
            return None
        self.streams = ClusterStreams(records, self.owner, self.lease_seconds, clock=self._engine._clock)
        return self.streams

    async def register(self, listen: str = "") -> None:
        engine = self._engine
        if self.owner is None:
            return
        await engine._db(engine.tracking.register_worker, self.owner, engine._clock(), listen)

    async def open(self) -> None:
        """At start: register, and send the rows of leases run out back through the failure path."""
        if self.owner is None:
            return
        await self.register()
        await self._recover_dead_here()
        await self.sweep()

    async def _recover_dead_here(self) -> None:
        """Rows leased by an earlier worker of this host whose process is gone (killed, crashed) go back
        to pending at once, as SQLite's engine recovers its own: their lease need not run out first."""
        engine = self._engine
        tracking = engine.tracking
        owners = await engine.read(
            lambda: (
                {owner for _, _, owner, _ in tracking.leased()}
                | {owner for _, _, owner, _ in tracking.leased_pushes()}
                | {worker.id for worker in tracking.workers()}
            )
        )
        for owner in sorted(owners - {self.owner}):
            if not _dead_here(owner):
                continue
            pushes = await engine._db(engine.tracking.release_pushes, owner)
            recovered = await engine._db(engine.tracking.recover_worker, owner)
            if recovered or pushes:
                what = " and ".join(
                    f"{count} {noun}"
                    for count, noun in ((recovered, "repositories"), (pushes, "pushes"))
                    if count
                )
                gone = f"left in progress by worker {owner} (its process is gone)"
                engine.log("warning", f"picked up {what} {gone}")
                engine._pushes.wake()

    def recover_started(self) -> int:
        """Rows a dead engine left started go back to pending, but not those under another worker's
        lease; with many workers, verifications left started are the leader's to recover."""
        owner = self.owner
        return self._engine.tracking.recover_started(leased_only_by=owner, verifications=owner is None)

    def unregister(self) -> None:
        """A clean stop: the row goes, and the pushes still held (copies cut short by the stop) are
        anyone's at once; the repositories rows' leases run out as usual."""
        if self.owner is None:
            return
        with contextlib.suppress(Exception):  # a stop must not fail on a database gone
            self._engine.tracking.release_pushes(self.owner)
            self._engine.tracking.remove_worker(self.owner)

    async def run_forever(self) -> None:
        interval = max(0.2, self.lease_seconds / 3)
        while True:
            if await self.tick():
                self._engine._supervisor.beat("leases")  # a heartbeat that fails shows as this task down
            await asyncio.sleep(interval)

    async def tick(self) -> bool:
        """One heartbeat; if it cannot reach the database, and none has for a whole lease, every lease
        of this worker may have run out (and its rows gone to another): its jobs stop, as a job whose
        lease was lost does. Never copy without a lease. True if the heartbeat went through."""
        engine = self._engine
        started = engine._clock()
        try:
            await self.beat()
        except Exception as exc:
            engine.log("error", f"lease heartbeat failed: {describe_error(exc)}")
            if engine._clock() - self._renewed_at < self.lease_seconds:
                return False
            stopped = [
                r for r, (job, _) in engine.scheduler.leased_keys().items() if engine.scheduler.lost(r, job)
            ]
            pushes = engine._pushes
            stopped += [r for r, (job, _) in pushes.leased().items() if pushes.lost(r, job)]
            if stopped:
                engine.log(
                    "warning",
                    f"no heartbeat reached the database for {self.lease_seconds:.0f} s: "
                    f"{len(stopped)} copies stopped, their leases may be another worker's now",
                )
            return False
        self._renewed_at = started
        return True

    async def beat(self) -> None:
        """One heartbeat: renew, cancel the jobs whose lease was lost, stamp the row, sweep."""
        engine = self._engine
        tracking, scheduler = engine.tracking, engine.scheduler
        assert self.owner is not None
        leased = scheduler.leased_keys()
        if leased:
            keys = [key for _, keys in leased.values() for key in keys]
            held = await engine._db(
                tracking.renew_leases, self.owner, engine._clock(), self.lease_seconds, keys
            )
            for repository, (job, keys) in leased.items():
                # A run recorded while the renewal ran gave its lease up: that is no loss.
                lost = [
                    site
                    for site, _ in keys
                    if (site, repository) not in held and scheduler.holds((site, repository))
                ]
                if lost and scheduler.lost(repository, job):
                    engine.log(
                        "warning",
                        f"lease lost on {', '.join(lost)} (it ran out; another worker may have it): "
                        "this copy is cancelled and records nothing",
                        repository=repository,
                    )
        await self._renew_pushes()
        if self.streams is not None:
            for site, digest in await self.streams.renew():
                engine.log(
                    "warning",
                    f"the turn at streaming {digest} ran out (a heartbeat came late): "
                    "another worker may stream it too",
                    site=site,
                )
        # what this worker copies now, into every secondary together (the workers view shows it)
        throughput = sum(site.throughput.rate() for site in engine._sites.values())
        beat = tracking.worker_heartbeat
        if not await engine._db(beat, self.owner, engine._clock(), scheduler.in_flight, throughput):
            await self.register()  # our row was taken away (a sweep of an operator's): put it back
        await self.sweep()

    async def _renew_pushes(self) -> None:
        """Renew the leases of the pushes this worker copies; a job that lost any is cancelled."""
        engine, pushes = self._engine, self._engine._pushes
        assert self.owner is not None
        leased = pushes.leased()
        if not leased:
            return
        ids = [push for _, held in leased.values() for push in held]
        lost = await engine._db(
            engine.tracking.renew_push_leases, self.owner, engine._clock(), self.lease_seconds, ids
        )
        for repository, (job, held) in leased.items():
            # Pushes taken off the queue while the renewal ran are done, not lost.
            if any(p in lost and pushes.holds(repository, p) for p in held) and pushes.lost(repository, job):
                engine.log(
                    "warning",
                    "lease lost on its pushes (it ran out; another worker may have them): "
                    "this copy is cancelled",
                    repository=repository,
                )

    async def sweep(self) -> None:
        """Rows whose lease ran out fail as a failed copy does, their retry count one higher."""
        engine = self._engine
        now = engine._clock()
        expired = await engine._db(
            engine.tracking.expire_leases, now, lambda count: now + retry_delay(count, engine._rng)
        )
        self.expired += len(expired)
        for site, repository, owner in expired:
            engine.log(
                "warning",
                f"the lease of worker {owner} ran out: back in the queue, as a failure",
                site=site,
                repository=repository,
            )
            engine.recorder.row_changed(site, repository)
        if expired:
            engine._poke()


def _dead_here(worker: str) -> bool:
    """Whether `worker` (host/pid/start) ran on this host and its process is gone. A pid reused since
    counts as alive: its leases then run out as any other's."""
    host, _, rest = worker.partition("/")
    pid, _, _ = rest.partition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, another user's
    return False


class Leadership:
    """Who runs the cluster's singleton duties. ``target`` None (SQLite): this engine, always."""

    def __init__(self, engine: Engine, target: PostgresDatabase | None) -> None:
        self._engine = engine
        self._target = target
        self._session: psycopg.Connection[Any] | None = None
        self._held = asyncio.Event()
        self._lost = asyncio.Event()
        if target is None:
            self._held.set()

    @property
    def leads(self) -> bool:
        return self._held.is_set()

    def start(self, interval: float) -> list[str]:
        """Start, supervised, the tasks of many workers (none on SQLite); their names."""
        engine = self._engine
        if self._target is None:
            return []
        engine._supervisor.start("leadership", self.run_forever, interval=interval, heartbeat=True)
        engine._supervisor.start("leases", engine.leases.run_forever, interval=interval, heartbeat=True)
        return ["leadership", "leases"]

    async def run_forever(self) -> None:
        """Take the lock when free, and keep checking the session that holds it (PostgreSQL only)."""
        try:
            while True:
                if self._session is None:
                    await self._try()
                else:
                    await self._check()
                self._engine._supervisor.beat("leadership")
                await asyncio.sleep(LEADERSHIP_RETRY)
        finally:
            self._drop()

    async def _try(self) -> None:
        from .tracking.postgres import ENGINE_LOCK, application_name

        assert self._target is not None
        target = self._target

        def attempt() -> psycopg.Connection[Any] | None:
            session = target.connect(application=application_name("geo-tui leader"))
            row = session.execute("SELECT pg_try_advisory_lock(%s)", (ENGINE_LOCK,)).fetchone()
            if row is not None and row[0] is True:
                return session
            session.close()
            return None

        session = await asyncio.to_thread(attempt)
        if session is not None:
            # The verifications a leader before this one left started are this one's to run again.
            await self._engine._db(self._engine.tracking.recover_verifications)
            self._session = session
            self._lost.clear()
            self._held.set()
            self._engine.log("info", "this worker now runs discovery, the reconcile and verification")

    async def _check(self) -> None:
        session = self._session
        assert session is not None
        try:
            await asyncio.to_thread(lambda: session.execute("SELECT 1").fetchone())
        except Exception as exc:
            self._drop()
            self._engine.log("warning", f"lost the leadership: {describe_error(exc)}")

    def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()  # the server drops the advisory lock with the session
        if self._target is not None:
            self._held.clear()
            self._lost.set()

    def gated(self, name: str, run: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """`run` as a task that runs only while this worker leads (beating `name` while it waits), and
        is cancelled when the leadership is lost."""

        async def gate() -> None:
            while True:
                while not self._held.is_set():
                    self._engine._supervisor.beat(name)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._held.wait(), timeout=1.0)
                task = asyncio.ensure_future(run())
                lost = asyncio.ensure_future(self._lost.wait())
                try:
                    await asyncio.wait([task, lost], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    lost.cancel()
                    if not task.done():
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                if task.done() and not task.cancelled():
                    task.result()  # a failure of `run` goes to the supervisor

        return gate


def cluster_parts(engine: Engine) -> tuple[WorkerLeases, Leadership]:
    """This engine's worker leases (none held on SQLite) and its leadership."""
    from .tracking import tracking_database
    from .tracking.postgres import PostgresDatabase

    target = tracking_database(engine.config.engine)
    if not isinstance(target, PostgresDatabase):
        return WorkerLeases(engine, None), Leadership(engine, None)
    return WorkerLeases(engine, _new_worker_id()), Leadership(engine, target)


_issued: set[str] = set()


def _new_worker_id() -> str:
    """A worker id (`tracking.worker_id`) no other engine of this process has (their start times
    differ, by a millisecond at least)."""
    from .tracking import worker_id

    started = time.time()
    while (found := worker_id(started)) in _issued:
        started += 0.001
    _issued.add(found)
    return found
