"""The tracking database: what each secondary holds, what failed, and what is known where.

One SQLite file in WAL mode, with a schema version and ordered migrations (`schema`). One row per
(secondary, repository) carries the sync state (pending, started, synced, failed, as GitLab Geo names
them) and, separately, the verification state. Rows are read by column name into the dataclasses of
`rows`, so the SQL column order never reaches the engine API's wire.

The modules, one idea each: `rows` (what a row means), `schema` (versions and migrations), `store`
(the file, its connections and transactions), `queue` (discovery and sync state), `verification`,
`reads` (rows and counts), `records` (notifications, blob locations, the event log) and `pushes` (pushes
waiting for their copy, and the tags last seen on each site).
"""

from __future__ import annotations

from .pushes import PushRecords, QueuedPush
from .queue import SyncQueue
from .reads import RowReads
from .records import EVENT_LOG_LIMIT, Records
from .rows import LogRecord, RepositoryRow, SiteCounts, SyncState, VerificationState
from .schema import MIGRATIONS, SCHEMA_VERSION, DatabaseDamaged, DatabaseTooNew, DatabaseUnusable, Migration
from .verification import DEEP_PLAN_BATCH, VerificationRecords, deep_offset

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
    "QueuedPush",
    "RepositoryRow",
    "SiteCounts",
    "SyncState",
    "Tracking",
    "VerificationState",
    "deep_offset",
]


class Tracking(SyncQueue, VerificationRecords, RowReads, Records, PushRecords):
    """Thread-safe access to the tracking database: one connection (and lock) that writes, and one
    (and lock) that reads. In WAL mode a reader never waits for a writer, so whatever only reads
    (status, snapshots, /-/health, the scheduler's queue) stays fast while another process holds the
    write lock; writes wait for it at most ``busy_timeout`` seconds, then raise OperationalError.

    Opening for writing migrates the file to `SCHEMA_VERSION`; a file newer than that is refused
    (DatabaseTooNew) and a damaged one too (DatabaseDamaged), each with one line and nothing written."""
