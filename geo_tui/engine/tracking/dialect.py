"""What differs between the tracking database's two backends, in one small object per backend.

The queries are written once, in SQL both SQLite and PostgreSQL accept, with ``?`` placeholders (the
PostgreSQL connection turns them into its own). What cannot be written once lives here: how a write
transaction begins and how migrations are locked, the few functions with other names (`contains`),
the planner hint SQLite needs (`unindexed`), how a table's columns are listed, and which errors are
passing faults (a lock held elsewhere, a restarted server) that a write waits out and tries again.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

__all__ = ["Connection", "Cursor", "Dialect", "SqliteDialect", "is_passing_fault"]

# What another process or the file system causes for a while: worth waiting out, not a broken database.
_SQLITE_PASSING = ("locked", "busy", "disk is full", "disk i/o error", "unable to open database file")


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What the queries use of a connection: `sqlite3.Connection`, or the PostgreSQL one of `postgres`."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


class Dialect(Protocol):
    name: str

    def begin(self, db: Any) -> None:
        """Start a write transaction on `db` (reconnecting first if the backend lost its connection)."""

    def read(self, db: Any, sql: str, params: Sequence[object]) -> list[Any]:
        """The rows of a query on the reading connection."""

    def rollback(self, db: Any) -> None:
        """End a failed transaction; never raises for a connection already lost."""

    def lock_migrations(self, db: Any) -> None:
        """Inside the migrating transaction: make other processes wait until it is done."""

    def has_table(self, db: Any, table: str) -> bool: ...

    def columns(self, db: Any, table: str) -> set[str]: ...

    def contains(self, column: str) -> str:
        """A condition: `column` holds the text of one ``?`` parameter (no wildcards)."""

    def unindexed(self, column: str) -> str:
        """`column`, written so that the planner does not pick its index for it."""

    def skip_locked(self) -> str:
        """What a claiming SELECT ends with so that concurrent claimers skip each other's rows."""

    def using_index(self, index: str) -> str:
        """What follows a table's name so that the planner reads it through `index` (where it needs
        telling: SQLite without statistics took an index on `state` and sorted 20,000 rows per claim)."""

    def lock_site(self, db: Any, site: str) -> None:
        """Inside a write transaction: wait until no other claimer's transaction holds `site`'s lock."""

    def lock_push_claims(self, db: Any) -> None:
        """Inside a write transaction: wait until no other claimer of pushes holds the push queue."""

    def announce(self, db: Any, work: str) -> None:
        """Inside a write transaction that queued `work` ("push" or "sync"): tell every engine on the
        database when it commits (PostgreSQL's NOTIFY), so an idle one wakes at once."""

    def changed(self, db: Any, what: str) -> None:
        """Inside a write transaction that changed `what` ("pause"): tell every engine on the database
        when it commits (rows and log lines announce themselves: migration 7's triggers)."""

    def check_fence(self, db: Any, fence: object | None) -> None:
        """At the start of a leader's duty write: raise `leadership.NotLeader` unless `fence` (a
        `leadership.LeaderFence`; None: no check) still leads, and hold that until the commit."""


class SqliteDialect:
    """SQLite: ``BEGIN IMMEDIATE`` takes the file's write lock, which also serialises migrations."""

    name = "sqlite"

    def begin(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")

    def read(self, db: sqlite3.Connection, sql: str, params: Sequence[object]) -> list[Any]:
        return list(db.execute(sql, params).fetchall())

    def rollback(self, db: sqlite3.Connection) -> None:
        db.execute("ROLLBACK")

    def lock_migrations(self, db: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE already holds the write lock."""

    def has_table(self, db: sqlite3.Connection, table: str) -> bool:
        found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        return found.fetchone() is not None

    def columns(self, db: sqlite3.Connection, table: str) -> set[str]:
        return {str(r[1]) for r in db.execute(f"PRAGMA table_info({table})").fetchall()}

    def contains(self, column: str) -> str:
        return f"instr({column}, ?) > 0"

    def unindexed(self, column: str) -> str:
        return f"+{column}"

    def using_index(self, index: str) -> str:
        return f" INDEXED BY {index}"

    def skip_locked(self) -> str:
        return ""  # BEGIN IMMEDIATE: one claimer at a time holds the file's write lock

    def lock_site(self, db: sqlite3.Connection, site: str) -> None:
        """BEGIN IMMEDIATE already serialises every write transaction."""

    def lock_push_claims(self, db: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE already serialises every write transaction."""

    def announce(self, db: sqlite3.Connection, work: str) -> None:
        """One engine per file: it wakes its own parts when it queues work."""

    def changed(self, db: sqlite3.Connection, what: str) -> None:
        """One engine per file: it tells its own watchers."""

    def check_fence(self, db: sqlite3.Connection, fence: object | None) -> None:
        """One engine per file, which always leads."""


SQLITE = SqliteDialect()


def is_passing_fault(exc: BaseException) -> bool:
    """True for errors that go away on their own: on SQLite a lock held elsewhere or a full or failing
    disk; on PostgreSQL a lost connection, a server restarting or shutting down, a serialization failure."""
    if isinstance(exc, sqlite3.OperationalError):
        return any(p in str(exc).lower() for p in _SQLITE_PASSING)
    if "psycopg" in sys.modules:  # a psycopg error can only come from a process that imported it
        from .postgres import is_passing_fault as postgres_passing

        return postgres_passing(exc)
    return False
