"""A pass of the scheduler: the rows it may run, the attempts it made, and what it did.

`serve` runs one standing pass that never ends and sums nothing up: a failed row waits for its backoff.
A one-shot pass (`sync --once`, `run_due`) retries a failed row within the run, up to `attempts` times,
ends when nothing it may run is left, and sums up each site in a `SyncSummary`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .model import SiteSummary, SyncSummary
from .repository import CopyStats

__all__ = ["Pass"]

Key = tuple[str, str]  # (site, repository)


@dataclass
class Pass:
    sites: list[str]
    # How many times a one-shot pass runs a row; None for the standing pass of `serve`.
    attempts: int | None = None
    repositories: Sequence[str] | None = None
    _tries: dict[Key, int] = field(default_factory=dict)
    _summaries: dict[str, SiteSummary] = field(default_factory=dict)

    @classmethod
    def standing(cls, sites: list[str]) -> Pass:
        return cls(sites)

    @classmethod
    def one_shot(cls, sites: list[str], attempts: int, repositories: Sequence[str] | None = None) -> Pass:
        return cls(sites, attempts, repositories, _summaries={n: SiteSummary(n) for n in sites})

    @property
    def is_standing(self) -> bool:
        return self.attempts is None

    def started(self, key: Key) -> None:
        """A run of the row begins: one attempt more."""
        self._tries[key] = self._tries.get(key, 0) + 1

    def tries(self, key: Key) -> int:
        """The attempts made at the row in this pass (a failure counts as the first if none was seen)."""
        return self._tries.get(key, 1)

    def may_start(self, key: Key) -> bool:
        """A one-shot pass runs a row at most `attempts` times."""
        return self.attempts is None or self._tries.get(key, 0) < self.attempts

    def retries_in_run(self, key: Key) -> bool:
        """A failed row is tried again within this pass (else it waits for its backoff)."""
        return self.attempts is not None and self.tries(key) < self.attempts

    # -- the summary of a one-shot pass (a standing pass keeps none) -------------------------------

    def add(self, site: str, stats: CopyStats, warnings: list[str]) -> None:
        summary = self._summaries.get(site)
        if summary is not None:
            summary.stats.add(stats)
            summary.warnings.extend(warnings)

    def synced(self, site: str, repository: str) -> None:
        summary = self._summaries.get(site)
        if summary is not None:
            summary.synced += 1
            summary.failures.pop(repository, None)

    def failed(self, site: str, repository: str, reason: str) -> None:
        """A failure the pass ends with (no retry left in it)."""
        summary = self._summaries.get(site)
        if summary is not None:
            summary.failed += 1
            summary.failures[repository] = reason

    def summary(self, seconds: float) -> SyncSummary:
        return SyncSummary(self._summaries, seconds)
