"""The engine's reports: snapshots for the console, summaries of a one-shot run."""

from __future__ import annotations

from dataclasses import dataclass, field

from .replicate import CopyStats
from .tracking import SiteCounts
from .updates import SiteHealth

__all__ = ["EngineSnapshot", "SiteSnapshot", "SiteSummary", "SyncSummary"]


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
