"""PostgreSQL as the tracking database, on a real server: schema versions, many engines per database, a
restarted server under running writes, and the password's config (never shown anywhere)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from geo_tui._config_document import ConfigError
from geo_tui.config import load_config, redactor_for
from geo_tui.engine import DatabaseTooNew, Tracking
from geo_tui.engine.database import DatabaseWriter
from geo_tui.engine.lock import DatabaseInUse, claim_for
from geo_tui.engine.tracking import SCHEMA_VERSION, tracking_database
from geo_tui.engine.tracking.postgres import PostgresDatabase
from geo_tui.engine.tracking.transfer import TargetNotEmpty, move_to_postgres
from tests.support.postgres import BACKENDS, PASSWORD_ROLE, PostgresCluster

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pg-Secret-7f3a9c1e-not-in-any-output"


@pytest.fixture(params=BACKENDS)
def tracking_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def write_config(directory: Path, engine: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(
        f"[engine]\n{engine}\n"
        '[primary]\nname = "primary"\nregistry = "http://127.0.0.1:9"\nauth = "none"\n'
        '[[secondaries]]\nname = "eu"\nregistry = "http://127.0.0.1:10"\nauth = "none"\n'
    )
    os.chmod(path, 0o600)
    return path


# -- schema ------------------------------------------------------------------------------------


def _set_version(target: Path | PostgresDatabase, version: int) -> None:
    tracking = Tracking(target)
    with tracking._tx() as db:  # as a newer geo-tui would have left it
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    tracking.close()


def test_a_schema_newer_than_the_code_is_refused_in_one_line(
    tracking_target: Path | PostgresDatabase,
) -> None:
    _set_version(tracking_target, SCHEMA_VERSION + 1)
    for read_only in (False, True):
        with pytest.raises(DatabaseTooNew) as refused:
            Tracking(tracking_target, read_only=read_only)
        message = str(refused.value)
        assert "\n" not in message and f"schema version {SCHEMA_VERSION + 1}" in message
        assert str(tracking_target) in message  # the file, or the URL (postgresql://geo@127.0.0.1:port/name)


def test_concurrent_first_opens_migrate_once(postgres_database: PostgresDatabase) -> None:
    results: list[object] = []

    def open_one() -> None:
        try:
            tracking = Tracking(postgres_database)
            results.append(tracking.schema_version)
            tracking.close()
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [SCHEMA_VERSION] * 4
    with psycopg.connect(postgres_database.url) as db:
        (version,) = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() or (None,)
    assert version == str(SCHEMA_VERSION)


def test_rows_and_types_as_the_engine_reads_them(postgres_database: PostgresDatabase) -> None:
    tracking = Tracking(postgres_database, clock=lambda: 1_700_000_000.123456)
    try:
        tracking.ensure_rows("eu", ["app"])
        generation = tracking.mark_started("eu", "app")
        assert tracking.mark_synced("eu", "app", generation, tag_count=3, size=6 * 2**40)  # > 32 bits
        row = tracking.row("eu", "app")
        assert row is not None and row.bytes == 6 * 2**40 and row.last_synced_at == 1_700_000_000.123456
        assert tracking.counts(["eu"])["eu"].bytes == 6 * 2**40
    finally:
        tracking.close()


# -- many engines per database (issue 16) ------------------------------------------------------------


def test_engines_on_two_hosts_share_one_database(postgres_database: PostgresDatabase, tmp_path: Path) -> None:
    # Two hosts, one database: neither refuses the other (each registers its worker row instead), and
    # releasing one leaves the other's claim as it was.
    first = write_config(tmp_path / "host-a", f'database = "{postgres_database.url}"')
    second = write_config(tmp_path / "host-b", f'database = "{postgres_database.url}"')
    engine_a, engine_b = load_config(first).engine, load_config(second).engine
    engine_b = dataclasses.replace(engine_b, database=tmp_path / "host-b" / "local")
    claim_a, claim_b = claim_for(engine_a, "geo-tui serve"), claim_for(engine_b, "geo-tui serve")
    claim_a.acquire()
    claim_b.acquire()
    assert claim_a.held and claim_b.held
    claim_a.release()
    assert not claim_a.held and claim_b.held
    claim_b.release()


def test_sqlite_keeps_one_engine_per_file(tmp_path: Path) -> None:
    config = write_config(tmp_path / "host", f'database = "{tmp_path / "tracking.db"}"')
    engine = load_config(config).engine
    claim = claim_for(engine, "geo-tui serve")
    claim.acquire()
    try:
        with pytest.raises(DatabaseInUse):
            claim_for(engine, "geo-tui serve").acquire()
    finally:
        claim.release()


# -- a restarted server ------------------------------------------------------------------------------


async def test_writes_wait_out_a_crashed_and_restarted_server_and_none_acknowledged_is_lost(
    own_cluster: PostgresCluster,
) -> None:
    tracking = Tracking(PostgresDatabase(own_cluster.url(own_cluster.database())))
    writer = DatabaseWriter(retry_delay=0.05, max_retry_delay=0.5)
    acknowledged: list[str] = []
    latencies: list[float] = []

    async def write(i: int) -> None:
        event = (f"event-{i}", "push", "app", f"v{i}", None)
        started = time.perf_counter()
        await writer(tracking.record_notifications, [event], [("eu", "app")], time.time(), timeout=60)
        latencies.append(time.perf_counter() - started)
        acknowledged.append(f"event-{i}")

    try:
        for i in range(50):  # before the crash
            await write(i)
        before_crash = sorted(latencies)[len(latencies) // 2]
        own_cluster.stop("immediate")  # a crash: the next start replays the WAL
        restart = asyncio.get_running_loop().run_in_executor(None, _start_later, own_cluster)
        for i in range(50, 100):  # during the outage and after: each waits, none fails
            await write(i)
        await restart
        stored = {str(r["event_id"]) for r in tracking._query("SELECT event_id FROM notifications")}
        assert set(acknowledged) <= stored and len(acknowledged) == 100
        assert tracking.row("eu", "app") is not None  # reads reopen their connection too
        print(f"median write before the crash {before_crash * 1000:.2f} ms; longest {max(latencies):.2f} s")
    finally:
        writer.close()
        tracking.close()


def _start_later(cluster: PostgresCluster) -> None:
    time.sleep(1.0)
    cluster.start()


# -- the password ----------------------------------------------------------------------------------


@pytest.fixture
def password_database(postgres_cluster: PostgresCluster, local_files: Path) -> str:
    with postgres_cluster.admin() as db:
        db.execute(f"ALTER ROLE {PASSWORD_ROLE} PASSWORD '{PASSWORD}'")
    return postgres_cluster.url(postgres_cluster.database(owner=PASSWORD_ROLE), user=PASSWORD_ROLE)


def test_a_password_in_the_url_is_refused_without_showing_it(tmp_path: Path) -> None:
    for url in (
        f"postgresql://geo:{PASSWORD}@127.0.0.1:5432/geo",
        f"postgresql://geo@127.0.0.1:5432/geo?password={PASSWORD}",
    ):
        with pytest.raises(ConfigError) as refused:
            load_config(write_config(tmp_path, f'database = "{url}"'))
        message = str(refused.value)
        assert "engine.database" in message and "database_password_file" in message
        assert PASSWORD not in message


def test_the_password_file_must_be_owner_only(tmp_path: Path) -> None:
    secret = tmp_path / "pg.password"
    secret.write_text(PASSWORD + "\n")
    os.chmod(secret, 0o644)
    engine = f'database = "postgresql://geo@127.0.0.1:5432/geo"\ndatabase_password_file = "{secret}"'
    with pytest.raises(ConfigError) as refused:
        load_config(write_config(tmp_path, engine))
    message = str(refused.value)
    assert "engine.database_password_file" in message and str(secret) in message and "0644" in message
    assert PASSWORD not in message
    os.chmod(secret, 0o600)
    config = load_config(write_config(tmp_path, engine))
    assert config.engine.database_password is not None
    assert config.engine.database_password.reveal() == PASSWORD
    assert PASSWORD not in repr(config) and PASSWORD not in repr(tracking_database(config.engine))
    assert redactor_for(config).redact(f"failed: {PASSWORD}") == "failed: [redacted]"
    # and a SQLite database has no password
    with pytest.raises(ConfigError, match="only for a PostgreSQL database"):
        load_config(write_config(tmp_path, f'database = "t.db"\ndatabase_password_file = "{secret}"'))


def test_the_password_reaches_the_server_and_nothing_else(password_database: str, tmp_path: Path) -> None:
    secret = tmp_path / "pg.password"
    secret.write_text(PASSWORD + "\n")
    os.chmod(secret, 0o600)
    config_path = write_config(
        tmp_path, f'database = "{password_database}"\ndatabase_password_file = "{secret}"'
    )
    config = load_config(config_path)
    tracking = Tracking(tracking_database(config.engine), redact=redactor_for(config).redact)
    tracking.ensure_rows("eu", ["app"])
    tracking.mark_failed("eu", "app", f"registry said: {PASSWORD}", None)
    tracking.log("error", f"echo {PASSWORD}", site="eu")
    tracking.close()
    # status (the command line) reads it with the password, and never prints it
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "geo_tui", "--config", str(config_path), "status"]
    status = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert status.returncode in (0, 1), status.stderr
    assert "app" in status.stdout and "[redacted]" in status.stdout
    # a wrong password: one clear line, no traceback, no password (neither the right nor the wrong one)
    secret.write_text("wrong-" + PASSWORD + "\n")
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "password authentication failed" in refused.stderr and password_database in refused.stderr
    dump = _everything_stored(password_database)
    assert "[redacted]" in dump
    for output in (status.stdout, status.stderr, refused.stdout, refused.stderr, dump):
        assert PASSWORD not in output


def _everything_stored(url: str) -> str:
    """Every value of every table of the database, as text."""
    with psycopg.connect(url.replace(f"{PASSWORD_ROLE}@", "geo@")) as db:
        tables = [r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return "\n".join(str(row) for table in tables for row in db.execute(f"SELECT * FROM {table}"))


# -- migrate -----------------------------------------------------------------------------------------


def test_a_moved_database_numbers_new_notifications_and_pushes_after_the_moved_ones(
    postgres_database: PostgresDatabase, tmp_path: Path
) -> None:
    source = Tracking(tmp_path / "t.db")
    source.ensure_rows("eu", ["app"])
    for i in range(3):
        source.record_notifications(
            [(f"e{i}", "push", "app", "v1", "sha256:1")], [], 1.0, [("app", "v1", "sha256:1")]
        )
    source.close()
    copied = move_to_postgres(tmp_path / "t.db", postgres_database)
    assert copied["notifications"] == 3 and copied["push_queue"] == 3 and copied["repositories"] == 1
    moved = Tracking(postgres_database)
    try:
        moved.record_notifications(
            [("e3", "push", "app", "v2", "sha256:2")], [], 2.0, [("app", "v2", "sha256:2")]
        )
        assert [p.id for p in moved.queued_pushes()] == [1, 2, 3, 4]
        ids = [int(r[0]) for r in moved._query("SELECT id FROM notifications ORDER BY id")]
        assert ids == [1, 2, 3, 4]
    finally:
        moved.close()
    with pytest.raises(TargetNotEmpty, match="is not empty"):
        move_to_postgres(tmp_path / "t.db", postgres_database)


def test_a_session_idle_in_a_transaction_is_ended_by_the_server(postgres_database: PostgresDatabase) -> None:
    """A worker frozen inside a transaction must not hold its locks (the push claims' turn) for ever: its
    connections ask the server to end a session idle in a transaction, and keep the URL's own options."""
    from geo_tui.engine.tracking.postgres import IDLE_IN_TRANSACTION_MS, is_passing_fault

    with postgres_database.connect() as conn:
        (value,) = conn.execute("SELECT current_setting('idle_in_transaction_session_timeout')").fetchone()
        assert value == f"{IDLE_IN_TRANSACTION_MS // 1000}s"
    with_options = dataclasses.replace(
        postgres_database, url=postgres_database.url + "?options=-c%20lock_timeout%3D7000"
    )
    with with_options.connect(application="geo-tui test") as conn:
        row = conn.execute(
            "SELECT current_setting('lock_timeout'), current_setting('idle_in_transaction_session_timeout')"
        ).fetchone()
        assert tuple(row) == ("7s", f"{IDLE_IN_TRANSACTION_MS // 1000}s")
    # The server ends it: a transaction left open past a (shortened) timeout loses its session.
    with postgres_database.connect(options="-c idle_in_transaction_session_timeout=300") as conn:
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(4242)")
        time.sleep(0.8)
        with pytest.raises(psycopg.Error) as ended:
            conn.execute("SELECT 1")
        assert is_passing_fault(ended.value)  # the engine reopens its connection and tries again
    with postgres_database.connect() as other:  # and its lock went with it
        assert other.execute("SELECT pg_try_advisory_xact_lock(4242)").fetchone()[0] is True
