"""The tracking database: what each secondary holds, what failed, and what is known where.

One SQLite file in WAL mode, or a PostgreSQL database (`postgres`; `dialect` holds what differs, and
`transfer` moves a SQLite file there), with a schema version and ordered migrations (`schema`). One row per
(secondary, repository) carries the sync state (pending, started, synced, failed, as GitLab Geo names
them) and, separately, the verification state. Rows are read by column name into the dataclasses of
`rows`, so the SQL column order never reaches the engine API's wire.

The modules, one idea each: `rows` (what a row means), `schema` (versions and migrations), `store`
(the file, its connections and transactions), `queue` (discovery and sync state), `claims` (due rows
claimed under leases by many workers, and the workers' rows), `verification`, `reads` (rows and
counts), `records` (notifications, blob locations, the event log) and `pushes` (pushes waiting for
their copy, and the tags last seen on each site), `streams` (blob streams in flight across the workers).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from geo_tui.config.model import EngineConfig

from .claims import LeaseClaims, WorkerRow, worker_id
from .pushes import PushClaim, PushRecords, QueuedPush
from .queue import SyncQueue
from .reads import RowReads
from .records import EVENT_LOG_LIMIT, NotificationBatch, PauseState, Records
from .rows import LogRecord, RepositoryRow, SiteCounts, SyncState, VerificationState
from .schema import MIGRATIONS, SCHEMA_VERSION, DatabaseDamaged, DatabaseTooNew, DatabaseUnusable, Migration
from .streams import BlobStreamRecords
from .verification import DEEP_PLAN_BATCH, VerificationRecords, deep_offset

if TYPE_CHECKING:
    from .postgres import PostgresDatabase

__all__ = [
    "DEEP_PLAN_BATCH",
    "EVENT_LOG_LIMIT",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "DatabaseDamaged",
    "DatabaseTooNew",
    "DatabaseUnusable",
    "LogRecord",
    "Migration",
    "NotificationBatch",
    "PauseState",
    "PushClaim",
    "QueuedPush",
    "RepositoryRow",
    "SiteCounts",
    "SyncState",
    "Tracking",
    "VerificationState",
    "WorkerRow",
    "deep_offset",
    "tracking_database",
    "tracking_exists",
    "worker_id",
]


class Tracking(
    LeaseClaims, SyncQueue, VerificationRecords, RowReads, Records, PushRecords, BlobStreamRecords
):
    """Thread-safe access to the tracking database: one connection (and lock) that writes, and one
    (and lock) that reads. In WAL mode a reader never waits for a writer, so whatever only reads
    (status, snapshots, /-/health, the scheduler's queue) stays fast while another process holds the
    write lock; writes wait for it at most ``busy_timeout`` seconds, then raise OperationalError.

    Opening for writing migrates the file to `SCHEMA_VERSION`; a file newer than that is refused
    (DatabaseTooNew) and a damaged one too (DatabaseDamaged), each with one line and nothing written."""


def tracking_database(engine: EngineConfig) -> Path | PostgresDatabase:
    """Where ``[engine]`` keeps the tracking database: the SQLite file, or the PostgreSQL database (with
    the password of ``database_password_file``; without one, libpq's PGPASSFILE)."""
    if engine.database_url is None:
        return engine.database
    from .postgres import PostgresDatabase

    password = engine.database_password.reveal() if engine.database_password is not None else None
    return PostgresDatabase(engine.database_url, password)


def tracking_exists(engine: EngineConfig) -> bool:
    """Whether there is a tracking database to read (a PostgreSQL one is created by its administrator)."""
    return engine.database_url is not None or engine.database.exists()
