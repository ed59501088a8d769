"""The tracking database: what each secondary holds, what failed, and what is known where.

One SQLite file in WAL mode. One row per (secondary, repository) carries the sync state
(pending, started, synced, failed, as GitLab Geo names them) and, separately, the verification
state. A ``generation`` counter is bumped whenever new work is asked for a row (an event, a
resync); a sync marks the row synced only if the generation it started with is still current,
so an event that lands during a copy queues the repository again instead of being lost.
"""

from __future__ import annotations

import enum
import hashlib
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LogRecord",
    "QueuedPush",
    "RepositoryRow",
    "SiteCounts",
    "SyncState",
    "Tracking",
    "VerificationState",
]

EVENT_LOG_LIMIT = 10_000
DEEP_PLAN_BATCH = 1000  # rows given their first deep-verification slot per call of deep_due


def deep_offset(site: str, repository: str, interval: float) -> float:
    """Where in the deep-verification interval a row's first check falls: the same for a name every time,
    and spread evenly over the interval across names."""
    digest = hashlib.sha256(f"{site}\x00{repository}".encode()).digest()
    return interval * int.from_bytes(digest[:8], "big") / 2**64


class SyncState(enum.StrEnum):
    PENDING = "pending"
    STARTED = "started"
    SYNCED = "synced"
    FAILED = "failed"


class VerificationState(enum.StrEnum):
    PENDING = "pending"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS repositories (
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
    verification_depth TEXT,
    deep_verified_at REAL,
    recheck_blobs INTEGER NOT NULL DEFAULT 0,
    next_deep_at REAL,
    PRIMARY KEY (site, repository)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS repositories_due ON repositories (state, retry_at);
-- (site, repository) pairs a sync ever started on: before the first, this engine wrote nothing there.
CREATE TABLE IF NOT EXISTS started_once (
    site TEXT NOT NULL,
    repository TEXT NOT NULL,
    PRIMARY KEY (site, repository)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blob_locations (
    site TEXT NOT NULL,
    digest TEXT NOT NULL,
    repository TEXT NOT NULL,
    PRIMARY KEY (site, digest, repository)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    event_id TEXT,
    action TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT,
    digest TEXT
);
-- Pushes named by notification events, waiting for their copy (tag NULL: pushed by digest only).
CREATE TABLE IF NOT EXISTS push_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT,
    digest TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS push_queue_repository ON push_queue (repository, id);
-- What the engine last saw: tag -> digest on the primary and on each secondary, and when.
CREATE TABLE IF NOT EXISTS tags_seen (
    site TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (site, repository, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    level TEXT NOT NULL,
    site TEXT,
    repository TEXT,
    message TEXT NOT NULL
);
"""

# Columns added after the first release, with their definitions: an older database gains them on open.
_ADDED_COLUMNS = (
    ("verification_depth", "TEXT"),
    ("deep_verified_at", "REAL"),
    ("recheck_blobs", "INTEGER NOT NULL DEFAULT 0"),
    ("next_deep_at", "REAL"),
)

_ROW_COLUMNS = (
    "site, repository, state, generation, retry_count, retry_at, started_at, last_synced_at, "
    "last_sync_failure, tag_count, bytes, verification_state, verification_checksum, verified_at, "
    "verification_failure, on_primary, oldest_unsynced_event_at, verification_depth, deep_verified_at, "
    "recheck_blobs"
)


@dataclass(frozen=True)
class RepositoryRow:
    """The tracked state of one repository on one secondary."""

    site: str
    repository: str
    state: SyncState
    generation: int
    retry_count: int
    retry_at: float | None
    started_at: float | None
    last_synced_at: float | None
    last_sync_failure: str | None
    tag_count: int | None
    bytes: int | None
    verification_state: VerificationState
    verification_checksum: str | None
    verified_at: float | None
    verification_failure: str | None
    on_primary: bool
    oldest_unsynced_event_at: float | None
    # How deep the last verification went (checksum, deep, content; None before the first), when the
    # last deep or content one ran, and whether the next sync must look at the blobs of matching tags.
    verification_depth: str | None = None
    deep_verified_at: float | None = None
    recheck_blobs: bool = False

    @classmethod
    def _from_sql(cls, row: Sequence[object]) -> RepositoryRow:
        values = list(row)
        values[2] = SyncState(str(values[2]))
        values[11] = VerificationState(str(values[11]))
        values[15] = bool(values[15])
        if len(values) > 19:
            values[19] = bool(values[19])
        return cls(*values)  # type: ignore[arg-type]

    @property
    def key(self) -> tuple[str, str]:
        return (self.site, self.repository)


@dataclass(frozen=True)
class SiteCounts:
    """Counts of one secondary's rows, the figures of GitLab's Geo dashboard."""

    site: str
    total: int
    pending: int
    started: int
    synced: int
    failed: int
    verified: int
    verification_failed: int
    verification_pending: int
    bytes: int
    oldest_unsynced_event_at: float | None

    @property
    def percent_synced(self) -> float:
        """Percent synced to 2 decimals, rounded down: 100.0 only when every repository is synced."""
        return (10000 * self.synced // self.total) / 100 if self.total else 100.0


@dataclass(frozen=True)
class QueuedPush:
    """One push a notification named: its tag (None when pushed by digest only) and manifest digest."""

    id: int
    received_at: float
    repository: str
    tag: str | None
    digest: str


@dataclass(frozen=True)
class LogRecord:
    id: int
    at: float
    level: str
    site: str | None
    repository: str | None
    message: str


# The columns holding free text (from registries' answers): what `redact` applies to.
_FREE_TEXT = (
    ("repositories", "last_sync_failure"),
    ("repositories", "verification_failure"),
    ("event_log", "message"),
)


def _owner_only(path: Path) -> None:
    """Make the database at `path` and its -wal and -shm sidecars owner-only (0600): created so, and
    narrowed if an older run left them readable. SQLite gives new sidecars the database file's mode."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    os.close(fd)
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with suppress(FileNotFoundError):
            if file.stat().st_mode & 0o077:
                os.chmod(file, 0o600)


class Tracking:
    """Thread-safe access to the tracking database (one connection, one lock)."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] | None = None,
        read_only: bool = False,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        """Open (and create) the tracking database; `read_only` opens an existing one to read beside
        the engine that holds it (WAL lets readers read while it writes). `redact` is applied to every
        free text stored (failure reasons, log lines): the configured secrets never reach the file."""
        self.path = path
        self._clock = clock or time.time
        self._redact = redact or (lambda text: text)
        self._lock = threading.RLock()
        self._log_inserts = 0
        self._notification_inserts = 0
        if read_only:
            uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"
            self._db = sqlite3.connect(
                uri, uri=True, check_same_thread=False, isolation_level=None, timeout=10.0
            )
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        _owner_only(path)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against a killed process in WAL mode; only power loss may drop the tail.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(_SCHEMA)  # executescript commits on its own
            self._add_columns()

    def _add_columns(self) -> None:
        """Bring a database made by an older geo-tui up to date: its rows keep their values."""
        have = {str(r[1]) for r in self._db.execute("PRAGMA table_info(repositories)").fetchall()}
        for name, definition in _ADDED_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE repositories ADD COLUMN {name} {definition}")
        # the deep schedule looks for due (and unplanned) rows every round: an index, not a scan of 100k
        self._db.execute("CREATE INDEX IF NOT EXISTS repositories_deep ON repositories (next_deep_at)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())

    def now(self) -> float:
        """The clock rows are stamped with."""
        return self._clock()

    @property
    def journal_mode(self) -> str:
        return str(self._query("PRAGMA journal_mode")[0][0])

    # -- discovery -------------------------------------------------------------------------

    def ensure_rows(self, site: str, repositories: Iterable[str]) -> int:
        """Create pending rows for repositories not tracked yet; mark all given ones as on the primary."""
        with self._tx() as db:
            before = db.total_changes
            db.executemany(
                "INSERT INTO repositories (site, repository) VALUES (?, ?) "
                "ON CONFLICT (site, repository) DO UPDATE SET on_primary = 1 WHERE on_primary = 0",
                [(site, repo) for repo in repositories],
            )
            return db.total_changes - before

    def mark_absent_from_primary(self, site: str, present: set[str]) -> list[str]:
        """Flag rows whose repository the primary's catalog no longer lists. Returns their names."""
        gone = [r for r in self.repository_names(site) if r not in present]
        with self._tx() as db:
            db.executemany(
                "UPDATE repositories SET on_primary = 0 WHERE site = ? AND repository = ?",
                [(site, r) for r in gone],
            )
        return gone

    def repository_names(self, site: str) -> list[str]:
        rows = self._query("SELECT repository FROM repositories WHERE site = ? ORDER BY repository", (site,))
        return [str(r[0]) for r in rows]

    # -- sync state ------------------------------------------------------------------------

    def recover_started(self) -> int:
        """Rows left in ``started`` by a crashed or killed engine go back to pending."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE repositories SET state = 'pending', started_at = NULL, retry_at = NULL "
                "WHERE state = 'started'"
            )
            db.execute(
                "UPDATE repositories SET verification_state = 'pending' WHERE verification_state = 'started'"
            )
            return cur.rowcount

    def due(
        self,
        now: float,
        *,
        sites: Sequence[str] | None = None,
        repositories: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[RepositoryRow]:
        """Rows ready to run: pending ones, and failed ones whose retry time has come."""
        where, params = self._selection(sites, repositories)
        sql = (
            f"SELECT {_ROW_COLUMNS} FROM repositories WHERE on_primary = 1 AND "
            "(state = 'pending' OR (state = 'failed' AND retry_at IS NOT NULL AND retry_at <= ?)) "
            f"AND {where}"
        )
        params.insert(0, now)
        sql += " ORDER BY COALESCE(oldest_unsynced_event_at, 9e18), retry_count, repository LIMIT ?"
        params.append(limit)
        return [RepositoryRow._from_sql(r) for r in self._query(sql, params)]

    def next_retry_at(self, *, sites: Sequence[str] | None = None) -> float | None:
        sql = "SELECT MIN(retry_at) FROM repositories WHERE on_primary = 1 AND state = 'failed'"
        params: list[object] = []
        if sites is not None:
            sql += f" AND site IN ({','.join('?' * len(sites))})"
            params.extend(sites)
        value = self._query(sql, params)[0][0]
        return float(value) if value is not None else None  # type: ignore[arg-type]

    def mark_started(self, site: str, repository: str) -> int:
        """Move a row to started; returns the generation this run works for. Remembers, for good,
        that a sync started there (see `never_started`)."""
        now = self._clock()
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO started_once (site, repository) VALUES (?, ?)", (site, repository)
            )
            db.execute(
                "UPDATE repositories SET state = 'started', started_at = ? WHERE site = ? AND repository = ?",
                (now, site, repository),
            )
            row = db.execute(
                "SELECT generation FROM repositories WHERE site = ? AND repository = ?", (site, repository)
            ).fetchone()
        return int(row[0])

    def never_started(self, site: str, repository: str) -> bool:
        """True until the first `mark_started` of (site, repository): this engine never wrote there,
        whatever became of the row since (a crash, a cancel, a resync)."""
        rows = self._query("SELECT 1 FROM started_once WHERE site = ? AND repository = ?", (site, repository))
        return not rows

    def mark_synced(
        self, site: str, repository: str, generation: int, *, tag_count: int, size: int | None
    ) -> bool:
        """Synced only if no new work came during the run; otherwise back to pending. True if synced."""
        now = self._clock()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE repositories SET state = 'synced', retry_count = 0, retry_at = NULL, "
                "started_at = NULL, "
                "last_synced_at = ?, last_sync_failure = NULL, tag_count = ?, bytes = COALESCE(?, bytes), "
                "oldest_unsynced_event_at = NULL, recheck_blobs = 0 "
                "WHERE site = ? AND repository = ? AND state = 'started' AND generation = ?",
                (now, tag_count, size, site, repository, generation),
            )
            if cur.rowcount:
                return True
            db.execute(
                "UPDATE repositories SET state = 'pending', started_at = NULL, tag_count = ? "
                "WHERE site = ? AND repository = ? AND state = 'started'",
                (tag_count, site, repository),
            )
            return False

    def mark_failed(self, site: str, repository: str, reason: str, retry_at: float | None) -> int:
        """Record a failure; returns the new retry count."""
        with self._tx() as db:
            db.execute(
                "UPDATE repositories SET state = 'failed', retry_count = retry_count + 1, retry_at = ?, "
                "started_at = NULL, last_sync_failure = ? WHERE site = ? AND repository = ?",
                (retry_at, self._redact(reason)[:2000], site, repository),
            )
            row = db.execute(
                "SELECT retry_count FROM repositories WHERE site = ? AND repository = ?", (site, repository)
            ).fetchone()
        return int(row[0]) if row else 0

    def mark_pending(self, site: str, repository: str) -> None:
        """Put a started row back to pending (engine shutting down mid-copy)."""
        with self._tx() as db:
            db.execute(
                "UPDATE repositories SET state = 'pending', started_at = NULL "
                "WHERE site = ? AND repository = ? AND state = 'started'",
                (site, repository),
            )

    def request_sync(
        self,
        *,
        sites: Sequence[str] | None = None,
        repositories: Sequence[str] | None = None,
        failed_only: bool = False,
        event_at: float | None = None,
        recheck_blobs: bool = False,
    ) -> int:
        """Queue rows for a sync: bump their generation so a run in progress will run again.
        ``recheck_blobs``: that sync also looks at the blobs of tags that already match (it stays asked
        for until a sync of the row succeeds)."""
        where, params = self._selection(sites, repositories)
        if failed_only:
            where += " AND state = 'failed'"
        with self._tx() as db:
            cur = db.execute(
                "UPDATE repositories SET generation = generation + 1, retry_at = NULL, retry_count = 0, "
                f"{'recheck_blobs = 1, ' if recheck_blobs else ''}"
                "state = CASE WHEN state = 'started' THEN 'started' ELSE 'pending' END, "
                "oldest_unsynced_event_at = CASE WHEN ? IS NULL THEN oldest_unsynced_event_at "
                "ELSE MIN(COALESCE(oldest_unsynced_event_at, ?), ?) END "
                f"WHERE {where}",
                [event_at, event_at, event_at, *params],
            )
            return cur.rowcount

    def _selection(
        self, sites: Sequence[str] | None, repositories: Sequence[str] | None
    ) -> tuple[str, list[object]]:
        where = "1 = 1"
        params: list[object] = []
        if sites is not None:
            where += f" AND site IN ({','.join('?' * len(sites))})"
            params.extend(sites)
        if repositories is not None:
            where += f" AND repository IN ({','.join('?' * len(repositories))})"
            params.extend(repositories)
        return where, params

    def record_notifications(
        self,
        events: Sequence[tuple[str, str, str, str | None, str | None]],
        rows: Iterable[tuple[str, str]],
        received_at: float,
        pushes: Sequence[tuple[str, str | None, str]] = (),
        push_rows: Iterable[tuple[str, str]] = (),
    ) -> int:
        """Store received events, queue their (site, repository) rows for a whole-repository run and
        their ``pushes`` (repository, tag, digest) for a copy of what they name, in one transaction:
        once this returns, a killed process still replicates them after a restart. ``push_rows`` are
        tracked (created if new) without queueing a run. Returns rows and pushes queued."""
        with self._tx() as db:
            db.executemany(
                "INSERT INTO notifications (received_at, event_id, action, repository, tag, digest) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(received_at, *event) for event in events],
            )
            db.executemany(
                "INSERT INTO push_queue (received_at, repository, tag, digest) VALUES (?, ?, ?, ?)",
                [(received_at, *push) for push in pushes],
            )
            db.executemany(
                "INSERT INTO repositories (site, repository) VALUES (?, ?) "
                "ON CONFLICT (site, repository) DO UPDATE SET on_primary = 1 WHERE on_primary = 0",
                list(push_rows),
            )
            before = db.total_changes
            db.executemany(
                "INSERT INTO repositories (site, repository, oldest_unsynced_event_at) VALUES (?, ?, ?) "
                "ON CONFLICT (site, repository) DO UPDATE SET generation = generation + 1, retry_at = NULL, "
                "retry_count = 0, on_primary = 1, "
                "state = CASE WHEN state = 'started' THEN 'started' ELSE 'pending' END, "
                "oldest_unsynced_event_at = MIN(COALESCE(oldest_unsynced_event_at, "
                "excluded.oldest_unsynced_event_at), excluded.oldest_unsynced_event_at)",
                [(site, repo, received_at) for site, repo in rows],
            )
            queued = db.total_changes - before + len(pushes)
            self._notification_inserts += len(events)
            if self._notification_inserts >= 1000:
                self._notification_inserts = 0
                db.execute(
                    "DELETE FROM notifications WHERE id <= (SELECT MAX(id) FROM notifications) - ?",
                    (EVENT_LOG_LIMIT,),
                )
        return queued

    def queued_pushes(self, limit: int = 10_000) -> list[QueuedPush]:
        """Pushes waiting for their copy, oldest first."""
        rows = self._query(
            "SELECT id, received_at, repository, tag, digest FROM push_queue ORDER BY id LIMIT ?", (limit,)
        )
        return [QueuedPush(*r) for r in rows]  # type: ignore[arg-type]

    def push_queue_depth(self) -> int:
        (count,) = self._query("SELECT COUNT(*) FROM push_queue")[0]
        return int(str(count))

    def oldest_queued_push(self) -> float | None:
        (oldest,) = self._query("SELECT MIN(received_at) FROM push_queue")[0]
        return float(str(oldest)) if oldest is not None else None

    def enqueue_pushes(self, pushes: Sequence[QueuedPush]) -> None:
        """Queue pushes again (copied while a whole-repository run was writing the same repository)."""
        with self._tx() as db:
            db.executemany(
                "INSERT INTO push_queue (received_at, repository, tag, digest) VALUES (?, ?, ?, ?)",
                [(p.received_at, p.repository, p.tag, p.digest) for p in pushes],
            )

    def done_pushes(self, ids: Sequence[int]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM push_queue WHERE id = ?", [(i,) for i in ids])

    # -- what was seen where -----------------------------------------------------------------

    def record_tags_seen(self, site: str, repository: str, tags: dict[str, str], *, complete: bool) -> None:
        """Remember tag -> digest as seen on ``site`` now. ``complete``: these are all its tags
        (a whole-repository run read them), so tags not named are forgotten."""
        now = self._clock()
        with self._tx() as db:
            if complete:
                db.execute("DELETE FROM tags_seen WHERE site = ? AND repository = ?", (site, repository))
            db.executemany(
                "INSERT INTO tags_seen (site, repository, tag, digest, seen_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (site, repository, tag) DO UPDATE SET digest = excluded.digest, "
                "seen_at = excluded.seen_at",
                [(site, repository, tag, digest, now) for tag, digest in tags.items()],
            )

    def tags_seen(self, repository: str) -> dict[str, tuple[dict[str, str], float]]:
        """Site -> (tag -> digest, when last seen) for one repository, as the engine last saw it."""
        seen: dict[str, tuple[dict[str, str], float]] = {}
        for site, tag, digest, at in self._query(
            "SELECT site, tag, digest, seen_at FROM tags_seen WHERE repository = ? ORDER BY site, tag",
            (repository,),
        ):
            tags, latest = seen.get(str(site), ({}, 0.0))
            tags[str(tag)] = str(digest)
            seen[str(site)] = (tags, max(latest, float(at)))  # type: ignore[arg-type]
        return seen

    # -- verification ----------------------------------------------------------------------

    def request_verify(
        self, *, sites: Sequence[str] | None = None, repositories: Sequence[str] | None = None
    ) -> int:
        where, params = self._selection(sites, repositories)
        with self._tx() as db:
            return db.execute(
                f"UPDATE repositories SET verification_state = 'pending' WHERE {where}", params
            ).rowcount

    def mark_verification(
        self,
        site: str,
        repository: str,
        state: VerificationState,
        *,
        checksum: str | None = None,
        failure: str | None = None,
        depth: str | None = None,
        next_deep_at: float | None = None,
    ) -> None:
        """Record a verification's state; a finished one (succeeded, failed) also records its time and
        ``depth``, and a deep or content one when the schedule looks again (``next_deep_at``)."""
        now = self._clock()
        done = state in (VerificationState.SUCCEEDED, VerificationState.FAILED)
        deep = done and depth in ("deep", "content")
        failure = failure and self._redact(failure)
        params: list[object] = [str(state), checksum, done, now, failure, done, depth, deep, now, deep]
        params += [next_deep_at, site, repository]
        with self._tx() as db:
            db.execute(
                "UPDATE repositories SET verification_state = ?, verification_checksum = COALESCE(?, "
                "verification_checksum), verified_at = CASE WHEN ? THEN ? ELSE verified_at END, "
                "verification_failure = ?, "
                "verification_depth = CASE WHEN ? THEN ? ELSE verification_depth END, "
                "deep_verified_at = CASE WHEN ? THEN ? ELSE deep_verified_at END, "
                "next_deep_at = CASE WHEN ? THEN COALESCE(?, next_deep_at) ELSE next_deep_at END "
                "WHERE site = ? AND repository = ?",
                params,
            )

    def verification_due(
        self, *, sites: Sequence[str] | None = None, limit: int = 1000
    ) -> list[RepositoryRow]:
        sql = (
            f"SELECT {_ROW_COLUMNS} FROM repositories WHERE on_primary = 1 AND state = 'synced' "
            "AND verification_state = 'pending'"
        )
        params: list[object] = []
        if sites is not None:
            sql += f" AND site IN ({','.join('?' * len(sites))})"
            params.extend(sites)
        sql += " ORDER BY repository LIMIT ?"
        params.append(limit)
        return [RepositoryRow._from_sql(r) for r in self._query(sql, params)]

    def deep_due(
        self, now: float, interval: float, *, sites: Sequence[str] | None = None, limit: int = 2
    ) -> list[RepositoryRow]:
        """Synced rows whose scheduled deep verification has come, the longest overdue first.

        A row gets its first slot at a fixed point of the interval drawn from a hash of its site and name
        (`deep_offset`), so rows synced together (a backfill, an upgrade) are not all due together. Up to
        DEEP_PLAN_BATCH rows are planned per call, so a first call on 100k rows does not hold the database."""
        # `+site`, `+state`: the planner must walk the next_deep_at index, not every row of a site or state
        where = "1 = 1" if sites is None else f"+site IN ({','.join('?' * len(sites))})"
        params: list[object] = list(sites or ())
        with self._tx() as db:
            unplanned = db.execute(
                f"SELECT site, repository FROM repositories WHERE next_deep_at IS NULL AND {where} LIMIT ?",
                [*params, DEEP_PLAN_BATCH],
            ).fetchall()
            db.executemany(
                "UPDATE repositories SET next_deep_at = ? WHERE site = ? AND repository = ?",
                [(now + deep_offset(str(s), str(r), interval), s, r) for s, r in unplanned],
            )
        sql = (
            f"SELECT {_ROW_COLUMNS} FROM repositories WHERE next_deep_at <= ? AND on_primary = 1 "
            f"AND +state = 'synced' AND verification_state != 'started' AND {where} "
            "ORDER BY next_deep_at LIMIT ?"
        )
        rows = self._query(sql, [now, *params, limit])
        return [RepositoryRow._from_sql(r) for r in rows]

    # -- reading ---------------------------------------------------------------------------

    def row(self, site: str, repository: str) -> RepositoryRow | None:
        rows = self._query(
            f"SELECT {_ROW_COLUMNS} FROM repositories WHERE site = ? AND repository = ?", (site, repository)
        )
        return RepositoryRow._from_sql(rows[0]) if rows else None

    def rows(
        self,
        *,
        sites: Sequence[str] | None = None,
        states: Sequence[SyncState] | None = None,
        limit: int | None = None,
        offset: int = 0,
        contains: str | None = None,
    ) -> list[RepositoryRow]:
        where, params = self._selection(sites, None)
        if states is not None:
            where += f" AND state IN ({','.join('?' * len(states))})"
            params.extend(str(s) for s in states)
        if contains:  # instr, not LIKE: no wildcards to escape in a repository name
            where += " AND instr(repository, ?) > 0"
            params.append(contains)
        sql = f"SELECT {_ROW_COLUMNS} FROM repositories WHERE {where} ORDER BY site, repository"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params.extend([limit, offset])
        return [RepositoryRow._from_sql(r) for r in self._query(sql, params)]

    def counts(self, sites: Sequence[str]) -> dict[str, SiteCounts]:
        """Per-site counts over the repositories the primary still has."""
        raw = {
            str(r[0]): r
            for r in self._query(
                "SELECT site, COUNT(*), SUM(state = 'pending'), SUM(state = 'started'), "
                "SUM(state = 'synced'), "
                "SUM(state = 'failed'), SUM(verification_state = 'succeeded'), "
                "SUM(verification_state = 'failed'), SUM(verification_state IN ('pending', 'started')), "
                "SUM(COALESCE(bytes, 0)), MIN(oldest_unsynced_event_at) "
                "FROM repositories WHERE on_primary = 1 GROUP BY site"
            )
        }
        result: dict[str, SiteCounts] = {}
        for site in sites:
            r = raw.get(site)
            if r is None:
                result[site] = SiteCounts(site, 0, 0, 0, 0, 0, 0, 0, 0, 0, None)
                continue
            n = [int(v or 0) for v in r[1:10]]  # type: ignore[call-overload]
            oldest = float(r[10]) if r[10] is not None else None  # type: ignore[arg-type]
            result[site] = SiteCounts(site, n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7], n[8], oldest)
        return result

    def verification_depths(self, sites: Sequence[str]) -> dict[str, dict[str, object]]:
        """Per site: repositories by the depth of their last verification ("never" for none yet), and
        the oldest deep or content verification (None if a repository never had one)."""
        result: dict[str, dict[str, object]] = {
            site: {"checksum": 0, "deep": 0, "content": 0, "never": 0, "oldest_deep": None} for site in sites
        }
        for site, depth, count in self._query(
            "SELECT site, COALESCE(verification_depth, 'never'), COUNT(*) FROM repositories "
            "WHERE on_primary = 1 GROUP BY site, verification_depth"
        ):
            if site in result and depth in result[str(site)]:
                result[str(site)][str(depth)] = int(count)  # type: ignore[call-overload]
        for site, never, oldest in self._query(
            "SELECT site, SUM(deep_verified_at IS NULL), MIN(deep_verified_at) FROM repositories "
            "WHERE on_primary = 1 GROUP BY site"
        ):
            if site in result and not never:
                result[str(site)]["oldest_deep"] = oldest
        return result

    # -- blob locations ----------------------------------------------------------------------

    def add_blob_locations(self, site: str, repository: str, digests: Iterable[str]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO blob_locations (site, digest, repository) VALUES (?, ?, ?)",
                [(site, d, repository) for d in digests],
            )

    def blob_sources(self, site: str, digest: str, *, exclude: str, limit: int = 3) -> list[str]:
        """Repositories on ``site`` known to hold ``digest``: candidates for a cross-repository mount."""
        rows = self._query(
            "SELECT repository FROM blob_locations WHERE site = ? AND digest = ? AND repository != ? LIMIT ?",
            (site, digest, exclude, limit),
        )
        return [str(r[0]) for r in rows]

    def forget_blob_location(self, site: str, digest: str, repository: str) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM blob_locations WHERE site = ? AND digest = ? AND repository = ?",
                (site, digest, repository),
            )

    def redact_stored(self) -> int:
        """Apply `redact` to the free text already stored, which a geo-tui from before redaction may have
        written; returns how many texts changed. Only failure reasons and the capped event log hold free
        text, so this costs what they hold, not the repository count."""
        redact = self._redact
        with self._lock:
            self._db.create_function("geo_tui_redact", 1, lambda t: t if t is None else redact(t))
        changed = 0
        with self._tx() as db:
            for table, column in _FREE_TEXT:
                changed += db.execute(
                    f"UPDATE {table} SET {column} = geo_tui_redact({column}) "
                    f"WHERE {column} IS NOT NULL AND geo_tui_redact({column}) != {column}"
                ).rowcount
        return changed

    # -- event log ---------------------------------------------------------------------------

    def log(
        self, level: str, message: str, *, site: str | None = None, repository: str | None = None
    ) -> LogRecord:
        now = self._clock()
        message = self._redact(message)
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO event_log (at, level, site, repository, message) VALUES (?, ?, ?, ?, ?)",
                (now, level, site, repository, message),
            )
            rowid = int(cur.lastrowid or 0)
            self._log_inserts += 1
            if self._log_inserts % 500 == 0:
                db.execute("DELETE FROM event_log WHERE id <= ?", (rowid - EVENT_LOG_LIMIT,))
        return LogRecord(rowid, now, level, site, repository, message)

    def repository_log(self, repository: str, limit: int = 200) -> list[LogRecord]:
        rows = self._query(
            "SELECT id, at, level, site, repository, message FROM event_log WHERE repository = ? "
            "ORDER BY id DESC LIMIT ?",
            (repository, limit),
        )
        return [LogRecord(*r) for r in reversed(rows)]  # type: ignore[arg-type]

    def recent_log(self, limit: int = 500) -> list[LogRecord]:
        rows = self._query(
            "SELECT id, at, level, site, repository, message FROM event_log ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [LogRecord(*r) for r in reversed(rows)]  # type: ignore[arg-type]
