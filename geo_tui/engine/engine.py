"""The sync engine: what to copy and when.

It discovers repositories on the primary, tracks every (secondary, repository) pair in the
tracking database, and runs due pairs with bounded concurrency: one job per repository reads
the primary once and replicates into every secondary that needs it. Failures retry on a
backoff schedule. Whoever watches (the console, the CLI) subscribes to typed updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from geo_tui.config import Config, SiteConfig, redactor_for
from geo_tui.registry import RegistryClient, RegistryError, is_valid_repository_name

from .backoff import in_run_delay, retry_delay
from .budget import Gate, RequestBudget, Work, request_hook, set_work
from .database import DatabaseWriter
from .describe import blame_primary, describe_error, describe_stats, prefixed
from .failure import Failure, Side, failure_of
from .lock import claim_for
from .merge import open_primary_repository, replicate_merged
from .metrics import EngineMetrics
from .model import EngineSnapshot, RepositoryDetail, SiteSnapshot, SiteSummary, SiteTags, SyncSummary
from .notifications import PullBacklog, RegistryEvent
from .pushes import PushCopier
from .replicate import (
    BlobCopier,
    CopyStats,
    ManifestCache,
    PrimaryRepository,
    RepositoryOutcome,
    repository_size,
)
from .sites import build_client, build_signer
from .supervisor import Supervisor
from .throughput import CompletionRate, Throughput
from .tracking import RepositoryRow, SyncState, Tracking, VerificationState, tracking_database
from .updates import BytesCopied, EngineStatus, LogLine, RepositoryUpdated, SiteHealth, Update
from .verify import VerificationDepth, VerificationResult, Verifier

__all__ = ["Engine", "EngineSnapshot", "SiteSnapshot", "SiteSummary", "SyncSummary"]

log = logging.getLogger("geo_tui.engine")
T = TypeVar("T")

# The loggers of the engine's process: their records pass through the engine's Redactor.
ENGINE_LOGGERS = ("geo_tui.engine", "geo_tui.api", "geo_tui.receiver", "geo_tui.serve")
HEALTH_INTERVAL = 15.0
UNHEALTHY_INTERVAL = 3.0  # while a site is down: its recovery shows within seconds
HEALTH_MIN_GAP = 1.0  # a burst of failed copies asks for one health check, not one each
FLUSH_INTERVAL = 0.5
ROW_ECHO_LIMIT = 1000  # rows a resync of named repositories announces at once; bulk ones show as they run
# Scheduled deep verifications started per round of the verification loop (a round is ~2 s when idle):
# each row's slot is spread over the interval already; this caps a backlog (an engine that was down).
DEEP_PER_TICK = 2
# How long a task that loops every few seconds (the scheduler, flushing, verification) may go without
# getting round before it counts as down: crashed, stuck in a cycle, or its heartbeat stopped.
LOOP_TASK_INTERVAL = 60.0
# A write waits this long for another process's lock before its thread tries again (database.py).
WRITE_BUSY_TIMEOUT = 1.0
# A notification not stored within this gets a 503, and the registry sends it again (issue 12, case 4).
NOTIFICATION_STORE_TIMEOUT = 3.0
# Discovery gives a write this long, then fails and is restarted: the failure shows, and is counted.
BACKGROUND_WRITE_TIMEOUT = 5.0
SHUTDOWN_WRITE_TIMEOUT = 2.0
READING_PRIMARY = "reading the primary"  # what a job waits on first (a deadline's reason says it)


@dataclass
class _Site:
    config: SiteConfig
    client: RegistryClient
    copier: BlobCopier | None = None
    health: SiteHealth | None = None
    throughput: Throughput = field(default_factory=Throughput)
    completions: CompletionRate = field(default_factory=CompletionRate)
    stats: CopyStats = field(default_factory=CopyStats)
    unflushed: int = 0


class Engine:
    """The embedded sync engine. Use ``async with Engine(config) as engine:`` or open()/close()."""

    def __init__(
        self,
        config: Config,
        *,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        in_run_retry_base: float = 0.5,
        health_interval: float = HEALTH_INTERVAL,
        command: str = "a geo-tui engine",
        request_timeout: float = 30.0,
    ) -> None:
        self.config = config
        # Every configured secret, in every encoding, is removed from what the engine stores, logs or
        # answers (the API scrubs its answers with it too).
        self.redactor = redactor_for(config)
        self._log_filter = self.redactor.log_filter()
        # One engine per tracking database: open() claims it, close() lets it go.
        self.claim = claim_for(config.engine, command)
        self._transports = dict(transports or {})
        self._clock = clock
        self._rng = rng or random.Random()
        self._in_run_retry_base = in_run_retry_base
        self._health_interval = health_interval
        self._request_timeout = request_timeout  # without progress; and the base of every deadline
        self._health_wake = asyncio.Event()
        self._subscribers: list[Callable[[Update], None]] = []
        self._cache = ManifestCache()
        self._sites: dict[str, _Site] = {}
        self._tracking: Tracking | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        # Push copies, by repository: they run beside whole-repository jobs, never behind them.
        self._pushes = PushCopier(self)
        self.pull_backlog = PullBacklog()  # fed by the receiver (see notifications.PullBacklog)
        self._wake: asyncio.Event | None = None
        self._paused = False
        self._running = False
        self._primary_repositories: int | None = None
        # Repositories named (by a resync or an event) while a catalog is read: that catalog may predate
        # them, so it must not mark them absent from the primary.
        self._named_during_catalog: set[str] | None = None
        # per `sync --once` run: attempts so far, and summaries being filled
        self._run_attempts: dict[tuple[str, str], int] = {}
        self._run_summary: dict[str, SiteSummary] | None = None
        self.metrics = EngineMetrics()
        self.last_event_at: float | None = None
        self._writer: DatabaseWriter | None = None
        self._supervisor = Supervisor(
            report=lambda _task, message: self.log("error", message),
            restarted=lambda task: self.metrics.task_restarts.labels(task).inc(),
            describe=describe_error,
        )
        self.metrics.watch_backlog(
            lambda: self.pull_backlog.outstanding,
            lambda: self.pull_backlog.held_seconds,
            lambda: self._pushes.yielded_seconds,
        )
        self.metrics.watch_tasks(
            lambda: {s.name: s.name in self.tasks_down() for s in self._supervisor.states()}
        )

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def tracking(self) -> Tracking:
        if self._tracking is None:
            raise RuntimeError("the engine is not open")
        return self._tracking

    @property
    def primary(self) -> RegistryClient:
        return self._sites[self.config.primary.name].client

    @property
    def secondary_names(self) -> list[str]:
        return [s.name for s in self.config.secondaries]

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
        for name in ENGINE_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)
        self._wake = asyncio.Event()
        signer = build_signer(self.config.auth) if self.config.auth is not None else None
        blob_connections = self.config.engine.blob_concurrency * 2
        for site in self.config.sites:
            # Each site's own budget for background work (see .budget).
            budget = RequestBudget(self.config.engine.reconcile_requests_per_second)
            client = build_client(
                site,
                self.config,
                signer=signer,
                blob_connections=blob_connections,
                transport=self._transports.get(site.name),
                timeout=self._request_timeout,
                redactor=self.redactor,
                on_request=request_hook(budget, self._gates(site.name)),
            )
            self._sites[site.name] = _Site(
                site, client, throughput=Throughput(self._clock), completions=CompletionRate(self._clock)
            )
        primary = self._sites[self.config.primary.name].client
        for site in self.config.secondaries:
            entry = self._sites[site.name]
            entry.copier = BlobCopier(
                primary,
                entry.client,
                site.name,
                self.tracking,
                on_bytes=self._bytes_counter(entry),
                write=self._db,
            )
        self._verifier = Verifier(
            self.tracking,
            primary,
            {name: site.client for name, site in self._sites.items()},
            wants=lambda site, repository: self._sites[site].config.wants(repository),
            log=self.log,
            row_changed=self._emit_row,
            blob_concurrency=self.config.engine.blob_concurrency,
            deep_interval=self.config.verification.deep_interval,
            count_blobs=lambda site, outcome, n: self.metrics.verified_blobs.labels(site, outcome).inc(n),
            write=self._db,
        )
        self.metrics.watch_state(lambda: self.tracking.counts(self.secondary_names), lambda: self.in_flight)
        redacted = self.tracking.redact_stored()
        if redacted:
            self.log("warning", f"removed configured secrets from {redacted} texts an earlier geo-tui stored")
        recovered = self.tracking.recover_started()
        if recovered:
            self.log("warning", f"picked up {recovered} repositories left in progress by an earlier run")

    def _gates(self, site: str) -> list[Gate]:
        """What background requests to ``site`` wait for: push copies running (everywhere), and the
        primary's own pull notifications backing up (see notifications.PullBacklog)."""
        gates: list[Gate] = [self._pushes.yield_to_pushes]
        if site == self.config.primary.name:
            gates.append(self.pull_backlog.hold)
        return gates

    async def close(self) -> None:
        await self.stop()
        for site in self._sites.values():
            await site.client.aclose()
        self._sites.clear()
        if self._writer is not None:
            self._writer.close()  # the log lines still queued go in first
            self._writer = None
        if self._tracking is not None:
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
        if self._running:
            return
        self._running = True
        # Each under the supervisor, with how long it may be down before health, metrics and the
        # console say so: the reconcile's own interval, or a minute for the tasks that loop every second.
        # The loops of a few seconds also beat each round: one alive but not getting round is down too.
        start, loop = self._supervisor.start, LOOP_TASK_INTERVAL
        start("discovery", self._discover_forever, interval=self.config.engine.reconcile_interval)

        async def scheduler() -> None:
            await self._schedule(once=False, sites=self.secondary_names)

        start("scheduler", scheduler, interval=loop, heartbeat=True)
        start("push", self._pushes.run_forever, interval=loop, heartbeat=True)
        start("health", self._health_forever, interval=max(loop, 2 * self._health_interval))
        start("flush", self._flush_forever, interval=loop, heartbeat=True)
        reconcile = self.config.engine.reconcile_interval
        start("verification", self._verify_forever, interval=max(loop, reconcile), heartbeat=True)
        for task in ("discovery", "scheduler", "push", "health", "flush", "verification"):
            self.metrics.task_restarts.labels(task)  # 0 from the start, not absent until the first
        self._emit(EngineStatus(running=True, paused=self._paused))
        self.log("info", "engine started")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop scheduling; let copies in flight finish for ``grace`` seconds, then leave them pending."""
        if not self._running and not self._inflight and not self._pushes.running:
            return
        self._running = False
        await self._supervisor.stop()
        jobs = [*self._inflight.values(), *self._pushes.running.values()]
        if jobs:
            _, pending = await asyncio.wait(jobs, timeout=grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._flush_bytes()
        self._emit(EngineStatus(running=False, paused=self._paused))
        if self._tracking is not None:
            self.log("info", "engine stopped")

    # -- observation -----------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Update], None]) -> Callable[[], None]:
        """Call ``callback`` with every update, on the engine's event loop; returns an unsubscriber."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def _emit(self, update: Update) -> None:
        for callback in list(self._subscribers):
            try:
                callback(update)
            except Exception:  # a broken watcher must never stop replication
                log.exception("an engine subscriber failed")

    def log(
        self, level: str, message: str, *, site: str | None = None, repository: str | None = None
    ) -> None:
        """Log a line to the process log, the event log in the database and every watcher. Never waits
        for the database: the line is stored on the database thread (and shown at once)."""
        record = self.tracking.log_record(level, message, site=site, repository=repository)  # redacted
        if self._writer is not None:
            self._writer.submit(self.tracking.store_log, record)
        else:
            self.tracking.store_log(record)
        log.log(logging.getLevelName(level.upper()), "%s", prefixed(record.message, site, repository))
        self._emit(LogLine(record))

    def snapshot(self) -> EngineSnapshot:
        counts = self.tracking.counts(self.secondary_names)
        pushed = self.tracking.oldest_queued_push()  # a push waiting for its copy is lag on every site
        now = self._clock()
        sites = []
        for name, site in self._sites.items():
            c = counts.get(name)
            remaining = (c.pending + c.started + c.failed) if c else 0
            sites.append(
                SiteSnapshot(
                    name=name,
                    role=site.config.role,
                    registry=site.config.registry,
                    health=site.health,
                    counts=c,
                    throughput=site.throughput.rate(),
                    throughput_history=tuple(site.throughput.history()),
                    # a site that is down finishes nothing: no ETA rather than a made-up one
                    eta=site.completions.eta(remaining) if c and _reachable(site) else None,
                    lag=(now - oldest)
                    if c and (oldest := _oldest(c.oldest_unsynced_event_at, pushed))
                    else None,
                    repository_count=self._primary_repositories if site.config.role == "primary" else None,
                )
            )
        return EngineSnapshot(
            tuple(sites), self._running, self._paused, self.in_flight, tuple(self.tasks_down())
        )

    @property
    def in_flight(self) -> int:
        """Repository jobs running now: whole-repository runs and push copies."""
        return len(self._inflight) + len(self._pushes.running)

    def tasks_down(self) -> list[str]:
        """Background tasks down (failed and not back, or stuck) for longer than their interval."""
        return self._supervisor.down()

    async def _db(
        self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> T:
        """A tracking-database write, on the database thread: a lock held elsewhere delays only this."""
        if self._writer is None:
            raise RuntimeError("the engine is not open")
        return await self._writer(fn, *args, timeout=timeout, **kwargs)

    def rows(
        self, *, sites: Sequence[str] | None = None, states: Sequence[SyncState] | None = None
    ) -> list[RepositoryRow]:
        return self.tracking.rows(sites=sites, states=states)

    async def repository_detail(self, repository: str) -> RepositoryDetail:
        """Tags and digests of one repository on every site as the engine last saw them (the tracking
        database, not the registries: a 20,000-tag repository costs no request), with its rows and history."""
        seen = self.tracking.tags_seen(repository)
        sites = tuple(
            SiteTags(name, seen[name][0], seen_at=seen[name][1])
            if name in seen
            else SiteTags(name, None, "not seen yet: no sync or push copy of it has run")
            for name in self._sites
        )
        rows = tuple(
            r for name in self.secondary_names if (r := self.tracking.row(name, repository)) is not None
        )
        return RepositoryDetail(repository, sites, rows, tuple(self.tracking.repository_log(repository)))

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
            self._named(repositories)
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
        self._poke()
        return count

    def pause(self) -> None:
        self._paused = True
        self.log("warning", "replication paused")
        self._emit(EngineStatus(self._running, True))

    def resume(self) -> None:
        self._paused = False
        self.log("info", "replication resumed")
        self._emit(EngineStatus(self._running, False))
        self._poke()

    @property
    def paused(self) -> bool:
        return self._paused

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- notifications ---------------------------------------------------------------------------

    async def accept_notifications(self, events: Sequence[RegistryEvent]) -> int:
        """Durably queue what notification events name, then wake the copiers.

        A push that names its manifest is queued for a copy of exactly that (see `pushes`); a
        deletion, or an event that names too little, queues a whole-repository run in the background.
        The events are in the tracking database when this returns: acknowledge only after it.
        Returns how many pushes and (site, repository) rows were queued. Raises DatabaseBusy (or
        sqlite3's error) within seconds when they cannot be stored: answer 5xx, the registry sends them
        again."""
        now = self._clock()
        relevant = [e for e in events if e.matters]
        self._named([e.repository for e in relevant])
        for event in events:
            self.metrics.notifications.labels(event.action or "unknown").inc()
        if events:
            self.last_event_at = now
        if not relevant:
            # Pulls and blob pushes: Distribution 2.8 sends a pull event for every manifest HEAD, so a
            # reconcile's own reads come back here by the thousand. Nothing to store; answer at once.
            return 0
        pushes: list[RegistryEvent] = []
        whole: list[RegistryEvent] = []
        for event in relevant:
            if not any(site.wants(event.repository) for site in self.config.secondaries):
                continue
            (pushes if event.copyable else whole).append(event)

        def pairs(chosen: list[RegistryEvent]) -> list[tuple[str, str]]:
            return sorted(
                {
                    (s.name, e.repository)
                    for e in chosen
                    for s in self.config.secondaries
                    if s.wants(e.repository)
                }
            )

        queued = await self._db(
            self.tracking.record_notifications,
            [(e.id, e.action, e.repository, e.tag, e.digest) for e in relevant],
            pairs(whole),
            now,
            pushes=[(e.repository, e.tag, e.digest or "") for e in pushes],
            push_rows=pairs(pushes),
            timeout=NOTIFICATION_STORE_TIMEOUT,
        )
        for event in relevant[:20]:
            what = event.tag or event.digest or "?"
            self.log(
                "info", f"notification: {event.action} {event.repository}:{what}", repository=event.repository
            )
        if whole:
            self._poke()
        if pushes:
            self._pushes.wake()
        return queued

    # -- discovery -------------------------------------------------------------------------------

    def _named(self, repositories: Sequence[str]) -> None:
        if self._named_during_catalog is not None:
            self._named_during_catalog.update(repositories)

    async def discover(self, *, write_timeout: float | None = None) -> list[str]:
        """Read the primary's catalog and track every repository each secondary wants."""
        named: set[str] = set()
        self._named_during_catalog = named
        try:
            names = await self.primary.catalog()
        finally:
            self._named_during_catalog = None
        valid = [n for n in names if is_valid_repository_name(n)]
        for bad in sorted(set(names) - set(valid))[:10]:
            self.log("warning", f"primary catalog lists an invalid repository name {bad!r}; skipped")
        self._primary_repositories = len(valid)
        wanted = {site.name: [n for n in valid if site.wants(n)] for site in self.config.secondaries}

        def track() -> dict[str, tuple[int, list[str]]]:
            # One turn of the database thread for every site, right after the catalog was read: no other
            # write (a notification's row) can land between a site's two steps and be marked absent.
            return {
                name: (
                    self.tracking.ensure_rows(name, names),
                    self.tracking.mark_absent_from_primary(name, set(names) | named),
                )
                for name, names in wanted.items()
            }

        tracked = await self._db(track, timeout=write_timeout)
        for site in self.config.secondaries:
            added, gone = tracked[site.name]
            if added:
                self.log("info", f"tracking {added} new repositories", site=site.name)
            for repository in gone[:10]:
                self.log(
                    "warning",
                    "no longer on the primary (or filtered out); the secondary keeps its copy",
                    site=site.name,
                    repository=repository,
                )
        return valid

    async def _discover_forever(self) -> None:
        interval = self.config.engine.reconcile_interval
        while True:
            # Any other failure (the tracking database refusing writes, a bug) goes to the supervisor,
            # which logs it and starts this again: the reconcile never ends in silence (issue 12).
            with self._supervisor.cycle("discovery"):
                try:
                    await self.discover(write_timeout=BACKGROUND_WRITE_TIMEOUT)
                    await self._db(
                        self.tracking.request_reconcile,
                        sites=self.secondary_names,
                        timeout=BACKGROUND_WRITE_TIMEOUT,
                    )
                    self._poke()
                except RegistryError as exc:
                    self.log("error", f"cannot read the primary's catalog: {exc}")
                    failed = True
                else:
                    failed = False
            await asyncio.sleep(min(30.0, interval) if failed else interval)

    # -- one-shot backfill -----------------------------------------------------------------------

    async def sync_once(self, *, sites: Sequence[str] | None = None) -> SyncSummary:
        """Compare every repository on the given secondaries and copy what differs, retrying
        failures up to ``sync_attempts`` times within the run."""
        return await self._run_pass(sites, compare_all=True)

    async def run_due(
        self, *, sites: Sequence[str] | None = None, repositories: Sequence[str] | None = None
    ) -> SyncSummary:
        """Run what is queued (pending, or failed and due) now, only ``repositories`` if given,
        with the in-run retries of ``sync_once``."""
        return await self._run_pass(sites, compare_all=False, repositories=repositories)

    async def _run_pass(
        self, sites: Sequence[str] | None, *, compare_all: bool, repositories: Sequence[str] | None = None
    ) -> SyncSummary:
        names = list(sites or self.secondary_names)
        started = self._clock()
        self._run_attempts.clear()
        self._run_summary = {n: SiteSummary(n) for n in names}
        try:
            if compare_all:
                await self.discover()
                await self._db(self.tracking.request_sync, sites=names)
            await self._schedule(once=True, sites=names, repositories=repositories)
            self._flush_bytes()
            return SyncSummary(self._run_summary, self._clock() - started)
        except asyncio.CancelledError:
            await self._cancel_jobs()  # their rows go back to pending; nothing keeps copying
            raise
        finally:
            self._run_summary = None

    async def _cancel_jobs(self) -> None:
        jobs = list(self._inflight.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)

    # -- scheduling ------------------------------------------------------------------------------

    async def _schedule(
        self, *, once: bool, sites: list[str], repositories: Sequence[str] | None = None
    ) -> None:
        limit = self.config.engine.repository_concurrency
        attempts = self.config.engine.sync_attempts
        wake = self._wake
        assert wake is not None
        while True:
            wake.clear()
            if not self._paused:
                room = limit - len(self._inflight)
                groups: dict[str, list[RepositoryRow]] = {}
                if room > 0:
                    due = self.tracking.due(
                        self._clock(), sites=sites, repositories=repositories, limit=max(100, room * 8)
                    )
                    for row in due:
                        # A repository whose pushes are being copied waits for them: its run would copy
                        # the same tags a second time.
                        if row.repository in self._inflight or row.repository in self._pushes.running:
                            continue
                        if once and self._run_attempts.get(row.key, 0) >= attempts:
                            continue
                        if row.repository not in groups and len(groups) >= room:
                            continue
                        groups.setdefault(row.repository, []).append(row)
                for repository, rows in groups.items():
                    self._inflight[repository] = asyncio.ensure_future(self._run_job(repository, rows, once))
            self._supervisor.beat("scheduler")
            if once and not self._inflight and not self._paused:
                pending_retry = self._next_in_run_retry(sites, attempts, repositories)
                if pending_retry is None:
                    return
                await self._wait(wake, max(0.0, pending_retry - self._clock()))
                continue
            await self._wait(wake, 1.0)

    def _next_in_run_retry(
        self, sites: list[str], attempts: int, repositories: Sequence[str] | None
    ) -> float | None:
        wanted = set(repositories) if repositories is not None else None
        due = [
            row.retry_at
            for row in self.tracking.rows(sites=sites, states=[SyncState.FAILED, SyncState.PENDING])
            if row.on_primary
            and self._run_attempts.get(row.key, 0) < attempts
            and (wanted is None or row.repository in wanted)
        ]
        return min((d or 0.0) for d in due) if due else None

    async def _wait(self, wake: asyncio.Event, timeout: float) -> None:
        tasks = [asyncio.ensure_future(wake.wait()), *self._inflight.values()]
        try:
            await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tasks[0].cancel()

    async def _run_job(self, repository: str, rows: list[RepositoryRow], once: bool) -> None:
        unfinished = {row.site: READING_PRIMARY for row in rows}
        limit = self.config.engine.max_job_duration
        if not once:
            set_work(Work(background=True))  # `serve`'s whole-repository work keeps to each site's budget
        self._pushes.whole_run_started(repository)
        try:
            async with asyncio.timeout(limit):
                await self._replicate_everywhere(repository, rows, once, unfinished)
        except TimeoutError:
            # Every request has its own deadline; this bounds a job of many slow ones (issue 12, case 5).
            for site, doing in sorted(unfinished.items()):
                reason = f"over max_job_duration ({limit:.0f} s) while {doing}"
                side: Side = "primary" if doing == READING_PRIMARY else "secondary"
                await self._record_failure(site, repository, Failure(side, "over_deadline", reason), once)
        except Exception as exc:  # a fault of the engine's own (a database error): said, and retried later
            for row in rows:
                with contextlib.suppress(Exception):
                    failure = Failure("geo-tui", "engine", f"engine: {describe_error(exc)}")
                    await self._record_failure(row.site, repository, failure, once)
        finally:
            await self._pushes.whole_run_ended(repository)
            self._inflight.pop(repository, None)
            self._flush_bytes()
            self._poke()

    async def _replicate_everywhere(
        self, repository: str, rows: list[RepositoryRow], once: bool, unfinished: dict[str, str]
    ) -> None:
        """Copy one repository to every secondary in ``rows``; ``unfinished`` keeps, per site not done
        yet, what it waits for."""
        generations: dict[str, int] = {}
        first: dict[str, bool] = {}
        for row in rows:
            self._run_attempts[row.key] = self._run_attempts.get(row.key, 0) + 1
            first[row.site] = self.tracking.never_started(row.site, repository)
            generations[row.site] = await self._db(self.tracking.mark_started, row.site, repository)
            self._emit_row(row.site, repository)
        try:
            try:
                view = open_primary_repository(repository)
            except Exception as exc:  # the primary could not be read: every secondary's row fails
                for row in rows:
                    unfinished.pop(row.site, None)
                    failure = failure_of(
                        exc, self.config.primary.name, text=blame_primary(exc), side="primary"
                    )
                    await self._record_failure(row.site, repository, failure, once)
                return
            if not view.streamed:  # a streamed run says itself when it reads and when it copies
                for row in rows:
                    unfinished[row.site] = f"copying to {row.site}"
            # A streamed view (engine/merge.py) holds no tags: it is read chunk by chunk by each secondary's
            # run, and the tags it saw are not recorded as the whole list.
            if view.exists and not view.tag_errors and not view.streamed:
                await self._db(
                    self.tracking.record_tags_seen,
                    self.config.primary.name,
                    repository,
                    view.digests,
                    complete=True,
                )
            self._pushes.whole_run_read(view)  # pushes copied while the tags were read stay
            await asyncio.gather(
                *(
                    self._replicate_one(row, view, generations[row.site], first[row.site], once, unfinished)
                    for row in rows
                )
            )
        except asyncio.CancelledError:
            for row in rows:
                # Bounded: a stop must not wait on a locked database. A row left started goes back to
                # pending at the next open (recover_started).
                with contextlib.suppress(Exception):
                    await self._db(
                        self.tracking.mark_pending, row.site, repository, timeout=SHUTDOWN_WRITE_TIMEOUT
                    )
            raise

    async def _replicate_one(
        self,
        row: RepositoryRow,
        view: PrimaryRepository,
        generation: int,
        first_run: bool,
        once: bool,
        unfinished: dict[str, str],
    ) -> None:
        site_name, event_at = row.site, row.oldest_unsynced_event_at
        site = self._sites[site_name]
        assert site.copier is not None
        repository = view.name
        primary_name, started = self.config.primary.name, self.tracking.now()

        async def seen(on_primary: dict[str, str], on_secondary: dict[str, str]) -> None:
            # tags last seen, a chunk at a time (engine/merge.py): what status and the detail screen show
            await self._db(
                self.tracking.record_tags_seen, primary_name, repository, on_primary, complete=False
            )
            await self._db(
                self.tracking.record_tags_seen, site_name, repository, on_secondary, complete=False
            )

        try:
            outcome = await replicate_merged(
                view,
                site.client,
                site.copier,
                self._cache,
                site=site_name,
                blob_concurrency=self.config.engine.blob_concurrency,
                replicate_deletions=self.config.engine.replicate_deletions,
                first_run=first_run,
                recheck_blobs=row.recheck_blobs,
                seen=seen,
                phase=lambda doing: unfinished.__setitem__(site_name, doing),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            outcome = RepositoryOutcome(
                site_name,
                repository,
                CopyStats(),
                [failure_of(exc, primary_name, text=describe_error(exc))],
                [],
                len(view.tags),
            )
        unfinished.pop(site_name, None)
        site.stats.add(outcome.stats)
        self._count(site_name, outcome.stats)
        summary = self._run_summary.get(site_name) if self._run_summary is not None else None
        warnings = [self.redactor.redact(w) for w in outcome.warnings]
        if summary is not None:
            summary.stats.add(outcome.stats)
            summary.warnings.extend(warnings)
        for warning in warnings:
            self.log("warning", warning, site=site_name, repository=repository)
        if outcome.ok:
            if not view.streamed:
                await self._db(
                    self.tracking.record_tags_seen, site_name, repository, view.digests, complete=True
                )
            else:  # every tag was seen during this run: those not seen are gone
                for name in (primary_name, site_name):
                    await self._db(self.tracking.forget_tags_seen, name, repository, before=started)
            synced = await self._db(
                self.tracking.mark_synced,
                site_name,
                repository,
                generation,
                tag_count=outcome.tag_count,
                size=await self._size_if_changed(row, view, outcome.stats),
            )
            if outcome.stats.writes:
                await self._db(
                    self.tracking.mark_verification, site_name, repository, VerificationState.PENDING
                )
                self.log(
                    "info", f"synced: {describe_stats(outcome.stats)}", site=site_name, repository=repository
                )
            site.completions.record()
            if synced and event_at is not None:
                self.metrics.event_to_synced.labels(site_name).observe(max(0.0, self._clock() - event_at))
            if summary is not None:
                summary.synced += 1
                summary.failures.pop(repository, None)
            if not synced:
                self._poke()  # new work arrived during the run
            self._emit_row(site_name, repository)
        else:
            await self._record_failure(site_name, repository, outcome.failure, once, generation)

    async def _size_if_changed(
        self, row: RepositoryRow, view: PrimaryRepository, stats: CopyStats
    ) -> int | None:
        """The repository's size when this run changed it or it was never measured; None keeps the stored
        one (a run that wrote nothing reads no manifest for it)."""
        if not stats.writes and row.bytes is not None:
            return None
        return await repository_size(view, self.primary, self._cache)

    async def _record_failure(
        self, site: str, repository: str, failure: Failure, once: bool, generation: int | None = None
    ) -> None:
        failure = failure.said(self.redactor.redact)  # before the summary, the database and the log
        reason = failure.text
        now = self._clock()
        attempts = self._run_attempts.get((site, repository), 1)
        row = self.tracking.row(site, repository)
        count = (row.retry_count if row else 0) + 1
        if once and attempts < self.config.engine.sync_attempts:
            retry_at = now + in_run_delay(attempts, self._in_run_retry_base)
        else:
            retry_at = now + retry_delay(count, self._rng)
        await self._db(self.tracking.mark_failed, site, repository, reason, retry_at, generation)
        self.metrics.failures.labels(site, failure.label).inc()
        summary = self._run_summary.get(site) if self._run_summary is not None else None
        final = not once or attempts >= self.config.engine.sync_attempts
        if summary is not None and final:
            summary.failed += 1
            summary.failures[repository] = reason
        self.log("error", f"failed (attempt {attempts}): {reason}", site=site, repository=repository)
        self._emit_row(site, repository)
        self._health_wake.set()  # is the site down? the operator should see it now, not at the next check
        self._poke()  # a push that came during the failed run makes the row due at once

    def _count(self, site: str, stats: CopyStats) -> None:
        if stats.bytes_copied:
            self.metrics.bytes_copied.labels(site).inc(stats.bytes_copied)
        for how, value in (
            ("copied", stats.blobs_copied),
            ("mounted", stats.blobs_mounted),
            ("present", stats.blobs_present),
        ):
            if value:
                self.metrics.blobs.labels(site, how).inc(value)

    def _emit_row(self, site: str, repository: str) -> None:
        if not self._subscribers:
            return
        row = self.tracking.row(site, repository)
        if row is not None:
            self._emit(RepositoryUpdated(row))

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
            tracked = {r for site in names for r in self.tracking.repository_names(site)}
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

    async def _verify_forever(self) -> None:
        set_work(Work(background=True))  # it reads whole repositories: each site's budget holds it
        while True:
            self._supervisor.beat("verification")
            if not self._paused:
                rows = self.tracking.verification_due(sites=self.secondary_names, limit=50)
                by_repo: dict[str, list[str]] = {}
                for row in rows:
                    by_repo.setdefault(row.repository, []).append(row.site)
                verified = False
                for repository, sites in by_repo.items():
                    if repository not in self._inflight:
                        with self._supervisor.cycle("verification"):  # stuck in one counts as down
                            await self._verifier.verify_repository(repository, sites)
                        verified = True
                verified = await self._deep_verify_due() or verified
                # Only go round at once if something was verified: due rows whose repository is still
                # copying to another site would otherwise spin here without an await, and starve the loop.
                if verified:
                    self._poke()
                    continue
            await asyncio.sleep(2.0)

    async def _deep_verify_due(self) -> bool:
        """The scheduled deep verifications that are due, at most DEEP_PER_TICK repositories a round."""
        interval = self.config.verification.deep_interval
        if not interval:
            return False
        # rows of repositories still copying wait; they must not hold up the others due
        limit = DEEP_PER_TICK + len(self._inflight)
        # deep_due plans slots, a write: on the database thread, so a locked database never holds the loop
        rows = await self._db(
            self.tracking.deep_due, self._clock(), interval, sites=self.secondary_names, limit=limit
        )
        by_repo: dict[str, list[str]] = {}
        for row in rows:
            if row.repository not in self._inflight and (
                row.repository in by_repo or len(by_repo) < DEEP_PER_TICK
            ):
                by_repo.setdefault(row.repository, []).append(row.site)
        for repository, sites in by_repo.items():
            with self._supervisor.cycle("verification"):  # each one is a round of the heartbeat
                await self._verifier.verify_repository(repository, sites, depth=VerificationDepth.DEEP)
        return bool(by_repo)

    # -- health and throughput -----------------------------------------------------------------

    async def check_health(self) -> dict[str, SiteHealth]:
        async def ping(site: _Site) -> None:
            now = self._clock()
            try:
                latency = await site.client.ping()
                health = SiteHealth(site.config.name, True, latency, None, now)
            except Exception as exc:
                health = SiteHealth(site.config.name, False, None, describe_error(exc), now)
            changed = site.health is None or site.health.healthy != health.healthy
            site.health = health
            self._emit(health)
            if changed and self._tracking is not None:
                if health.healthy:
                    self.log(
                        "info", f"reachable ({(health.latency or 0) * 1000:.0f} ms)", site=site.config.name
                    )
                else:
                    self.log("error", f"unreachable: {health.error}", site=site.config.name)

        await asyncio.gather(*(ping(s) for s in self._sites.values()))
        return {name: s.health for name, s in self._sites.items() if s.health is not None}

    async def _health_forever(self) -> None:
        while True:
            self._health_wake.clear()
            with self._supervisor.cycle("health"):
                healthy = await self.check_health()
            interval = self._health_interval
            if not all(h.healthy for h in healthy.values()):
                interval = min(interval, UNHEALTHY_INTERVAL)
            await asyncio.sleep(min(interval, HEALTH_MIN_GAP))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._health_wake.wait(), max(0.0, interval - HEALTH_MIN_GAP))

    def _bytes_counter(self, site: _Site) -> Callable[[str, int], None]:
        def count(_repository: str, nbytes: int) -> None:
            site.throughput.add(nbytes)
            site.unflushed += nbytes

        return count

    def _flush_bytes(self) -> None:
        now = self._clock()
        for name, site in self._sites.items():
            if site.unflushed:
                nbytes, site.unflushed = site.unflushed, 0
                self._emit(BytesCopied(name, nbytes, now))

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self._flush_bytes()
            self._supervisor.beat("flush")


def _oldest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _reachable(site: _Site) -> bool:
    return site.health is None or site.health.healthy
