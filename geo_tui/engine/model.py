"""The engine's reports: snapshots for the console, summaries of a one-shot run, and the workers sharing
its tracking database (issue 16) as `workers_view` builds them from their rows, for the engine's API and
`geo-tui status` alike: a worker is stale when its heartbeat is older than the threshold given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from geo_tui.figures import age

from .replicate import CopyStats
from .tracking import LogRecord, RepositoryRow, SiteCounts, WorkerRow
from .updates import SiteHealth

__all__ = [
    "EngineSnapshot",
    "RepositoryDetail",
    "SiteSnapshot",
    "SiteSummary",
    "SiteTags",
    "SyncSummary",
    "WorkerInfo",
    "WorkersView",
    "workers_view",
]


@dataclass(frozen=True)
class SiteSnapshot:
    """What the console shows on a site's card."""

    name: str
    role: str
    registry: str
    health: SiteHealth | None
    counts: SiteCounts | None
    throughput: float
    throughput_history: tuple[float, ...]
    eta: float | None
    lag: float | None
    repository_count: int | None


@dataclass(frozen=True)
class EngineSnapshot:
    sites: tuple[SiteSnapshot, ...]
    running: bool
    paused: bool
    in_flight: int
    # Background tasks down longer than their interval (supervisor.py): health and the header show them.
    tasks_down: tuple[str, ...] = ()


@dataclass
class SiteSummary:
    site: str
    synced: int = 0
    failed: int = 0
    stats: CopyStats = field(default_factory=CopyStats)
    failures: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class SyncSummary:
    sites: dict[str, SiteSummary]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(s.failed == 0 for s in self.sites.values())


@dataclass(frozen=True)
class SiteTags:
    """One site's tags of a repository (tag -> digest) as last seen, and when, or why there are none."""

    site: str
    tags: dict[str, str] | None
    error: str | None = None
    seen_at: float | None = None


@dataclass(frozen=True)
class RepositoryDetail:
    """What the console's detail screen shows for one repository: tags on every site side by side,
    each secondary's tracked row, and the recent history from the event log."""

    repository: str
    sites: tuple[SiteTags, ...]
    rows: tuple[RepositoryRow, ...]
    history: tuple[LogRecord, ...]

    def differing_tags(self) -> set[str]:
        """Tags whose digest is not the same on every site that could be read (missing counts)."""
        readable = [s.tags for s in self.sites if s.tags is not None]
        every = set().union(*readable) if readable else set()
        return {t for t in every if len({tags.get(t) for tags in readable}) > 1}


@dataclass(frozen=True)
class WorkerInfo:
    """One worker process as operators see it. ``heartbeat_age`` is seconds since its last heartbeat by
    the answering engine's clock; ``repositories`` are the (site, repository) it holds leases on."""

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_age: float
    listen: tuple[str, ...]
    in_flight: int
    throughput: float | None  # bytes a second; None: its heartbeat does not say
    stale: bool
    repositories: tuple[tuple[str, str], ...] = ()
    leader: bool = False  # it runs the singleton duties (discovery, the reconcile, verification)

    @property
    def state(self) -> str:
        """In words: 'live', or 'stale: no heartbeat for 3 min' past the engine's threshold."""
        return f"stale: no heartbeat for {age(self.heartbeat_age)}" if self.stale else "live"


@dataclass(frozen=True)
class WorkersView:
    """Every worker with a row in the tracking database, and the heartbeat age after which one is stale."""

    workers: tuple[WorkerInfo, ...]
    stale_after: float


def workers_view(
    rows: Sequence[WorkerRow],
    leased: Sequence[tuple[str, str, str, float]],
    now: float,
    stale_after: float,
) -> WorkersView:
    """The workers' rows and the leases they hold (`LeaseClaims.leased`) as of ``now``."""
    held: dict[str, list[tuple[str, str]]] = {}
    for site, repository, owner, _ in leased:
        held.setdefault(owner, []).append((site, repository))
    workers = []
    for row in rows:
        host, pid = _host_and_pid(row.id)
        age = max(0.0, now - row.heartbeat_at)
        repositories = tuple(held.get(row.id, ()))
        workers.append(
            WorkerInfo(
                id=row.id,
                host=host,
                pid=pid,
                started_at=row.started_at,
                heartbeat_age=age,
                listen=tuple(a for a in row.listen.replace(",", " ").split() if a),
                in_flight=max(row.working, len(repositories)),
                throughput=row.throughput,
                stale=age > stale_after,
                repositories=repositories,
                leader=row.leader,
            )
        )
    return WorkersView(tuple(workers), stale_after)


def _host_and_pid(worker: str) -> tuple[str, int]:
    """The host and pid of a worker id ``host/pid/start`` (`tracking.worker_id`); 0 for a pid not there."""
    host, _, rest = worker.partition("/")
    pid = rest.partition("/")[0]
    return host, int(pid) if pid.isascii() and pid.isdigit() else 0
