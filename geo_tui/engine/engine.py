"""The sync engine's façade: what the CLI, `serve` and the API call. A one-shot run is a pass (passes.py);
due rows are scheduled (scheduler.py), copied one repository at a time to every secondary (jobs.py), and
each outcome is recorded in one place (recorder.py). Watchers subscribe to typed updates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import httpx

from geo_tui.config import Config, redactor_for
from geo_tui.registry import RegistryClient

from .cluster_view import ClusterView
from .database import DatabaseWriter, is_passing_fault
from .describe import describe_error, prefixed
from .discovery import Discovery
from .intake import NotificationIntake
from .jobs import RepositoryJobs
from .lock import claim_for
from .metrics import EngineMetrics
from .model import EngineSnapshot, RepositoryDetail, SiteSnapshot, SiteSummary, SyncSummary
from .monitor import Site, SiteMonitor, open_sites
from .notifications import PullBacklog, RegistryEvent
from .passes import Pass
from .pushes import PushCopier
from .reads import EngineReads
from .recorder import Recorder
from .repository import ManifestCache
from .scheduler import Scheduler
from .supervisor import Supervisor
from .tracking import PauseState, RepositoryRow, SyncState, Tracking, tracking_database
from .tracking.clock import DatabaseClock
from .updates import Broadcast, EngineStatus, LogLine, Reload, SiteHealth, Update
from .verify import VerificationDepth, VerificationResult, Verifier
from .verify_loop import VerificationLoop
from .wakeups import Wakeups
from .workers import cluster_parts

__all__ = ["Engine", "EngineSnapshot", "SiteSnapshot", "SiteSummary", "SyncSummary"]

log = logging.getLogger("geo_tui.engine")
T = TypeVar("T")

# The loggers of the engine's process: their records pass through the engine's Redactor.
ENGINE_LOGGERS = ("geo_tui.engine", "geo_tui.api", "geo_tui.receiver", "geo_tui.serve")
HEALTH_INTERVAL = 15.0
ROW_ECHO_LIMIT = 1000  # rows a resync of named repositories announces at once; bulk ones show as they run
# How long a task looping every few seconds may go without getting round before it counts as down.
LOOP_TASK_INTERVAL = 60.0
# A write waits this long for another process's lock before its thread tries again (database.py).
WRITE_BUSY_TIMEOUT = 1.0


class Engine:
    """The embedded sync engine. Use ``async with Engine(config) as engine:`` or open()/close().

    The parts: `discovery` (the catalog), `scheduler` (due rows, slots, waiting), `jobs` (one repository
    to every secondary), `recorder` (an outcome into tracking, metrics, log and updates), `monitor` (each
    site's health and throughput), `verification` (serve's verification loop) and `_pushes` (push copies).
    """

    primary: RegistryClient  # the primary's client, once open

    def __init__(
        self,
        config: Config,
        *,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        in_run_retry_base: float = 0.5,
        health_interval: float = HEALTH_INTERVAL,
        command: str = "a geo-tui engine",
        request_timeout: float = 30.0,
    ) -> None:
        self.config = config
        self.secondary_names = [s.name for s in config.secondaries]
        # Every configured secret, in every encoding, is removed from what the engine stores, logs or
        # answers (the API scrubs its answers with it too).
        self.redactor = redactor_for(config)
        self._log_filter = self.redactor.log_filter()
        # One engine per tracking database: open() claims it, close() lets it go.
        self.claim = claim_for(config.engine, command)
        self._transports = dict(transports or {})
        # This host's wall clock, set to the tracking database's on PostgreSQL (tracking/clock.py): many
        # hosts' workers compare the times they write. A clock passed in (tests) is used as it is.
        self._clock: Callable[[], float] = clock if clock is not None else DatabaseClock()
        self._rng = rng or random.Random()
        self._request_timeout = request_timeout  # without progress; and the base of every deadline
        self._broadcast = Broadcast()
        self._emit = self._broadcast.emit
        self._cache = ManifestCache()
        self._sites: dict[str, Site] = {}
        self._tracking: Tracking | None = None
        self.paused = False  # the cluster's pause (the tracking database's), as `cluster` last read it
        self.pause_state = PauseState(False)
        self.running = False
        self.metrics = EngineMetrics()
        self.last_event_at: float | None = None
        self._writer: DatabaseWriter | None = None
        # Tracking-database reads: `await engine.read(engine.tracking.rows, ...)` (reads.py)
        self.read = EngineReads(self)
        self._supervisor = Supervisor(
            report=lambda _task, message: self.log("error", message),
            restarted=lambda task: self.metrics.task_restarts.labels(task).inc(),
            describe=describe_error,
            # While the tracking database is away its outage is logged once (wakeups.DatabaseState);
            # the tasks that fail on it meanwhile are down and restarted without a line each.
            reported_elsewhere=lambda exc: (
                is_passing_fault(exc) and self.wakeups.database.down_since is not None
            ),
        )
        self.metrics.watch_tasks(
            lambda: {s.name: s.name in self.tasks_down() for s in self._supervisor.states()}
        )
        self.discovery = Discovery(self)
        self.scheduler = Scheduler(self)
        self.jobs = RepositoryJobs(self)
        self.recorder = Recorder(self, in_run_retry_base)
        self.monitor = SiteMonitor(self, health_interval)
        self.verification = VerificationLoop(self)
        self.leases, self.leadership = cluster_parts(self)  # many workers on PostgreSQL: workers.py
        # serve's pass: it never ends; its attempts count for the engine's life (the log says "attempt n")
        self._standing = Pass.standing(self.secondary_names)
        # Push copies, by repository: they run beside whole-repository jobs, never behind them.
        self._pushes = PushCopier(self)
        self.cluster = ClusterView(self)  # other workers' changes for the watchers, and the shared pause
        self.wakeups = Wakeups(self)  # NOTIFY from the tracking database, and whether it answers
        self.intake = NotificationIntake(self)  # notifications stored, concurrent ones in one commit
        self.pull_backlog = PullBacklog()  # fed by the receiver (see notifications.PullBacklog)
        self.metrics.watch_backlog(
            lambda: self.pull_backlog.outstanding,
            lambda: self.pull_backlog.held_seconds,
            lambda: self._pushes.priority.yielded_seconds,
            lambda: self._pushes.priority.held_seconds,
            self._pushes.priority.allowance,
        )
        # The names push copies (pushes.py) call the parts by.
        self._poke = self.scheduler.poke
        self._flush_bytes = self.monitor.flush
        self._count = self.recorder.count
        self._emit_row = self.recorder.row_changed

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def tracking(self) -> Tracking:
        if self._tracking is None:
            raise RuntimeError("the engine is not open")
        return self._tracking

    def client(self, site: str) -> RegistryClient:
        return self._sites[site].client

    async def open(self) -> None:
        if self._tracking is not None:
            return
        self.claim.acquire()  # raises DatabaseInUse naming the holder
        try:
            self._tracking = Tracking(
                tracking_database(self.config.engine),
                clock=self._clock,
                busy_timeout=WRITE_BUSY_TIMEOUT,
                redact=self.redactor.redact,
            )
        except BaseException:
            self.claim.release()
            raise
        self._writer = DatabaseWriter()
        self.read.open(self._tracking)
        for name in ENGINE_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)
        self.scheduler.open()
        self.cluster.load_pause()

        self._sites = open_sites(
            self.config,
            self.tracking,
            self.monitor,
            transports=self._transports,
            request_timeout=self._request_timeout,
            redactor=self.redactor,
            write=self._db,
            read=self.read,
            # background requests wait for push copies running, and on the primary for its own pull
            # notifications backing up (see notifications.PullBacklog)
            gates=[self._pushes.yield_to_pushes],
            primary_gates=[self.pull_backlog.hold],
            streams=self.leases.open_streams(self.tracking),  # PostgreSQL's many workers
        )
        self.primary = self._sites[self.config.primary.name].client
        self._verifier = Verifier(
            self.tracking,
            self.primary,
            {name: site.client for name, site in self._sites.items()},
            wants=lambda site, repository: self._sites[site].config.wants(repository),
            log=self.log,
            row_changed=self._emit_row,
            blob_concurrency=self.config.engine.blob_concurrency,
            deep_interval=self.config.verification.deep_interval,
            count_blobs=lambda site, outcome, n: self.metrics.verified_blobs.labels(site, outcome).inc(n),
            write=self._db,
            pushes_copied=self._pushes.copied,
        )
        self.metrics.watch_state(
            lambda: self.tracking.counts(self.secondary_names), lambda: self.scheduler.in_flight
        )
        if redacted := self.tracking.redact_stored():
            self.log("warning", f"removed configured secrets from {redacted} texts an earlier geo-tui stored")
        await self.leases.open()
        if recovered := self.leases.recover_started():
            self.log("warning", f"picked up {recovered} repositories left in progress by an earlier run")
        if self.paused:
            by = f" by worker {self.pause_state.by}" if self.pause_state.by else ""
            self.log("warning", f"replication is paused{by}: nothing new starts until it is resumed")

    async def close(self) -> None:
        await self.stop()
        self.leadership.release()  # an engine opened but never started may hold the lock (tests, tools)
        for site in self._sites.values():
            await site.client.aclose()
        self._sites.clear()
        if self._writer is not None:
            self._writer.close()  # the log lines still queued go in first
            self._writer = None
        self.read.close()
        if self._tracking is not None:
            self.leases.unregister()
            self._tracking.close()
            self._tracking = None
            for name in ENGINE_LOGGERS:
                logging.getLogger(name).removeFilter(self._log_filter)
        self.claim.release()

    async def __aenter__(self) -> Engine:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Run in the background: discovery, the scheduler, health checks, verification, reconcile."""
        await self.open()
        if self.running:
            return
        self.running = True
        # Each supervised, with how long it may be down before health, metrics and the console say so (the
        # reconcile's interval, or a minute); the loops of a few seconds also beat each round.
        start, loop, lead = self._supervisor.start, LOOP_TASK_INTERVAL, self.leadership.gated
        reconcile = self.config.engine.reconcile_interval
        start("discovery", lead("discovery", self.discovery.run_forever), interval=reconcile)
        start("scheduler", partial(self.scheduler.run, self._standing), interval=loop, heartbeat=True)
        start("push", self._pushes.run_forever, interval=loop, heartbeat=True)
        start("health", self.monitor.health_forever, interval=max(loop, 2 * self.monitor.health_interval))
        start("flush", self.monitor.flush_forever, interval=loop, heartbeat=True)
        verification = lead("verification", self.verification.run_forever)
        start("verification", verification, interval=max(loop, reconcile), heartbeat=True)
        cluster = self.leadership.start(loop)  # PostgreSQL: the leadership and this worker's leases
        for task in ("discovery", "scheduler", "push", "health", "flush", "verification", *cluster):
            self.metrics.task_restarts.labels(task)  # 0 from the start, not absent until the first
        start("listen", self.wakeups.run_forever, interval=loop)  # NOTIFY (PostgreSQL)
        self._emit(EngineStatus(running=True, paused=self.paused))
        self.log("info", "engine started")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop scheduling; let copies in flight finish for ``grace`` seconds, then leave them pending."""
        if not self.running and not self.scheduler.jobs and not self._pushes.running:
            return
        self.running = False
        await self._supervisor.stop()
        jobs = [*self.scheduler.jobs.values(), *self._pushes.running.values()]
        if jobs:
            _, pending = await asyncio.wait(jobs, timeout=grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._flush_bytes()
        self._emit(EngineStatus(running=False, paused=self.paused))
        if self._tracking is not None:
            self.log("info", "engine stopped")

    # -- observation -----------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Update], None]) -> Callable[[], None]:
        """Call ``callback`` with every update, on the engine's event loop; returns an unsubscriber."""
        return self._broadcast.subscribe(callback)

    def log(
        self, level: str, message: str, *, site: str | None = None, repository: str | None = None
    ) -> None:
        """Log a line to the process log, the event log in the database and every watcher. Never waits
        for the database: the line is stored on the database thread (and shown at once)."""
        worker = self.leases.owner  # many workers: each line says whose (None with one engine)
        record = self.tracking.log_record(level, message, site=site, repository=repository, worker=worker)
        if self._writer is not None:
            self._writer.submit(self.tracking.store_log, record)
        else:
            self.tracking.store_log(record)
        log.log(logging.getLevelName(level.upper()), "%s", prefixed(record.message, site, repository))
        self._emit(LogLine(record))

    def snapshot(self) -> EngineSnapshot:
        """The site cards now, read in place (the service reads them off the loop: `read.snapshot`)."""
        return self.read.snapshot_now()

    def tasks_down(self) -> list[str]:
        """Background tasks down (failed and not back, or stuck) for longer than their interval."""
        return self._supervisor.down()

    async def _db(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        timeout: float | None = None,
        urgent: bool = False,
        **kwargs: Any,
    ) -> T:
        """A tracking-database write, on the database thread: a lock held elsewhere delays only this.
        `urgent` puts it ahead of the ordinary writes waiting (a push copy's writes always are)."""
        if self._writer is None:
            raise RuntimeError("the engine is not open")
        return await self._writer(fn, *args, timeout=timeout, urgent=urgent, **kwargs)

    def rows(
        self, *, sites: Sequence[str] | None = None, states: Sequence[SyncState] | None = None
    ) -> list[RepositoryRow]:
        return self.tracking.rows(sites=sites, states=states)

    async def repository_detail(self, repository: str) -> RepositoryDetail:
        """Tags and digests of one repository on every site as last seen (the tracking database: a
        20,000-tag repository costs no request), with its rows and history."""
        return await self.read.repository_detail(repository)

    async def check_health(self) -> dict[str, SiteHealth]:
        """Ping every site now; each site's health, as watchers are told it."""
        return await self.monitor.check_health()

    # -- commands ------------------------------------------------------------------------------

    async def resync(
        self,
        *,
        sites: Sequence[str] | None = None,
        repositories: Sequence[str] | None = None,
        failed_only: bool = False,
        recheck_blobs: bool = False,
    ) -> int:
        """Queue repositories for a sync (all, the failed ones, or those named). Returns how many rows.
        ``recheck_blobs``: the sync also HEADs the blobs of tags that already match, and puts back those
        missing (an ordinary sync trusts a matching tag)."""
        if repositories is not None:
            self.discovery.named(repositories)
            for site in sites or self.secondary_names:
                wanted = [r for r in repositories if self._sites[site].config.wants(r)]
                await self._db(self.tracking.ensure_rows, site, wanted)
        count = await self._db(
            self.tracking.request_sync,
            sites=sites,
            repositories=repositories,
            failed_only=failed_only,
            recheck_blobs=recheck_blobs,
        )
        what = (
            "failed repositories"
            if failed_only
            else ("all repositories" if repositories is None else ", ".join(repositories[:5]))
        )
        self.log("info", f"resync requested: {what} ({count} rows)")
        if repositories is not None and len(repositories) <= ROW_ECHO_LIMIT:
            # Every watcher (other consoles too) sees the rows queued, even while paused.
            for site in sites or self.secondary_names:
                for repository in repositories:
                    self._emit_row(site, repository)
        elif count:  # rows not named here: every watcher reads them all again (once, not per row)
            self._emit(Reload(f"resync requested: {what} ({count} rows)"))
        self._poke()
        return count

    async def pause(self) -> None:
        """Start no new copies, on every worker of the tracking database (copies in flight finish); it
        stays paused, across restarts too, until resumed through any of them."""
        await self.cluster.set_pause(True)
        self.log("warning", "replication paused" + (" (every worker)" if self.leases.owner else ""))

    async def resume(self) -> None:
        """Start copying again, on every worker of the tracking database."""
        await self.cluster.set_pause(False)
        self.log("info", "replication resumed" + (" (every worker)" if self.leases.owner else ""))

    # -- notifications ---------------------------------------------------------------------------

    async def accept_notifications(self, events: Sequence[RegistryEvent]) -> int:
        """Durably queue what notification events name, then wake the copiers (see `intake`): the events
        are in the tracking database when this returns. Raises DatabaseBusy (or the database's error)
        within seconds when they cannot be stored: answer 5xx, the registry sends them again."""
        return await self.intake.accept(events)

    # -- discovery and one-shot runs ---------------------------------------------------------------

    async def discover(self, *, write_timeout: float | None = None) -> list[str]:
        """Read the primary's catalog and track every repository each secondary wants."""
        return await self.discovery.discover(write_timeout=write_timeout)

    async def sync_once(self, *, sites: Sequence[str] | None = None) -> SyncSummary:
        """Compare every repository on the given secondaries and copy what differs, retrying
        failures up to ``sync_attempts`` times within the run."""
        names = list(sites or self.secondary_names)

        async def compare_all() -> None:
            await self.discover()
            await self._db(self.tracking.request_sync, sites=names)

        return await self.scheduler.run_pass(
            Pass.one_shot(names, self.config.engine.sync_attempts), compare_all
        )

    async def run_due(
        self, *, sites: Sequence[str] | None = None, repositories: Sequence[str] | None = None
    ) -> SyncSummary:
        """Run what is queued (pending, or failed and due) now, only ``repositories`` if given,
        with the in-run retries of ``sync_once``."""
        names = list(sites or self.secondary_names)
        return await self.scheduler.run_pass(
            Pass.one_shot(names, self.config.engine.sync_attempts, repositories)
        )

    # -- verification ------------------------------------------------------------------------------

    async def verify(
        self,
        *,
        sites: Sequence[str] | None = None,
        repositories: Sequence[str] | None = None,
        depth: VerificationDepth = VerificationDepth.CHECKSUM,
        sample: float = 1.0,
    ) -> list[VerificationResult]:
        """Verify now: compare checksums on the primary and each secondary (and, deeper, every blob the
        secondary's tags reach), record the result, and queue a resync for every mismatch or missing blob."""
        names = list(sites or self.secondary_names)
        if repositories is None:
            tracked = await self.read(
                lambda: {r for site in names for r in self.tracking.repository_names(site)}
            )
            wanted = sorted(tracked | set(await self.discover()))
            unknown: list[str] = []
        else:
            on_primary = set(await self.discover())
            wanted = [r for r in repositories if r in on_primary]
            unknown = [r for r in repositories if r not in on_primary]
        results = await self._verifier.verify(
            names, wanted, self.config.engine.repository_concurrency, depth=depth, sample=sample
        )
        # A name the primary does not have (a typo, say) is no success, and gets no tracked row.
        results += [
            VerificationResult(
                site, r, False, None, None, f"the primary has no repository named {r!r}", depth
            )
            for r in unknown
            for site in names
        ]
        self._poke()
        return sorted(results, key=lambda r: (r.site, r.repository))
