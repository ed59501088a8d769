"""The engine's tracking-database reads: in place on SQLite, off the event loop on PostgreSQL (issue 16).

`EngineReads` is the engine's `read`: ``await engine.read(engine.tracking.rows, sites=...)`` runs the
read method in place on SQLite (a WAL read is quicker than a hop to a thread) and, on PostgreSQL, on a
reading thread with a pooled connection (`database.DatabaseReader`, `tracking.postgres.PostgresReadPool`):
a server that does not answer within a few seconds is a passing fault, never a frozen loop. Beside it, the
reads behind what the service shows: the site cards (`snapshot`) and one repository's detail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .database import DatabaseReader, is_passing_fault
from .describe import describe_error
from .model import EngineSnapshot, RepositoryDetail, SiteTags
from .tracking import LogRecord, RepositoryRow, SiteCounts, Tracking

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["EngineReads", "reader_for"]

T = TypeVar("T")
_Detail = tuple[dict[str, tuple[dict[str, str], float]], tuple[RepositoryRow, ...], tuple[LogRecord, ...]]


def reader_for(tracking: Tracking) -> DatabaseReader:
    """In place on SQLite; on PostgreSQL one thread per pooled connection, and a bound a second past
    the server's own (statement_timeout): a frozen server never answers at all."""
    if not tracking.threaded_reads:
        return DatabaseReader(0, 0.0)
    from .tracking.read_pool import READ_POOL_SIZE, READ_TIMEOUT, ReadUnanswered

    return DatabaseReader(READ_POOL_SIZE[1], READ_TIMEOUT + 1.0, ReadUnanswered)


class EngineReads:
    """``await engine.read(fn, *args)``: a tracking-database read, bounded on PostgreSQL. A read that
    fails on a passing fault marks the database down (`wakeups.database`) until one answers again."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._reader: DatabaseReader | None = None

    def open(self, tracking: Tracking) -> None:
        self._reader = reader_for(tracking)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    @property
    def threaded(self) -> bool:
        """True on PostgreSQL: reads leave the loop (and a caller that must not wait spawns them)."""
        return self._reader is not None and self._reader.threaded

    async def __call__(
        self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> T:
        reader = self._reader
        if reader is None:
            raise RuntimeError("the engine is not open")
        if not reader.threaded:
            return fn(*args, **kwargs)
        database = self._engine.wakeups.database
        try:
            value = await reader(fn, *args, timeout=timeout, **kwargs)
        except Exception as exc:
            if is_passing_fault(exc):
                database.lost("reads", describe_error(exc))
            raise
        database.answered("reads")
        return value

    # -- what the service shows -------------------------------------------------------------------

    def snapshot_now(self) -> EngineSnapshot:
        """The site cards, read in place (one-shot tools and tests; the service uses `snapshot`)."""
        return self._snapshot_of(*self._snapshot_reads())

    async def snapshot(self, *, timeout: float | None = None) -> EngineSnapshot:
        """The site cards; on PostgreSQL a passing fault within `timeout` (default: the reads' bound)."""
        return self._snapshot_of(*await self(self._snapshot_reads, timeout=timeout))

    async def snapshot_and(
        self, also: Callable[[], T], *, timeout: float | None = None
    ) -> tuple[EngineSnapshot, T]:
        """`snapshot`, and `also()` read in the same turn (one bound for both)."""

        def reads() -> tuple[tuple[dict[str, SiteCounts], float | None], T]:
            return self._snapshot_reads(), also()

        (counts, pushed), more = await self(reads, timeout=timeout)
        return self._snapshot_of(counts, pushed), more

    async def repository_detail(self, repository: str) -> RepositoryDetail:
        """Tags and digests of one repository on every site as last seen, with its rows and history."""
        seen, rows, history = await self(self._detail_reads, repository)
        sites = tuple(
            SiteTags(name, seen[name][0], seen_at=seen[name][1])
            if name in seen
            else SiteTags(name, None, "not seen yet: no sync or push copy of it has run")
            for name in self._engine._sites
        )
        return RepositoryDetail(repository, sites, rows, history)

    async def metrics(self, *, timeout: float | None = None) -> bytes:
        """/metrics' text: the repositories' counts read first, bounded (none while the database does
        not answer: geo_tui_tracking_database_up says so), then rendered on the loop."""
        engine = self._engine
        try:
            counts = await self(engine.tracking.counts, engine.secondary_names, timeout=timeout)
        except Exception as exc:
            if not is_passing_fault(exc):
                raise
            counts = {}
        return engine.metrics.render(counts)

    def _snapshot_reads(self) -> tuple[dict[str, SiteCounts], float | None]:
        engine = self._engine
        counts = engine.tracking.counts(engine.secondary_names)
        pushed = engine.tracking.oldest_queued_push()  # a push waiting for its copy is lag on every site
        return counts, pushed

    def _snapshot_of(self, counts: dict[str, SiteCounts], pushed: float | None) -> EngineSnapshot:
        engine = self._engine
        sites = engine.monitor.snapshots(counts, pushed, engine.discovery.primary_repositories)
        return EngineSnapshot(
            sites, engine.running, engine.paused, engine.scheduler.in_flight, tuple(engine.tasks_down())
        )

    def _detail_reads(self, repository: str) -> _Detail:
        tracking, names = self._engine.tracking, self._engine.secondary_names
        rows = tuple(r for name in names if (r := tracking.row(name, repository)) is not None)
        return tracking.tags_seen(repository), rows, tuple(tracking.repository_log(repository))
