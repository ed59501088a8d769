"""The engine's reports: snapshots for the console, summaries of a one-shot run."""

from __future__ import annotations

from dataclasses import dataclass, field

from .replicate import CopyStats
from .tracking import LogRecord, RepositoryRow, SiteCounts
from .updates import SiteHealth

__all__ = ["EngineSnapshot", "RepositoryDetail", "SiteSnapshot", "SiteSummary", "SiteTags", "SyncSummary"]


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
