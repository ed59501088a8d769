"""Typed updates the engine publishes to whoever watches it (the console, the CLI, the API).

Subscribers get these through a plain callback; nothing here knows about any UI toolkit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .tracking import LogRecord, RepositoryRow

__all__ = [
    "Broadcast",
    "BytesCopied",
    "EngineStatus",
    "LogLine",
    "Reload",
    "RepositoryUpdated",
    "SiteHealth",
    "Update",
]


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


@dataclass(frozen=True)
class Reload:
    """Too much changed to tell row by row (another worker's bulk resync, or changes missed while the
    database's notifies did not arrive): a watcher reads every row again."""

    reason: str


Update = RepositoryUpdated | BytesCopied | LogLine | SiteHealth | EngineStatus | Reload

log = logging.getLogger("geo_tui.engine")


class Broadcast:
    """The engine's watchers: each gets every update, on the engine's event loop."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Update], None]] = []

    @property
    def watched(self) -> bool:
        return bool(self._subscribers)

    def subscribe(self, callback: Callable[[Update], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, update: Update) -> None:
        for callback in list(self._subscribers):
            try:
                callback(update)
            except Exception:  # a broken watcher must never stop replication
                log.exception("an engine subscriber failed")
