"""Moving a SQLite tracking database into PostgreSQL: ``geo-tui migrate --to postgresql://...``.

Both are first brought to this geo-tui's schema version, so they have the same tables and columns. Every
row of every table is then copied (PostgreSQL's COPY) in one transaction of the target, which also
checks that the target holds no rows yet and that each table's count matches the source's before it
commits: a failure, or a second migrate into the same database, leaves the target as it was.
"""

from __future__ import annotations

from pathlib import Path

from .dialect import SQLITE
from .postgres import MIGRATION_LOCK, POSTGRES, PostgresConnection, PostgresDatabase
from .schema import VERSION_KEY, DatabaseUnusable
from .store import TrackingStore

__all__ = ["TABLES", "TargetNotEmpty", "move_to_postgres"]

# Every table of the schema, in an order that any future foreign key would accept.
TABLES = (
    "meta",
    "repositories",
    "started_once",
    "blob_locations",
    "notifications",
    "event_log",
    "push_queue",
    "tags_seen",
    "workers",
)
_IDENTITY = ("notifications", "event_log", "push_queue")  # ids copied as they are; the next ones follow


class TargetNotEmpty(DatabaseUnusable):
    """The target database already holds tracking rows: migrate only into an empty one."""


def move_to_postgres(source: Path, target: PostgresDatabase) -> dict[str, int]:
    """Copy every row of the SQLite tracking database at `source` into `target` (created if it has no
    tables yet) in one transaction; returns the rows copied per table. Raises TargetNotEmpty, or
    DatabaseUnusable naming the table whose count does not match, and then leaves `target` untouched."""
    reading = TrackingStore(source)  # migrates the file to this version, as the engine would
    try:
        writing = TrackingStore(target)
        try:
            return _copy(reading, writing, str(target))
        finally:
            writing.close()
    finally:
        reading.close()


def _copy(reading: TrackingStore, writing: TrackingStore, where: str) -> dict[str, int]:
    source = reading._db
    copied: dict[str, int] = {}
    with reading._lock:
        source.execute("BEGIN")  # one snapshot of the source for every table
        try:
            with writing._tx() as db:
                assert isinstance(db, PostgresConnection)
                db.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))  # two migrates: one waits
                _refuse_rows(db, where)
                for table in TABLES:
                    copied[table] = _copy_table(source, db, table, where)
        finally:
            source.execute("ROLLBACK")
    return copied


def _refuse_rows(db: PostgresConnection, where: str) -> None:
    for table in TABLES:
        extra = f" WHERE key != '{VERSION_KEY}'" if table == "meta" else ""
        count = _count(db, table, extra)
        if count:
            raise TargetNotEmpty(
                where,
                f"tracking database {where} is not empty ({count} rows in {table}): "
                "migrate only into an empty database",
            )


def _copy_table(source: object, db: PostgresConnection, table: str, where: str) -> int:
    columns = sorted(SQLITE.columns(source, table) & POSTGRES.columns(db, table))  # type: ignore[arg-type]
    names = ", ".join(columns)
    extra = f" WHERE key != '{VERSION_KEY}'" if table == "meta" else ""  # the target has its own
    rows = source.execute(f"SELECT {names} FROM {table}{extra}")  # type: ignore[attr-defined]
    sent = db.copy_rows(table, columns, rows)
    count = _count(db, table, extra)
    if count != sent:
        raise DatabaseUnusable(where, f"tracking database {where}: {table} holds {count} rows, not {sent}")
    if table in _IDENTITY:
        db.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 1), "
            f"MAX(id) IS NOT NULL) FROM {table}"
        )
    return int(sent)


def _count(db: PostgresConnection, table: str, where: str) -> int:
    row = db.execute(f"SELECT COUNT(*) FROM {table}{where}").fetchone()
    return int(row[0]) if row is not None else 0
