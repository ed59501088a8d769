"""Many workers on one PostgreSQL tracking database (issue 16): this worker's row and leases, and the
leadership that runs the duties the cluster needs once.

`WorkerLeases` registers the worker at start, and every ``lease_seconds / 3`` renews the leases of the
rows its jobs copy and of the pushes its push copies hold (a job whose lease was lost is cancelled:
another worker has the row, and this one must neither copy on nor mark it), renews its turns at
streaming blobs (streams.py), stamps its row's heartbeat with how much it has in hand, and sweeps the
leases that ran out (any worker's: a dead worker's rows go back through the failure path; its pushes are
simply anyone's claim). A clean stop takes the row away and gives its pushes back.

`Leadership` (leadership.py) is who runs discovery, the periodic reconcile and verification: the holder
of a session ``pg_try_advisory_lock``, taken over from when its session ends or its worker stops beating.
On SQLite there is one engine per file, and it always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import TYPE_CHECKING

from .backoff import retry_delay
from .describe import describe_error
from .leadership import Leadership
from .streams import ClusterStreams, StreamRecords
from .tracking.clock import DatabaseClock

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Leadership", "WorkerLeases", "cluster_parts"]

log = logging.getLogger("geo_tui.engine")

Key = tuple[str, str]

CLOCK_ALIGN_EVERY = 60.0  # seconds between two measurements of this host's clock against the database's
CLOCK_SKEW_TOLD = 1.0  # seconds apart beyond which the log says this host's clock is off


class WorkerLeases:
    """This worker's row and leases; `owner` None (SQLite: one engine per file) holds no leases."""

    def __init__(self, engine: Engine, owner: str | None) -> None:
        self._engine = engine
        self.owner = owner
        self.lease_seconds = engine.config.engine.lease_seconds
        self.expired = 0  # rows whose lease this worker's sweeps found run out
        self._renewed_at = engine._clock()  # the last heartbeat that reached the database
        self.streams: ClusterStreams | None = None  # this worker's blob streams (open_streams)
        self._aligned_at: float | None = None  # time.monotonic() of the clock's last alignment
        self._skew_told = False  # the log said this host's clock is off (and has not said it is back)

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
        self._clock_measured()  # the tracking database set the clock as it opened (tracking/clock.py)
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
        if self._aligned_at is None or time.monotonic() - self._aligned_at >= CLOCK_ALIGN_EVERY:
            await self.align_clock()

    async def align_clock(self) -> None:
        """Measure this host's clock against the tracking database's again (the hosts' clocks drift,
        and time sync may step them); a read that fails keeps the last offset until the next beat."""
        engine = self._engine
        try:
            await engine.read(engine.tracking.align_clock)
        except Exception as exc:
            log.debug("could not read the tracking database's clock: %s", describe_error(exc))
            return
        self._clock_measured()

    def _clock_measured(self) -> None:
        """Show the clock's offset (metrics), and say in the log when this host's clock is off by more
        than CLOCK_SKEW_TOLD, and when it is back."""
        clock = self._engine._clock
        if not isinstance(clock, DatabaseClock) or not clock.aligned:
            return
        self._aligned_at = time.monotonic()
        engine = self._engine
        engine.metrics.clock_offset.set(clock.offset)
        off = abs(clock.offset) > CLOCK_SKEW_TOLD
        if off and not self._skew_told:
            way = "ahead of" if clock.offset < 0 else "behind"
            engine.log(
                "warning",
                f"this host's clock is {abs(clock.offset):.1f} s {way} the tracking database's: "
                "this worker stamps leases, heartbeats and schedules with the database's time, but set "
                "up time sync (NTP) on this host, as the registry tokens it signs carry its own",
            )
        elif self._skew_told and not off:
            engine.log("info", "this host's clock is within 1 s of the tracking database's again")
        self._skew_told = off

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


def cluster_parts(engine: Engine) -> tuple[WorkerLeases, Leadership]:
    """This engine's worker leases (none held on SQLite) and its leadership."""
    if engine.config.engine.database_url is None:  # SQLite: no psycopg to import (~0.1 s of CPU a start)
        return WorkerLeases(engine, None), Leadership(engine, None, None)
    from .tracking import tracking_database
    from .tracking.postgres import PostgresDatabase

    target = tracking_database(engine.config.engine)
    if not isinstance(target, PostgresDatabase):
        return WorkerLeases(engine, None), Leadership(engine, None, None)
    worker = _new_worker_id()
    return WorkerLeases(engine, worker), Leadership(engine, target, worker)


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
