"""Typed updates the engine publishes to whoever watches it (the console, the CLI, the API).

Subscribers get these through a plain callback; nothing here knows about any UI toolkit.
"""

from __future__ import annotations

from dataclasses import dataclass

from .tracking import LogRecord, RepositoryRow

__all__ = ["BytesCopied", "EngineStatus", "LogLine", "RepositoryUpdated", "SiteHealth", "Update"]


@dataclass(frozen=True)
class RepositoryUpdated:
    """A (site, repository) row changed state; ``row`` is its new value."""

    row: RepositoryRow


@dataclass(frozen=True)
class BytesCopied:
    """Bytes streamed into a secondary since the previous update of this kind."""

    site: str
    nbytes: int
    at: float


@dataclass(frozen=True)
class LogLine:
    record: LogRecord


@dataclass(frozen=True)
class SiteHealth:
    site: str
    healthy: bool
    latency: float | None
    error: str | None
    at: float


@dataclass(frozen=True)
class EngineStatus:
    running: bool
    paused: bool


Update = RepositoryUpdated | BytesCopied | LogLine | SiteHealth | EngineStatus
