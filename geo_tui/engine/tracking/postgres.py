"""PostgreSQL as the tracking database (issue 16), through psycopg 3's synchronous API and psycopg-pool.

The tracking interface stays the SQLite one: synchronous calls, each query written once for both
backends. Writes run on the engine's database thread (`database.DatabaseWriter`), on one connection;
reads on a small `psycopg_pool.ConnectionPool` (`read_pool`), from reading threads of the engine's own
(`database.DatabaseReader`), never its event loop: a server that stops answering (frozen, its host gone;
libpq has no read timeout) holds a thread, not the loop. A sync pool, not `AsyncConnectionPool`: the read
methods stay SQLite's, with no async copy of every query, and SQLite keeps reading in place on the loop.

Here: where the database is (`PostgresDatabase`, its password kept apart from its URL), a connection
that takes the queries' ``?`` placeholders and reopens itself after a lost connection, the dialect
(`PostgresDialect`), the migrations (the SQLite ones' statements, in PostgreSQL's types) and which
errors are passing faults.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from . import schema
from .leadership import ENGINE_LOCK, check_fence
from .pg_urls import describe_url, url_options
from .schema import DatabaseUnusable, Migration

__all__ = [
    "ENGINE_LOCK",
    "MIGRATIONS",
    "WAKE_CHANNEL",
    "PostgresConnection",
    "PostgresDatabase",
    "PostgresDialect",
    "is_passing_fault",
    "is_postgres_url",
]

# pg_advisory_lock keys ("geotui" and a number): migrating (the leadership's is in leadership.py).
MIGRATION_LOCK = 0x67656F7475690001
# The claims of the push queue, which take turns (see PostgresDialect.lock_push_claims).
PUSH_CLAIM_LOCK = 0x67656F7475690010
SITE_LOCK_CLASS = 0x67656F74  # "geot": the two-key advisory locks of the per-site claim caps
CONNECT_TIMEOUT = 5  # seconds: a server that does not answer is a passing fault, not a hung thread
# A worker frozen inside a transaction (SIGSTOP, a suspended VM, a thread starved for seconds) would hold
# its locks, the push claims' turn among them, and stop every other worker: the server ends a session
# idle in a transaction this long (ms). geo-tui's transactions never wait on anything but the database.
IDLE_IN_TRANSACTION_MS = 15_000
WAKE_CHANNEL = "geo_tui_work"  # NOTIFY channel: work was queued (see PostgresDialect.announce)
# NOTIFY channel: repositories rows changed, a log line was stored, the pause changed (migration 7's
# triggers, `PostgresDialect.changed`); every worker re-reads what it names (engine/cluster_view.py).
CHANGE_CHANNEL = "geo_tui_changes"
# A statement changing more rows than this is announced as "many": the watchers reload instead.
CHANGED_KEYS_LIMIT = 1000
# NOTIFY payloads must stay under 8000 bytes: keys are sent in chunks of at most this many.
CHANGE_PAYLOAD_BYTES = 7000


# When a NOTIFY was sent, by the server's clock (the text the change triggers stamp theirs with).
_SENT = "to_char(extract(epoch FROM clock_timestamp()), 'FM9999999999.000000')"


def read_wake_payload(payload: str) -> tuple[str, float | None]:
    """(work, when sent) of a NOTIFY payload; a payload not ours reads as ("sync", None)."""
    work, _, sent = payload.partition(" ")
    try:
        return (work if work in ("push", "sync") else "sync"), float(sent)
    except ValueError:
        return "sync", None


def site_key(site: str) -> int:
    """The 32-bit advisory lock key of a site (two sites sharing one only take turns more often)."""
    return int.from_bytes(hashlib.blake2b(site.encode(), digest_size=4).digest(), "big", signed=True)


def is_postgres_url(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


@dataclass(frozen=True)
class PostgresDatabase:
    """A PostgreSQL tracking database: a libpq URL without a password, and the password (if any) from
    ``[engine] database_password_file``; without one, libpq reads ``PGPASSFILE`` (or ~/.pgpass)."""

    url: str
    password: str | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        """The database as logs and errors name it: user, host, port and name, never a password."""
        return describe_url(self.url)

    def connect(self, *, application: str = "geo-tui", **options: Any) -> psycopg.Connection[Row]:
        """An autocommit connection whose rows are read by column name (or position); `options` are
        more libpq parameters (keepalives, ...)."""
        try:
            return psycopg.connect(self.url, **self.connect_arguments(application, **options))
        except psycopg.OperationalError as exc:
            raise DatabaseUnreachable(str(self), exc) from None

    def connect_arguments(self, application: str, **options: Any) -> dict[str, Any]:
        """What `connect` passes besides the URL (and the read pool too): never logged."""
        extra: dict[str, Any] = {"password": self.password} if self.password is not None else {}
        extra.update(options)
        extra["options"] = " ".join(
            part
            for part in (  # the last setting of a name wins: ours, then the URL's, then the caller's
                f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
                url_options(self.url),
                extra.get("options"),
            )
            if part
        )
        return {
            "autocommit": True,
            "row_factory": _rows,
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": application[:63],
            **extra,
        }


class DatabaseUnreachable(DatabaseUnusable, psycopg.OperationalError):
    """No connection to the PostgreSQL tracking database (a passing fault once the engine runs)."""

    def __init__(self, where: str, exc: BaseException) -> None:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        DatabaseUnusable.__init__(self, where, f"tracking database {where}: cannot connect ({reason})")


def application_name(command: str) -> str:
    """How a connection names itself to the server (pg_stat_activity): who, which process, which host."""
    return f"{command} (pid {os.getpid()} on {socket.gethostname()})"


# -- rows --------------------------------------------------------------------------------------


class Row:
    """A row by column name (``row["site"]``) or position (``row[0]``, unpacking), like `sqlite3.Row`."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = tuple(values)
        self._index = index

    def keys(self) -> list[str]:
        return list(self._index)

    def __getitem__(self, key: int | str) -> Any:
        return self._values[self._index[key] if isinstance(key, str) else key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _rows(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return functools.partial(Row, index=index)


@functools.lru_cache(maxsize=512)
def placeholders(sql: str) -> str:
    """The query with psycopg's placeholders: ``?`` becomes ``%s`` (the queries hold no other ? or %)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _NothingDone:
    rowcount = 0

    def fetchall(self) -> list[Any]:
        return []


_NOTHING_DONE = _NothingDone()


class PostgresConnection:
    """One connection to the tracking database that takes ``?`` placeholders and reopens itself (at the
    start of a transaction or a read) after the server went away, restarted or dropped it."""

    def __init__(self, database: PostgresDatabase, application: str) -> None:
        self.database = database
        self._application = application
        self._conn = self._open()

    def _open(self) -> psycopg.Connection[Row]:
        """A connection whose commits are durable before they return, whatever the server's default: a
        notification acknowledged after its commit must survive a crash of the server too."""
        conn = self.database.connect(application=self._application)
        try:
            conn.execute("SET synchronous_commit TO on")
        except BaseException:
            conn.close()
            raise
        return conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Row]:
        return self._conn.execute(placeholders(sql), list(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        """Like sqlite3's: ``rowcount`` is the rows all of them changed (0 for no parameters)."""
        batch = [list(p) for p in parameters]
        if not batch:
            return _NOTHING_DONE
        cursor = self._conn.cursor()
        cursor.executemany(placeholders(sql), batch)
        return cursor

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        """COPY `rows` into `table` (inside the caller's transaction); returns how many were sent."""
        sent = 0
        with self._conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(tuple(row))
                sent += 1
        return sent

    @property
    def lost(self) -> bool:
        return bool(self._conn.closed or self._conn.broken)

    @property
    def backend_pid(self) -> int:
        """The server process of this connection (a NOTIFY names the one that sent it); 0 while it is
        lost (read from the loop while the database thread may be reopening it)."""
        try:
            return int(self._conn.info.backend_pid)
        except psycopg.Error:
            return 0

    def ensure(self) -> None:
        """Reopen the connection if it was lost (never inside a transaction: only between them)."""
        if self.lost:
            self._conn.close()
            self._conn = self._open()

    def close(self) -> None:
        self._conn.close()


class PostgresDialect:
    """PostgreSQL: a plain ``BEGIN`` (rows lock themselves), migrations under ``pg_advisory_xact_lock``."""

    name = "postgresql"

    def begin(self, db: PostgresConnection) -> None:
        db.ensure()
        db.execute("BEGIN")

    def read(self, db: PostgresConnection, sql: str, params: Sequence[object]) -> list[Any]:
        """Reads are idempotent: one that finds its connection lost (a restarted server) reopens it
        and tries once more; a server still down raises DatabaseUnreachable."""
        db.ensure()
        try:
            return db.execute(sql, params).fetchall()
        except psycopg.OperationalError:
            if not db.lost:
                raise
        db.ensure()
        return db.execute(sql, params).fetchall()

    def rollback(self, db: PostgresConnection) -> None:
        try:
            db.execute("ROLLBACK")
        except psycopg.OperationalError:
            pass  # the connection is gone, and its transaction with it

    def lock_migrations(self, db: PostgresConnection) -> None:
        db.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))

    def has_table(self, db: PostgresConnection, table: str) -> bool:
        """Read from pg_tables under the statement's snapshot: ``to_regclass`` answers from a cache that
        a transaction waiting on the migration lock does not refresh, so it missed a table another
        process had just created and the migrations ran a second time."""
        row = db.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables "
            "WHERE schemaname = current_schema() AND tablename = ?)",
            (table,),
        ).fetchone()
        return row is not None and row[0] is True

    def columns(self, db: PostgresConnection, table: str) -> set[str]:
        rows = db.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        ).fetchall()
        return {str(r[0]) for r in rows}

    def contains(self, column: str) -> str:
        return f"strpos({column}, ?) > 0"

    def unindexed(self, column: str) -> str:
        return column

    def using_index(self, index: str) -> str:
        return ""  # its planner picks the claim index by itself (EXPLAIN: an ordered index scan, no sort)

    def skip_locked(self) -> str:
        return " FOR UPDATE SKIP LOCKED"

    def lock_site(self, db: PostgresConnection, site: str) -> None:
        """Claimers of one site take turns (until their transaction ends), so a site's cap, counted
        under this lock, holds however many race; other sites' claimers do not wait."""
        db.execute("SELECT pg_advisory_xact_lock(?, ?)", (SITE_LOCK_CLASS, site_key(site)))

    def lock_push_claims(self, db: PostgresConnection) -> None:
        """Claimers of pushes take turns, on one constant key, until their transaction ends. Not SKIP
        LOCKED as the repositories' claims: a push claim takes a repository's queued pushes whole, and
        must see every row of it, those another claimer is taking right now above all; SKIP LOCKED would
        hide exactly those, and two workers would copy one repository. A claim holds the lock for one
        short read and update (about a millisecond), once per wake, not per row."""
        db.execute("SELECT pg_advisory_xact_lock(?)", (PUSH_CLAIM_LOCK,))

    def announce(self, db: PostgresConnection, work: str) -> None:
        """NOTIFY every engine listening (`wakeups.WakeListener`) when this transaction commits; the
        payload carries when, by the server's clock as the change triggers' do (and every worker's clock
        is set to it: clock.py), so a listener can tell how long the wake took."""
        db.execute(f"SELECT pg_notify(?, ? || ' ' || {_SENT})", (WAKE_CHANNEL, work))

    def changed(self, db: PostgresConnection, what: str) -> None:
        """Tell every worker, when this transaction commits, that `what` changed ("pause")."""
        db.execute(f"SELECT pg_notify(?, ? || ' ' || {_SENT})", (CHANGE_CHANNEL, what))

    def check_fence(self, db: PostgresConnection, fence: object | None) -> None:
        """A leader's duty write goes in only while its session holds the lock (leadership.py)."""
        check_fence(db, fence)


POSTGRES = PostgresDialect()


def is_passing_fault(exc: BaseException) -> bool:
    """A lost or refused connection, a server restarting or shutting down, a serialization failure or a
    deadlock, a full disk: all of psycopg's OperationalError; and a session the server ended for idling in
    a transaction (this worker was frozen: IDLE_IN_TRANSACTION_MS). The connection reopens at the next try."""
    return isinstance(exc, (psycopg.OperationalError, psycopg.errors.IdleInTransactionSessionTimeout))


# -- migrations: the SQLite statements, in PostgreSQL's types ------------------------------------


def _ddl(statement: str) -> str:
    """A SQLite CREATE statement of `schema` for PostgreSQL: 64-bit integers and floats (REAL is 32-bit
    there), identity columns for AUTOINCREMENT, no WITHOUT ROWID."""
    statement = statement.replace(
        "INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    )
    statement = re.sub(r"\bINTEGER\b", "BIGINT", statement)
    statement = re.sub(r"\bREAL\b", "DOUBLE PRECISION", statement)
    return statement.replace(" WITHOUT ROWID", "")


def _statements(*statements: str) -> Callable[[PostgresConnection], None]:
    def apply(db: PostgresConnection) -> None:
        for statement in statements:
            db.execute(_ddl(statement))

    return apply


def _first_schema(db: PostgresConnection) -> None:
    _statements(*schema.FIRST_TABLES)(db)
    for name, definition in schema.FIRST_ADDED_COLUMNS:
        db.execute(_ddl(f"ALTER TABLE repositories ADD COLUMN IF NOT EXISTS {name} {definition}"))
    db.execute(schema.DEEP_INDEX)


# Migration 7: triggers that NOTIFY `CHANGE_CHANNEL` when repositories rows change (whatever statement
# changed them: a claim, an outcome, a resync, a sweep, another tool) and when a log line is stored. One
# notify per statement and chunk: "rows <sent> [[site, repository], ...]"; "many <sent>" for a statement
# changing more than CHANGED_KEYS_LIMIT rows; "log <sent> <id>". A change of the lease columns alone (a
# renewal every lease_seconds / 3) is nobody's news. Frozen text: never edit, append a migration.
_ANNOUNCE_ROWS = f"""CREATE OR REPLACE FUNCTION geo_tui_announce_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sent text := to_char(extract(epoch FROM clock_timestamp()), 'FM9999999999.000000');
    touched bigint;
    keys text[];
    chunk text := '';
    key text;
BEGIN
    SELECT count(*) INTO touched FROM geo_tui_new;
    IF touched = 0 THEN
        RETURN NULL;
    END IF;
    IF touched > {CHANGED_KEYS_LIMIT} THEN
        PERFORM pg_notify('{CHANGE_CHANNEL}', 'many ' || sent);
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        -- the rows whose columns but the lease's differ before and after (grouped, not joined: the
        -- planner knows nothing of transition tables, and its nested loop took seconds at 20,000 rows)
        SELECT array_agg(json_build_array(site, repository)::text) INTO keys FROM (
            SELECT site, repository FROM (
                SELECT site, repository,
                    md5((to_jsonb(n) - 'lease_owner' - 'lease_until' - 'lease_generation')::text) AS h
                FROM geo_tui_new n
                UNION ALL
                SELECT site, repository,
                    md5((to_jsonb(o) - 'lease_owner' - 'lease_until' - 'lease_generation')::text) AS h
                FROM geo_tui_old o) sides
            GROUP BY site, repository HAVING count(DISTINCT h) > 1) changed;
    ELSE
        SELECT array_agg(json_build_array(site, repository)::text) INTO keys FROM geo_tui_new;
    END IF;
    IF keys IS NULL THEN
        RETURN NULL;
    END IF;
    FOREACH key IN ARRAY keys LOOP
        IF chunk <> '' AND octet_length(chunk) + octet_length(key) > {CHANGE_PAYLOAD_BYTES} THEN
            PERFORM pg_notify('{CHANGE_CHANNEL}', 'rows ' || sent || ' [' || chunk || ']');
            chunk := '';
        END IF;
        chunk := CASE WHEN chunk = '' THEN key ELSE chunk || ',' || key END;
    END LOOP;
    PERFORM pg_notify('{CHANGE_CHANNEL}', 'rows ' || sent || ' [' || chunk || ']');
    RETURN NULL;
END $$"""
_ANNOUNCE_LOG = f"""CREATE OR REPLACE FUNCTION geo_tui_announce_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANGE_CHANNEL}',
        'log ' || to_char(extract(epoch FROM clock_timestamp()), 'FM9999999999.000000') || ' ' || NEW.id);
    RETURN NULL;
END $$"""
CHANGE_STATEMENTS = (
    _ANNOUNCE_ROWS,
    "CREATE TRIGGER geo_tui_rows_inserted AFTER INSERT ON repositories "
    "REFERENCING NEW TABLE AS geo_tui_new FOR EACH STATEMENT EXECUTE FUNCTION geo_tui_announce_rows()",
    "CREATE TRIGGER geo_tui_rows_updated AFTER UPDATE ON repositories "
    "REFERENCING OLD TABLE AS geo_tui_old NEW TABLE AS geo_tui_new "
    "FOR EACH STATEMENT EXECUTE FUNCTION geo_tui_announce_rows()",
    _ANNOUNCE_LOG,
    "CREATE TRIGGER geo_tui_log_inserted AFTER INSERT ON event_log "
    "FOR EACH ROW EXECUTE FUNCTION geo_tui_announce_log()",
)


# Numbered as `schema.MIGRATIONS`, one for one: append to both.
MIGRATIONS: tuple[Migration[PostgresConnection], ...] = (
    Migration(1, "the tables of the releases before schema versions", _first_schema),
    Migration(
        2,
        "pushes waiting for their copy, and the tags last seen on each site (issue 17)",
        _statements(*schema.PUSH_TABLES),
    ),
    Migration(
        3,
        "leases on the repositories rows, and the workers (issue 16)",
        _statements(*schema.LEASE_STATEMENTS),
    ),
    Migration(4, "each worker's throughput (issue 16)", _statements(*schema.WORKER_THROUGHPUT_STATEMENTS)),
    Migration(5, "leases on the push queue (issue 16)", _statements(*schema.PUSH_LEASE_STATEMENTS)),
    Migration(
        6,
        "blob streams in flight across the workers (issue 16)",
        _statements(*schema.BLOB_STREAM_STATEMENTS),
    ),
    Migration(
        7,
        "the worker of each log line, and changes announced (issue 16)",
        _statements(*schema.EVENT_LOG_WORKER_STATEMENTS, *CHANGE_STATEMENTS),
    ),
    Migration(8, "the leader's session (issue 16)", _statements(*schema.LEADER_STATEMENTS)),
)
assert [m.version for m in MIGRATIONS] == [m.version for m in schema.MIGRATIONS]
