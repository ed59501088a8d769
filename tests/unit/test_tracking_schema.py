"""The tracking database's schema version and migrations, and rows read by column name."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from pathlib import Path

import pytest

from geo_tui.engine import DatabaseDamaged, DatabaseTooNew, RepositoryRow, SyncState, Tracking
from geo_tui.engine.tracking import MIGRATIONS, SCHEMA_VERSION, Migration, schema
from geo_tui.engine.tracking.rows import ROW_COLUMNS
from geo_tui.engine.wire import encode_row, encode_rows

# The schema of the geo-tui releases before schema versions, exactly as `sqlite_master` holds it in a
# file made by main at 417ebd8 (the last of them): the file every existing installation has.
UNVERSIONED_DDL = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE repositories (
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
) WITHOUT ROWID""",
    "CREATE INDEX repositories_due ON repositories (state, retry_at)",
    """CREATE TABLE started_once (
    site TEXT NOT NULL,
    repository TEXT NOT NULL,
    PRIMARY KEY (site, repository)
) WITHOUT ROWID""",
    """CREATE TABLE blob_locations (
    site TEXT NOT NULL,
    digest TEXT NOT NULL,
    repository TEXT NOT NULL,
    PRIMARY KEY (site, digest, repository)
) WITHOUT ROWID""",
    """CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    event_id TEXT,
    action TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT,
    digest TEXT
)""",
    """CREATE TABLE event_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    level TEXT NOT NULL,
    site TEXT,
    repository TEXT,
    message TEXT NOT NULL
)""",
    "CREATE INDEX repositories_deep ON repositories (next_deep_at)",
)

# One row per table, every column set to a value of its own (none left to its default), so a column
# dropped, renamed, shifted or reset by a migration shows.
REPOSITORY = {
    "site": "eu",
    "repository": "shop/api",
    "state": "failed",
    "generation": 7,
    "retry_count": 3,
    "retry_at": 1001.5,
    "started_at": 1002.5,
    "last_synced_at": 1003.5,
    "last_sync_failure": "secondary: 500 Internal Server Error",
    "tag_count": 42,
    "bytes": 123_456_789,
    "verification_state": "succeeded",
    "verification_checksum": "sha256:" + "ab" * 32,
    "verified_at": 1004.5,
    "verification_failure": "tag v2 differs",
    "on_primary": 0,
    "oldest_unsynced_event_at": 1005.5,
    "verification_depth": "deep",
    "deep_verified_at": 1006.5,
    "recheck_blobs": 1,
    "next_deep_at": 1007.5,
}
ROWS = {
    "meta": [{"key": "installed_by", "value": "an older geo-tui"}],
    "repositories": [REPOSITORY, {**REPOSITORY, "site": "us", "state": "synced", "generation": 2}],
    "started_once": [{"site": "eu", "repository": "shop/api"}],
    "blob_locations": [{"site": "eu", "digest": "sha256:" + "cd" * 32, "repository": "shop/api"}],
    "notifications": [
        {
            "id": 9,
            "received_at": 1008.5,
            "event_id": "ev-1",
            "action": "push",
            "repository": "shop/api",
            "tag": "v2",
            "digest": "sha256:" + "ef" * 32,
        }
    ],
    "event_log": [
        {"id": 11, "at": 1009.5, "level": "warning", "site": "eu", "repository": "shop/api", "message": "m"}
    ],
}


def unversioned_database(path: Path) -> None:
    """A tracking database as the releases before schema versions left it, with a row in every table."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        for statement in UNVERSIONED_DDL:
            db.execute(statement)
        for table, rows in ROWS.items():
            for row in rows:
                db.execute(
                    f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                    list(row.values()),
                )
    db.close()


def table_contents(path: Path) -> dict[str, list[dict[str, object]]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return {
            table: [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY 1, 2")] for table in ROWS
        }


def stored_version(path: Path) -> str | None:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else str(row[0])


def test_the_migrations_are_numbered_in_order_and_the_code_knows_the_last() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert SCHEMA_VERSION == MIGRATIONS[-1].version
    with pytest.raises(ValueError, match="numbered"):
        schema.pending(0, [MIGRATIONS[0], dataclasses.replace(MIGRATIONS[0], version=3)], Path("x.db"))


def test_a_database_from_before_versions_is_version_1_with_every_row_and_column_kept(tmp_path: Path) -> None:
    path = tmp_path / "tracking.db"
    unversioned_database(path)
    before = table_contents(path)
    assert stored_version(path) is None

    tracking = Tracking(path)
    try:
        assert tracking.schema_version == SCHEMA_VERSION
        row = tracking.row("eu", "shop/api")
        assert [r.message for r in tracking.recent_log()] == ["m"]
        assert tracking.blob_sources("eu", "sha256:" + "cd" * 32, exclude="") == ["shop/api"]
        assert not tracking.never_started("eu", "shop/api")
    finally:
        tracking.close()

    after = table_contents(path)
    # the leases of migration 3 are new columns, empty on every row (no worker holds one)
    leases = {"lease_owner": None, "lease_until": None, "lease_generation": None}
    assert after["repositories"] == [{**r, **leases} for r in before["repositories"]]
    assert after["meta"] == [
        *before["meta"],
        {"key": "schema_version", "value": str(SCHEMA_VERSION)},
    ]
    # migration 7's worker of each log line is a new column, empty on the lines from before
    assert after["event_log"] == [{**r, "worker": None} for r in before["event_log"]]
    assert after == {
        **before,
        "meta": after["meta"],
        "repositories": after["repositories"],
        "event_log": after["event_log"],
    }
    # what the engine reads of it, field by field
    assert row is not None and encode_row(row) == {
        **{k: v for k, v in REPOSITORY.items() if k != "next_deep_at"},
        "on_primary": False,
        "recheck_blobs": True,
    }
    assert row.state is SyncState.FAILED


def test_opening_a_current_database_again_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tracking.db"
    Tracking(path).close()
    assert stored_version(path) == str(SCHEMA_VERSION)
    applied: list[int] = []
    with sqlite3.connect(path, isolation_level=None) as db:
        found, now = schema.migrate(db, path, [_counting(m, applied) for m in MIGRATIONS])
    db.close()
    assert (found, now, applied) == (SCHEMA_VERSION, SCHEMA_VERSION, [])


def _counting(migration: Migration[sqlite3.Connection], applied: list[int]) -> Migration[sqlite3.Connection]:
    def apply(db: sqlite3.Connection) -> None:
        applied.append(migration.version)
        migration.apply(db)

    return dataclasses.replace(migration, apply=apply)


def test_a_database_newer_than_the_code_is_refused_in_one_line_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "tracking.db"
    tracking = Tracking(path)
    tracking.ensure_rows("eu", ["shop/api"])
    tracking.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.close()
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    for read_only in (False, True):
        with pytest.raises(DatabaseTooNew) as caught:
            Tracking(path, read_only=read_only)
        assert str(caught.value) == (
            f"tracking database {path} has schema version {SCHEMA_VERSION + 1}, but this geo-tui knows "
            f"versions up to {SCHEMA_VERSION}: run the newer geo-tui that wrote it, or point [engine] "
            "database at another file"
        )
        if not read_only:
            assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files
    # A reader leaves SQLite's shared-memory index, and an empty write-ahead log, which it cannot remove.
    assert path.read_bytes() == files["tracking.db"]
    assert path.with_name("tracking.db-wal").read_bytes() == b""


def test_a_stored_version_that_is_not_a_number_is_named_as_damage(tmp_path: Path) -> None:
    path = tmp_path / "tracking.db"
    Tracking(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 'soon' WHERE key = 'schema_version'")
    db.close()
    with pytest.raises(DatabaseDamaged, match=r"is damaged \(its schema version 'soon' is not a version\)"):
        Tracking(path)


def test_migrations_run_in_order_in_one_transaction_and_a_failing_one_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tracking.db"
    unversioned_database(path)
    before = table_contents(path)
    order: list[int] = []

    def broken(db: sqlite3.Connection) -> None:
        order.append(3)
        raise sqlite3.OperationalError("the disk went away")

    migrations = [
        _counting(MIGRATIONS[0], order),
        Migration(
            2, "a table", lambda db: (order.append(2), db.execute("CREATE TABLE tags_seen (tag TEXT)"))[0]
        ),
        Migration(3, "fails", broken),
    ]
    monkeypatch.setattr(schema, "MIGRATIONS", tuple(migrations))
    with pytest.raises(sqlite3.OperationalError, match="disk went away"):
        Tracking(path)
    assert order == [1, 2, 3]
    assert stored_version(path) is None and table_contents(path) == before
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT 1 FROM sqlite_master WHERE name = 'tags_seen'").fetchone() is None
    db.close()

    # Fixed, the same list brings the file to version 3 at the next open.
    migrations[2] = Migration(3, "fixed", lambda db: None)
    monkeypatch.setattr(schema, "MIGRATIONS", tuple(migrations))
    Tracking(path).close()
    assert stored_version(path) == "3"


def test_rows_are_read_by_column_name_whatever_the_order_of_the_sql_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tracking.db"
    unversioned_database(path)
    tracking = Tracking(path)
    expected = tracking.rows()
    wire = encode_rows(expected)
    tracking.close()
    assert len(expected) == 2

    # A later migration rebuilds the table with its columns in another order and a new one in the middle.
    reversed_columns = list(reversed([*ROW_COLUMNS, "next_deep_at"]))
    middle = len(reversed_columns) // 2
    rebuilt = [*reversed_columns[:middle], "lease_owner", *reversed_columns[middle:]]

    def rebuild(db: sqlite3.Connection) -> None:
        types = {str(r[1]): str(r[2]) for r in db.execute("PRAGMA table_info(repositories)")}
        types["lease_owner"] = "TEXT"
        definition = ", ".join(f"{c} {types[c]}" for c in rebuilt)
        db.execute(
            f"CREATE TABLE repositories_new ({definition}, PRIMARY KEY (site, repository)) WITHOUT ROWID"
        )
        db.execute(
            f"INSERT INTO repositories_new ({', '.join(reversed_columns)}) "
            f"SELECT {', '.join(reversed_columns)} FROM repositories"
        )
        db.execute("DROP TABLE repositories")
        db.execute("ALTER TABLE repositories_new RENAME TO repositories")

    monkeypatch.setattr(
        schema, "MIGRATIONS", (*MIGRATIONS, Migration(SCHEMA_VERSION + 1, "reorder", rebuild))
    )
    tracking = Tracking(path)
    try:
        with sqlite3.connect(path) as db:
            physical = [str(r[1]) for r in db.execute("PRAGMA table_info(repositories)")]
        db.close()
        assert physical == rebuilt and physical[:3] != list(ROW_COLUMNS[:3])
        assert tracking.rows() == expected and encode_rows(tracking.rows()) == wire
        # and the SELECT itself in another order, with a column that is no field in the middle
        shuffled = list(reversed(ROW_COLUMNS))
        tracking._row_columns = ", ".join([*shuffled[:5], "lease_owner", *shuffled[5:]])
        assert tracking.rows() == expected and tracking.row("eu", "shop/api") == expected[0]
    finally:
        tracking.close()


def test_a_reader_of_an_older_file_reads_the_columns_it_has_and_defaults_for_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "tracking.db"
    with sqlite3.connect(path) as db:  # a file from before deep verification: no depth columns yet
        db.execute(
            "CREATE TABLE repositories (site TEXT NOT NULL, repository TEXT NOT NULL, "
            "state TEXT NOT NULL DEFAULT 'pending', generation INTEGER NOT NULL DEFAULT 1, "
            "retry_count INTEGER NOT NULL DEFAULT 0, retry_at REAL, started_at REAL, last_synced_at REAL, "
            "last_sync_failure TEXT, tag_count INTEGER, bytes INTEGER, "
            "verification_state TEXT NOT NULL DEFAULT 'pending', verification_checksum TEXT, "
            "verified_at REAL, verification_failure TEXT, on_primary INTEGER NOT NULL DEFAULT 1, "
            "oldest_unsynced_event_at REAL, PRIMARY KEY (site, repository)) WITHOUT ROWID"
        )
        db.execute("INSERT INTO repositories (site, repository, state) VALUES ('eu', 'a', 'synced')")
    db.close()
    reader = Tracking(path, read_only=True)
    try:
        (row,) = reader.rows()
        assert (row.state, row.verification_depth, row.recheck_blobs) == (SyncState.SYNCED, None, False)
        assert reader.schema_version == 0
    finally:
        reader.close()


def test_a_row_needs_its_required_columns_and_ignores_unknown_ones() -> None:
    columns = {**REPOSITORY, "lease_owner": "worker-1"}
    row = RepositoryRow.from_columns(columns)
    assert row.on_primary is False and row.recheck_blobs is True and row.state is SyncState.FAILED
    del columns["generation"]
    with pytest.raises(TypeError, match="generation"):
        RepositoryRow.from_columns(columns)


def test_engines_opening_one_unversioned_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "tracking.db"
    unversioned_database(path)
    before = table_contents(path)
    applied: list[int] = []
    counted = tuple(_counting(m, applied) for m in MIGRATIONS)
    opened: list[Tracking] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_it() -> None:
        start.wait()
        try:
            opened.append(Tracking(path))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", counted)
        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    for tracking in opened:
        tracking.close()
    assert errors == [] and len(opened) == 4
    assert applied == [m.version for m in MIGRATIONS]  # each migration ran once, under the write lock
    after = table_contents(path)
    rows = [{k: v for k, v in r.items() if not k.startswith("lease_")} for r in after["repositories"]]
    lines = [{k: v for k, v in r.items() if k != "worker"} for r in after["event_log"]]
    assert {**after, "meta": before["meta"], "repositories": rows, "event_log": lines} == before
