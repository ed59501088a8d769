"""The tracking database's file and connections: opening (and migrating), transactions, reads.

One SQLite file in WAL mode, owner-only with its sidecars, or a PostgreSQL database (`postgres`). One
connection (and lock) writes and one (and lock) reads: in WAL mode a reader never waits for a writer,
nor does it in PostgreSQL, where an engine's reads take connections of a small pool
(`postgres.PostgresReadPool`) from whichever thread reads. Rows come back as `sqlite3.Row` or
`postgres.Row`, read by column name. What the two backends do differently is in their `dialect`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import schema
from .clock import SERVER_TIME, DatabaseClock
from .dialect import SQLITE, Dialect
from .rows import ROW_COLUMNS
from .schema import DatabaseDamaged

if TYPE_CHECKING:
    from .postgres import PostgresDatabase
    from .read_pool import PostgresReadPool

__all__ = ["TrackingStore"]

# What SQLite answers for a file that is not a database, or one whose pages are damaged or missing.
_DAMAGED = frozenset({"SQLITE_NOTADB", "SQLITE_CORRUPT"})


@contextmanager
def _damage_named(path: Path | str) -> Iterator[None]:
    """Turn SQLite's corruption errors into DatabaseDamaged naming the file and what to do."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorname", None) in _DAMAGED:
            raise DatabaseDamaged(path, str(exc)) from None
        raise


def _owner_only(path: Path) -> None:
    """Make the database at `path` and its -wal and -shm sidecars owner-only (0600): created so, and
    narrowed if an older run left them readable. SQLite gives new sidecars the database file's mode."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    os.close(fd)
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with suppress(FileNotFoundError):
            if file.stat().st_mode & 0o077:
                os.chmod(file, 0o600)


def _connect(target: str, *, uri: bool = False, timeout: float = 10.0) -> sqlite3.Connection:
    db = sqlite3.connect(target, uri=uri, check_same_thread=False, isolation_level=None, timeout=timeout)
    db.row_factory = sqlite3.Row
    return db


class TrackingStore:
    """Thread-safe access to the tracking database's file (the queries are in the classes built on it)."""

    def __init__(
        self,
        path: Path | PostgresDatabase,
        *,
        clock: Callable[[], float] | None = None,
        read_only: bool = False,
        busy_timeout: float = 10.0,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        """Open (and create, and migrate) the tracking database; `read_only` opens an existing one to
        read beside the engine that holds it (WAL lets readers read while it writes). `redact` is applied
        to every free text stored (failure reasons, log lines): the configured secrets never reach the
        file. Raises DatabaseDamaged or DatabaseTooNew (one line each), having written nothing; for
        PostgreSQL also DatabaseUnreachable."""
        # On PostgreSQL set to the server's clock (clock.py), unless the caller brings a clock of its own.
        self._clock = clock or DatabaseClock()
        self._redact = redact or (lambda text: text)
        self._lock = threading.RLock()
        self._read_lock = threading.RLock()
        self._id_lock = threading.Lock()  # never held across SQLite: the loop takes it for every log line
        # PostgreSQL: the blob streams' own connection (streams.py), opened at its first use, and its lock
        self._stream_db: Any = None
        self._stream_lock = threading.Lock()
        self._log_inserts = 0
        self._notification_inserts = 0
        self._next_log_id = 0
        self.dialect: Dialect = SQLITE
        # sqlite3.Connection, or postgres.PostgresConnection: both take the same queries (dialect.py)
        self._db: Any
        self._reader: Any
        # PostgreSQL's engine: its reads' pool (any thread may read, no lock), None otherwise
        self._pool: PostgresReadPool | None = None
        if not isinstance(path, Path):
            self._open_postgres(path, read_only)
            return
        self.path: Path | str = path
        if read_only:
            self._db = _connect(f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro", uri=True)
            self._reader, self._read_lock = self._db, self._lock
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            _owner_only(path)
            self._db = _connect(str(path), timeout=busy_timeout)
        try:
            with _damage_named(path):
                self._open(read_only)
        except BaseException:
            for connection in {id(c): c for c in (self._db, getattr(self, "_reader", None)) if c}.values():
                connection.close()
            raise

    def _open_postgres(self, database: PostgresDatabase, read_only: bool) -> None:
        from .postgres import MIGRATIONS, POSTGRES, PostgresConnection, application_name
        from .read_pool import PostgresReadPool

        self.path, self.dialect = str(database), POSTGRES
        self._db = PostgresConnection(database, application_name("geo-tui tracking"))
        try:
            self.schema_version = schema.stored_version(self._db, self.path, POSTGRES)
            schema.pending(self.schema_version, MIGRATIONS, self.path)
            self._reader, self._read_lock = self._db, self._lock  # an engine reads from its pool
            if not read_only:
                with self._lock:
                    _, self.schema_version = schema.migrate(self._db, self.path, MIGRATIONS, POSTGRES)
                self._next_log_id = int(
                    self._db.execute("SELECT COALESCE(MAX(id), 0) FROM event_log").fetchone()[0]
                )
            if isinstance(self._clock, DatabaseClock):
                with self._lock:
                    self._clock.align(self._server_time)
            have = POSTGRES.columns(self._db, "repositories")
            self._row_columns = ", ".join(c for c in ROW_COLUMNS if c in have or not have)
            if not read_only:  # last: nothing after it can fail and leave the pool open
                self._pool = PostgresReadPool(database, application_name("geo-tui tracking reader"))
        except BaseException:
            self._db.close()
            raise

    def _open(self, read_only: bool) -> None:
        # A file newer than this code is refused before anything is written to it, even the journal mode.
        self.schema_version = schema.stored_version(self._db, self.path)
        schema.pending(self.schema_version, schema.MIGRATIONS, self.path)
        if not read_only:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a killed process in WAL mode; only power loss may drop the tail.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._lock:
                _, self.schema_version = schema.migrate(self._db, self.path, schema.MIGRATIONS)
            self._reader = _connect(str(self.path))
            # Log ids are given here, not by SQLite, so a log line can be shown before it is stored (one
            # engine per database: see lock.py).
            self._next_log_id = int(
                self._db.execute("SELECT COALESCE(MAX(id), 0) FROM event_log").fetchone()[0]
            )
        # A reader cannot migrate: of an older file it reads the columns there are, and the fields it
        # lacks read as their defaults until the engine migrates it.
        have = {str(r["name"]) for r in self._db.execute("PRAGMA table_info(repositories)")}
        self._row_columns = ", ".join(c for c in ROW_COLUMNS if c in have or not have)

    def close(self) -> None:
        with self._stream_lock:
            if self._stream_db is not None:
                self._stream_db.close()
        if self._pool is not None:
            self._pool.close()
        with self._read_lock:
            if self._reader is not self._db:
                self._reader.close()
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self, fence: object | None = None) -> Iterator[Any]:
        """A write transaction on the writing connection (`sqlite3.Connection` or `PostgresConnection`);
        with a `fence` (a leader's duty), only while that leader's session still leads (`check_fence`)."""
        with self._lock, _damage_named(self.path):
            self.dialect.begin(self._db)
            try:
                self.dialect.check_fence(self._db, fence)
                yield self._db
            except BaseException:
                self.dialect.rollback(self._db)
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        if self._pool is not None:
            return self._pool.read(sql, params)
        with self._read_lock, _damage_named(self.path):
            return self.dialect.read(self._reader, sql, params)

    @property
    def threaded_reads(self) -> bool:
        """True when reads go through a pool that threads share (PostgreSQL), and so belong off the
        event loop; False on SQLite, whose WAL reads are quick enough to make in place."""
        return self._pool is not None

    @property
    def writer_pid(self) -> int | None:
        """PostgreSQL: the server process of the writing connection (its NOTIFYs are this engine's own
        changes); None on SQLite."""
        return int(self._db.backend_pid) if self.dialect.name == "postgresql" else None

    def now(self) -> float:
        """The clock rows are stamped with."""
        return self._clock()

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    def align_clock(self) -> DatabaseClock | None:
        """PostgreSQL: measure the clock's offset from the server's again (clock.py) and return the
        clock; None where there is nothing to align (SQLite, or a clock the caller brought)."""
        if self.dialect.name != "postgresql" or not isinstance(self._clock, DatabaseClock):
            return None
        pool = self._pool
        if pool is not None:
            self._clock.align(lambda: float(pool.read(SERVER_TIME, ())[0][0]))
        else:
            with self._lock:
                self._clock.align(self._server_time)
        return self._clock

    def _server_time(self) -> float:
        """The server's clock, read on the writing connection (its lock held)."""
        self._db.ensure()
        return float(self._db.execute(SERVER_TIME).fetchone()[0])

    @property
    def journal_mode(self) -> str:
        return str(self._query("PRAGMA journal_mode")[0][0])

    @staticmethod
    def _selection(
        sites: Sequence[str] | None, repositories: Sequence[str] | None
    ) -> tuple[str, list[object]]:
        """A WHERE clause (and its parameters) for rows of the given sites and repositories (None: all)."""
        where = "1 = 1"
        params: list[object] = []
        if sites is not None:
            where += f" AND site IN ({','.join('?' * len(sites))})"
            params.extend(sites)
        if repositories is not None:
            where += f" AND repository IN ({','.join('?' * len(repositories))})"
            params.extend(repositories)
        return where, params
