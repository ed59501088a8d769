"""Prometheus series for `GET /metrics`, kept with the ecosystem's client library."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .tracking import SiteCounts
from .tracking.dialect import is_passing_fault

__all__ = ["CONTENT_TYPE", "EngineMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PUSH_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
REQUESTS_BUCKETS = (5, 10, 15, 20, 30, 50, 100, 200, 500, 1000)
WAKE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class _StateCollector(Collector):
    """Repositories by state per site, and queue depth, read from the tracking DB at scrape time."""

    def __init__(self, counts: Callable[[], Mapping[str, SiteCounts]], in_flight: Callable[[], int]) -> None:
        self._counts = counts
        self._in_flight = in_flight
        self.scraped: Mapping[str, SiteCounts] | None = None  # read beforehand for this scrape

    def collect(self) -> Iterator[Metric]:
        by_state = GaugeMetricFamily(
            "geo_tui_repositories", "Repositories per secondary by sync state", labels=["site", "state"]
        )
        verification = GaugeMetricFamily(
            "geo_tui_repositories_verification",
            "Repositories per secondary by verification state",
            labels=["site", "state"],
        )
        queue = GaugeMetricFamily(
            "geo_tui_queue_depth", "Repositories waiting to sync, per site", labels=["site"]
        )
        try:
            counts = self.scraped if self.scraped is not None else self._counts()
        except Exception as exc:  # the database away: geo_tui_tracking_database_up says so
            if not is_passing_fault(exc):
                raise
            counts = {}
        for site, c in counts.items():
            for state, value in (
                ("pending", c.pending),
                ("started", c.started),
                ("synced", c.synced),
                ("failed", c.failed),
            ):
                by_state.add_metric([site, state], value)
            for state, value in (
                ("succeeded", c.verified),
                ("failed", c.verification_failed),
                ("pending", c.verification_pending),
            ):
                verification.add_metric([site, state], value)
            queue.add_metric([site], c.pending)
        yield by_state
        yield verification
        yield queue
        yield GaugeMetricFamily(
            "geo_tui_repositories_in_flight", "Repository jobs running now", value=self._in_flight()
        )


class _TaskCollector(Collector):
    """Each supervised background task: 1 while it is down (crashed, stuck in a cycle, or its heartbeat
    stopped) for longer than its interval, else 0; read at scrape time."""

    def __init__(self, tasks: Callable[[], Mapping[str, bool]]) -> None:
        self._tasks = tasks

    def collect(self) -> Iterator[Metric]:
        down = GaugeMetricFamily(
            "geo_tui_task_down",
            "Background tasks down (crashed, stuck, or not getting round) longer than their interval",
            labels=["task"],
        )
        for task, is_down in sorted(self._tasks().items()):
            down.add_metric([task], 1.0 if is_down else 0.0)
        yield down


class EngineMetrics:
    """The engine's counters and histograms, in a registry of its own (not the process-global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._state: _StateCollector | None = None  # the repositories by state (watch_state)
        self.bytes_copied = Counter(
            "geo_tui_bytes_copied", "Blob bytes streamed into a secondary", ["site"], registry=self.registry
        )
        self.blobs = Counter(
            "geo_tui_blobs",
            "Blobs put in place, by how (copied, mounted, present)",
            ["site", "how"],
            registry=self.registry,
        )
        self.failures = Counter(
            "geo_tui_sync_failures",
            "Failed repository syncs by reason",
            ["site", "reason"],
            registry=self.registry,
        )
        self.notifications = Counter(
            "geo_tui_notifications",
            "Notification events received, by action",
            ["action"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "geo_tui_notification_requests_rejected",
            "Notification requests refused, by status",
            ["status"],
            registry=self.registry,
        )
        self.verified_blobs = Counter(
            "geo_tui_verified_blobs",
            "Blobs looked at by deep and content verifications, by outcome "
            "(present, missing, corrupt, hashed, foreign)",
            ["site", "outcome"],
            registry=self.registry,
        )
        self.task_restarts = Counter(
            "geo_tui_task_restarts",
            "Background tasks restarted after they failed, by task",
            ["task"],
            registry=self.registry,
        )
        self.event_to_synced = Histogram(
            "geo_tui_event_to_synced_seconds",
            "From a notification to the repository synced on a secondary",
            ["site"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

        self.push_to_secondary = Histogram(
            "geo_tui_push_to_secondary_seconds",
            "From a push event received to its tag written on a secondary",
            ["site"],
            buckets=PUSH_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.push_events = Counter(
            "geo_tui_push_events_copied", "Push events whose copy ran", registry=self.registry
        )
        self.push_requests = Counter(
            "geo_tui_push_requests",
            "Registry requests the copies of push events sent, all sites together",
            registry=self.registry,
        )
        self.requests_per_event = Histogram(
            "geo_tui_requests_per_push_event",
            "Registry requests per push event (a coalesced copy's requests over its events)",
            buckets=REQUESTS_BUCKETS,
            registry=self.registry,
        )

        # Where a push's time goes (issue 17): the primary's delivery, then geo-tui's stages.
        self.notification_delay = Histogram(
            "geo_tui_notification_delay_seconds",
            "From an event's timestamp at the primary to its receipt here (the primary's queue and "
            "delivery), by action and origin (own: caused by geo-tui's reads)",
            ["action", "origin"],
            buckets=PUSH_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.push_stage = Histogram(
            "geo_tui_push_stage_seconds",
            "A push's time in geo-tui by stage: store (receipt to stored), queued (receipt to its copy "
            "started, store included), copy (copy started to the tag written on a secondary), and within "
            "copy: manifest (the primary's manifests read), blobs (the blobs in place on a secondary)",
            ["stage"],
            buckets=PUSH_LATENCY_BUCKETS,
            registry=self.registry,
        )

        self._database_metrics()

    def _database_metrics(self) -> None:
        """The tracking database answering, and the parts it wakes (engine/wakeups.py)."""
        self.database_up = Gauge(
            "geo_tui_tracking_database_up",
            "1 while the tracking database answers, 0 while the engine waits for it",
            registry=self.registry,
        )
        self.database_outages = Counter(
            "geo_tui_tracking_database_outages",
            "Times the tracking database stopped answering",
            registry=self.registry,
        )
        self.wakeups = Counter(
            "geo_tui_wakeups",
            "Waits for work that ended, by part (scheduler, push) and cause (local: this process "
            "queued it; notify: a NOTIFY from the tracking database; backstop: the poll interval)",
            ["part", "cause"],
            registry=self.registry,
        )
        self.wake_latency = Histogram(
            "geo_tui_wake_seconds",
            "From the transaction that queued work (its NOTIFY) to the part awake, by part",
            ["part"],
            buckets=WAKE_BUCKETS,
            registry=self.registry,
        )
        self.clock_offset = Gauge(
            "geo_tui_clock_offset_seconds",
            "The tracking database's clock minus this host's, as last measured (PostgreSQL: every "
            "worker stamps rows with the database's clock; 0 on SQLite)",
            registry=self.registry,
        )
        self.cluster_change_latency = Histogram(
            "geo_tui_cluster_change_seconds",
            "From another worker's change (its statement's NOTIFY) to this worker's watchers told",
            buckets=WAKE_BUCKETS,
            registry=self.registry,
        )

    def watch_backlog(
        self,
        outstanding: Callable[[], float],
        held: Callable[[], float],
        yielded: Callable[[], float],
        gave_way: Callable[[], float],
        allowance: Callable[[], float],
    ) -> None:
        """geo-tui's own primary reads not notified yet, how long background work waited on them and
        on pushes, and how much longer it may give way to pushes now (see .priority)."""
        Gauge(
            "geo_tui_own_pulls_outstanding",
            "geo-tui's manifest reads of the primary whose pull notification has not come back",
            registry=self.registry,
        ).set_function(outstanding)
        Gauge(
            "geo_tui_background_held_seconds",
            "Seconds background work waited for the primary's queue of pull notifications to drain",
            registry=self.registry,
        ).set_function(held)
        Gauge(
            "geo_tui_background_yielded_seconds",
            "Seconds background requests waited for pushes on their way (summed over requests)",
            registry=self.registry,
        ).set_function(yielded)
        Gauge(
            "geo_tui_background_gave_way_seconds",
            "Seconds of wall time during which background requests waited for pushes",
            registry=self.registry,
        ).set_function(gave_way)
        Gauge(
            "geo_tui_background_give_way_allowance_seconds",
            "How long background work may still give way to pushes now (0: it goes first; refills "
            "while it runs)",
            registry=self.registry,
        ).set_function(allowance)

    def watch_state(
        self, counts: Callable[[], Mapping[str, SiteCounts]], in_flight: Callable[[], int]
    ) -> None:
        self._state = _StateCollector(counts, in_flight)
        self.registry.register(self._state)

    def watch_tasks(self, tasks: Callable[[], Mapping[str, bool]]) -> None:
        """`tasks()`: each supervised task's name, and whether it is down."""
        self.registry.register(_TaskCollector(tasks))

    def render(self, counts: Mapping[str, SiteCounts] | None = None) -> bytes:
        """The exposition text; `counts`: the repositories' counts read beforehand (off the loop, on
        PostgreSQL), else `watch_state`'s callable reads them now."""
        state = self._state
        if state is not None:
            state.scraped = counts
        try:
            return generate_latest(self.registry)
        finally:
            if state is not None:
                state.scraped = None
