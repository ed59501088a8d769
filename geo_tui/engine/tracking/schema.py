"""The tracking database's schema: a version stored in it, and the ordered migrations that reach it.

The version lives in the ``meta`` table (key ``schema_version``). Opening a database for writing
applies the migrations above its version, in order, in one transaction with the new version: a
failure leaves the file as it was. A database without a version was made before versions were
stored; migration 1 is written to bring any of those (or an empty file) to version 1, keeping every
row. A database newer than this code is refused with one line, before anything is written to it.

To change the schema, append a `Migration` with the next number to `MIGRATIONS`; never edit one that
has shipped. The version checks here do not depend on SQLite: PostgreSQL (`postgres`) keeps its own
list with the same numbers, from the same statements, and applies it the same way, under a lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from .dialect import SQLITE, Dialect

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "DatabaseDamaged",
    "DatabaseTooNew",
    "DatabaseUnusable",
    "Migration",
    "migrate",
    "pending",
    "stored_version",
]

VERSION_KEY = "schema_version"

# Where the database is, as errors name it: a SQLite file, or a PostgreSQL URL without its password.
Where = Path | str


class DatabaseUnusable(Exception):
    """The tracking database cannot be used as it is. ``str(e)`` is one line naming the file and what
    to do; the file is left as found."""

    def __init__(self, path: Where, message: str) -> None:
        self.path = path
        super().__init__(message)


class DatabaseDamaged(DatabaseUnusable):
    """The tracking database file is not a database or is damaged. ``str(e)`` is the one-line advice."""

    def __init__(self, path: Where, reason: str) -> None:
        super().__init__(
            path,
            f"tracking database {path} is damaged ({reason}): move it aside, with its -wal and -shm files, "
            "and run again; geo-tui rebuilds its state from the registries",
        )


class DatabaseTooNew(DatabaseUnusable):
    """The tracking database was migrated by a newer geo-tui: this one does not know its schema."""

    def __init__(self, path: Where, found: int, known: int) -> None:
        self.found, self.known = found, known
        other = "file" if isinstance(path, Path) else "database"
        super().__init__(
            path,
            f"tracking database {path} has schema version {found}, but this geo-tui knows versions up to "
            f"{known}: run the newer geo-tui that wrote it, or point [engine] database at another {other}",
        )


Connection = TypeVar("Connection")


@dataclass(frozen=True)
class Migration(Generic[Connection]):
    """One step of the schema: `apply` runs inside the migration's transaction (so it must not commit).
    Generic in the connection, so another backend's list has the same shape."""

    version: int
    summary: str
    apply: Callable[[Connection], None]


def _sql(*statements: str) -> Callable[[sqlite3.Connection], None]:
    """A migration made of SQL statements, run one by one (executescript would commit on its own)."""

    def apply(db: sqlite3.Connection) -> None:
        for statement in statements:
            db.execute(statement)

    return apply


# -- 1: the schema of the releases before versions were stored ---------------------------------------

FIRST_TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS repositories (
    site TEXT NOT NULL,
    repository TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    generation INTEGER NOT NULL DEFAULT 1,
    retry_count INTEGER NOT NULL DEFAULT 0,
    retry_at REAL,
    started_at REAL,
    last_synced_at REAL,
    last_sync_failure TEXT,
    tag_count INTEGER,
    bytes INTEGER,
    verification_state TEXT NOT NULL DEFAULT 'pending',
    verification_checksum TEXT,
    verified_at REAL,
    verification_failure TEXT,
    on_primary INTEGER NOT NULL DEFAULT 1,
    oldest_unsynced_event_at REAL,
    PRIMARY KEY (site, repository)
) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS repositories_due ON repositories (state, retry_at)",
    # (site, repository) pairs a sync ever started on: before the first, this engine wrote nothing there.
    """CREATE TABLE IF NOT EXISTS started_once (
    site TEXT NOT NULL,
    repository TEXT NOT NULL,
    PRIMARY KEY (site, repository)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS blob_locations (
    site TEXT NOT NULL,
    digest TEXT NOT NULL,
    repository TEXT NOT NULL,
    PRIMARY KEY (site, digest, repository)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    event_id TEXT,
    action TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT,
    digest TEXT
)""",
    """CREATE TABLE IF NOT EXISTS event_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    level TEXT NOT NULL,
    site TEXT,
    repository TEXT,
    message TEXT NOT NULL
)""",
)

# Columns those releases added one by one (deep verification): an unversioned file may lack any of them.
FIRST_ADDED_COLUMNS = (
    ("verification_depth", "TEXT"),
    ("deep_verified_at", "REAL"),
    ("recheck_blobs", "INTEGER NOT NULL DEFAULT 0"),
    ("next_deep_at", "REAL"),
)


# the deep schedule looks for due (and unplanned) rows every round: an index, not a scan of 100k
DEEP_INDEX = "CREATE INDEX IF NOT EXISTS repositories_deep ON repositories (next_deep_at)"


def _first_schema(db: sqlite3.Connection) -> None:
    """Create what is missing of the unversioned schema: an empty file gets it all, a file from any
    release before versions gains the columns added since it was made, and its rows keep their values."""
    _sql(*FIRST_TABLES)(db)
    have = SQLITE.columns(db, "repositories")
    for name, definition in FIRST_ADDED_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE repositories ADD COLUMN {name} {definition}")
    db.execute(DEEP_INDEX)


# Migration 2: pushes waiting for their copy, and the tags last seen on each site.
PUSH_TABLES = (
    # Pushes named by notification events, waiting for their copy (tag NULL: pushed by digest).
    """CREATE TABLE IF NOT EXISTS push_queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        received_at REAL NOT NULL,
        repository TEXT NOT NULL,
        tag TEXT,
        digest TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS push_queue_repository ON push_queue (repository, id)",
    # What the engine last saw: tag -> digest on the primary and on each secondary, and when.
    """CREATE TABLE IF NOT EXISTS tags_seen (
        site TEXT NOT NULL,
        repository TEXT NOT NULL,
        tag TEXT NOT NULL,
        digest TEXT NOT NULL,
        seen_at REAL NOT NULL,
        PRIMARY KEY (site, repository, tag)
    ) WITHOUT ROWID""",
)

# Migration 3: the repositories rows as a queue that many workers claim (issue 16), and the workers.
LEASE_STATEMENTS = (
    # Who holds a started row, and until when: a lease its worker renews, or loses when it expires.
    "ALTER TABLE repositories ADD COLUMN lease_owner TEXT",
    "ALTER TABLE repositories ADD COLUMN lease_until REAL",
    # The generation the lease's run works for: if new work came meanwhile, an expired lease is due now.
    "ALTER TABLE repositories ADD COLUMN lease_generation INTEGER",
    # The claim query's rows in its order (`claims.DUE_ORDER`): a claim reads the first few, not the table.
    """CREATE INDEX IF NOT EXISTS repositories_claim ON repositories
        (COALESCE(oldest_unsynced_event_at, 9e18), retry_count, repository)
        WHERE on_primary = 1 AND state IN ('pending', 'failed')""",
    # Rows running now, per site (the caps) and by lease end (the expiry sweep).
    "CREATE INDEX IF NOT EXISTS repositories_leases ON repositories (state, site, lease_until)",
    # One row per worker process (id: host/pid/start time): its heartbeat, addresses and work in hand.
    """CREATE TABLE IF NOT EXISTS workers (
        id TEXT PRIMARY KEY,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL,
        listen TEXT NOT NULL DEFAULT '',
        working INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
)

# Migration 4: what each worker copies per second, stamped with its heartbeat (issue 16's workers view);
# NULL until its heartbeat says, so a worker that does not measure it never reads as copying nothing.
WORKER_THROUGHPUT_STATEMENTS = ("ALTER TABLE workers ADD COLUMN throughput REAL",)

# Migration 5: leases on the push queue (issue 16), so that many workers share the push copies out and
# one repository's pushes are copied by one worker at a time (`pushes.PushRecords.claim_pushes`).
PUSH_LEASE_STATEMENTS = (
    "ALTER TABLE push_queue ADD COLUMN lease_owner TEXT",
    "ALTER TABLE push_queue ADD COLUMN lease_until REAL",
)

# Migration 6: blobs being streamed into a secondary, one worker at a time per (site, digest) across every
# worker of the database (issue 16).
BLOB_STREAM_STATEMENTS = (
    # `owner` streams `digest` into `site` (into its `repository`) under a lease it renews until `until`;
    # another worker that needs the blob waits for the row to go, then mounts it from where it landed.
    """CREATE TABLE IF NOT EXISTS blob_streams (
        site TEXT NOT NULL,
        digest TEXT NOT NULL,
        owner TEXT NOT NULL,
        until REAL NOT NULL,
        repository TEXT NOT NULL,
        PRIMARY KEY (site, digest)
    ) WITHOUT ROWID""",
    # The heartbeat renews a worker's rows, and clears the ones whose lease ran out.
    "CREATE INDEX IF NOT EXISTS blob_streams_owner ON blob_streams (owner)",
)

# Migration 7: which worker logged each event-log line (issue 16: a console attached to one worker shows
# the others' lines, saying whose). PostgreSQL adds triggers that announce changed rows and new log lines
# to every worker (`postgres.CHANGE_STATEMENTS`); SQLite has one engine per file, which tells its own.
EVENT_LOG_WORKER_STATEMENTS = ("ALTER TABLE event_log ADD COLUMN worker TEXT",)

# Migration 8: the server process of the session holding the leadership lock, stamped by the worker that
# holds it (issue 16): a contender finds whose heartbeat stands behind a lock it cannot get (a frozen
# leader's), and a leader's duty writes check it (`dialect.check_fence`). NULL on every other row.
LEADER_STATEMENTS = ("ALTER TABLE workers ADD COLUMN leader_pid INTEGER",)

# Append the next one here, never edit one that shipped: Migration(2, "what it adds", _sql("CREATE ...")).
MIGRATIONS: tuple[Migration[sqlite3.Connection], ...] = (
    Migration(1, "the tables of the releases before schema versions", _first_schema),
    Migration(
        2,
        "pushes waiting for their copy, and the tags last seen on each site (issue 17)",
        _sql(*PUSH_TABLES),
    ),
    Migration(3, "leases on the repositories rows, and the workers (issue 16)", _sql(*LEASE_STATEMENTS)),
    Migration(4, "each worker's throughput (issue 16)", _sql(*WORKER_THROUGHPUT_STATEMENTS)),
    Migration(5, "leases on the push queue (issue 16)", _sql(*PUSH_LEASE_STATEMENTS)),
    Migration(6, "blob streams in flight across the workers (issue 16)", _sql(*BLOB_STREAM_STATEMENTS)),
    Migration(
        7, "the worker of each log line, and changes announced (issue 16)", _sql(*EVENT_LOG_WORKER_STATEMENTS)
    ),
    Migration(8, "the leader's session (issue 16)", _sql(*LEADER_STATEMENTS)),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def pending(found: int, migrations: Sequence[Migration[Any]], path: Where) -> list[Migration[Any]]:
    """The migrations to apply to a database at version `found`, in order; DatabaseTooNew if `found`
    is above the last one known. Checks that the list is numbered 1, 2, 3, ... without gaps."""
    numbers = [m.version for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"migrations must be numbered 1..{len(numbers)} in order, not {numbers}")
    if found > len(migrations):
        raise DatabaseTooNew(path, found, len(migrations))
    return list(migrations[found:])


def stored_version(db: Any, path: Where, dialect: Dialect = SQLITE) -> int:
    """The schema version the database holds, or 0 if none is stored: an empty file, or a file from the
    releases before versions, which are all version 1 once migration 1 has completed them. Reads only."""
    if not dialect.has_table(db, "meta"):
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = ?", (VERSION_KEY,)).fetchone()
    if row is None:
        return 0
    try:
        version = int(row[0])
    except (TypeError, ValueError):
        version = 0
    if version < 1:
        raise DatabaseDamaged(path, f"its schema version {row[0]!r} is not a version")
    return version


def migrate(
    db: Any,
    path: Where,
    migrations: Sequence[Migration[Any]] = MIGRATIONS,
    dialect: Dialect = SQLITE,
) -> tuple[int, int]:
    """Bring the database on connection `db` (autocommit mode) to the last of `migrations` in one
    transaction, under the dialect's lock; returns (version found, version now). Raises DatabaseTooNew,
    having written nothing, for a database newer than `migrations`."""
    # refuse a newer database before taking the write lock
    pending(stored_version(db, path, dialect), migrations, path)
    dialect.begin(db)
    try:
        dialect.lock_migrations(db)
        found = stored_version(
            db, path, dialect
        )  # again under the lock: another process may have migrated it
        steps = pending(found, migrations, path)
        for migration in steps:
            migration.apply(db)
        if steps:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (VERSION_KEY, str(steps[-1].version)),
            )
    except BaseException:
        dialect.rollback(db)
        raise
    db.execute("COMMIT")
    return found, steps[-1].version if steps else found
