"""PostgreSQL reads through psycopg-pool, off the event loop (issue 16), on a real server: a small pool
with our session settings, reads bounded on the server and while waiting for a connection, a frozen
server (SIGSTOP) that costs the loop nothing and a read nothing once it continues; SQLite reads in place."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from geo_tui.engine import Tracking
from geo_tui.engine.database import DatabaseReader, is_passing_fault
from geo_tui.engine.reads import reader_for
from geo_tui.engine.tracking.postgres import IDLE_IN_TRANSACTION_MS, PostgresDatabase
from geo_tui.engine.tracking.read_pool import READ_POOL_SIZE, READ_TIMEOUT, PostgresReadPool, ReadUnanswered
from tests.support.postgres import PASSWORD_ROLE, PostgresCluster

PASSWORD = "pool-Secret-1b9e77c0-never-shown"


def test_reads_share_a_small_pool_of_sessions_with_our_settings(postgres_database: PostgresDatabase) -> None:
    tracking = Tracking(postgres_database)
    try:
        assert tracking.threaded_reads
        tracking.ensure_rows("eu", ["app"])
        sql = (
            "SELECT pg_backend_pid() AS pid, current_setting('statement_timeout') AS statement, "
            "current_setting('idle_in_transaction_session_timeout') AS idle, "
            "current_setting('application_name') AS name, pg_sleep(0.3) AS slept"
        )
        with ThreadPoolExecutor(10) as threads:  # more readers at once than the pool has connections
            found = list(threads.map(lambda _: tracking._query(sql)[0], range(10)))
        pids = {row["pid"] for row in found}
        assert 1 < len(pids) <= READ_POOL_SIZE[1], pids
        assert tracking.writer_pid not in pids  # the writes keep their own connection
        assert {row["statement"] for row in found} == {f"{int(READ_TIMEOUT)}s"}
        assert {row["idle"] for row in found} == {f"{IDLE_IN_TRANSACTION_MS // 1000}s"}
        assert all(str(row["name"]).startswith("geo-tui tracking reader") for row in found)
        assert tracking.row("eu", "app") is not None  # the tracking reads themselves take the pool
    finally:
        tracking.close()


def test_a_read_the_server_does_not_finish_in_time_is_a_passing_fault(
    postgres_database: PostgresDatabase,
) -> None:
    pool = PostgresReadPool(postgres_database, "geo-tui test", timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as cancelled:
            pool.read("SELECT pg_sleep(5)", ())
        assert time.monotonic() - started < 2.0
        assert is_passing_fault(cancelled.value), cancelled.value
        assert pool.read("SELECT ? + 1", (41,))[0][0] == 42  # the session is fine for the next read
    finally:
        pool.close()


def test_waiting_for_a_pooled_connection_is_bounded(postgres_database: PostgresDatabase) -> None:
    pool = PostgresReadPool(postgres_database, "geo-tui test", size=(1, 1), timeout=0.5)
    try:
        with pool._pool.connection():  # the only connection, held elsewhere
            started = time.monotonic()
            with pytest.raises(ReadUnanswered) as waited:
                pool.read("SELECT 1", ())
            assert time.monotonic() - started < 2.0
        assert is_passing_fault(waited.value)
        # said as the reader's own deadline is, not in the pool's words (an API answer shows it)
        assert str(waited.value) == (
            "the tracking database answered no read in 0.5 s "
            "(every connection of the read pool was waiting on it)"
        )
        assert isinstance(waited.value.__context__, PoolTimeout)
        assert pool.read("SELECT 1", ())[0][0] == 1
    finally:
        pool.close()


async def test_a_frozen_server_costs_the_loop_nothing_and_reads_resume_when_it_continues(
    own_cluster: PostgresCluster,
) -> None:
    tracking = Tracking(PostgresDatabase(own_cluster.url(own_cluster.database())))
    tracking.ensure_rows("eu", ["app"])
    reader = DatabaseReader(READ_POOL_SIZE[1], 1.0, ReadUnanswered)
    gaps: list[float] = []
    ticking = True

    async def tick() -> None:  # the loop's heartbeat: how long it went without running this
        last = time.monotonic()
        while ticking:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.ensure_future(tick())
    try:
        assert (await reader(tracking.row, "eu", "app")) is not None
        with own_cluster.frozen() as stopped:
            assert len(stopped) >= 3  # the postmaster and its processes
            unanswered: list[float] = []
            for _ in range(READ_POOL_SIZE[1] + 2):  # more than there are reading threads
                started = time.monotonic()
                with pytest.raises(ReadUnanswered) as fault:
                    await reader(tracking.rows)
                unanswered.append(time.monotonic() - started)
                assert is_passing_fault(fault.value)
                assert "answered no read in 1 s" in str(fault.value)
        assert max(unanswered) < 2.0, unanswered  # 1 s, and a late wake on a loaded machine
        continued = time.monotonic()
        while True:  # the reads waiting on the server finish; the next read is answered
            try:
                row = await reader(tracking.row, "eu", "app")
                break
            except ReadUnanswered:
                assert time.monotonic() - continued < 15, "reads never came back"
        assert row is not None and row.repository == "app"
        print(
            f"frozen reads gave up after {max(unanswered):.2f} s at most; answered again "
            f"{time.monotonic() - continued:.2f} s after SIGCONT; longest loop gap {max(gaps) * 1000:.0f} ms"
        )
        assert max(gaps) < 0.9, max(gaps)  # never held by a read (1 s each); 0.3 s seen on a loaded machine
    finally:
        ticking = False
        await ticker
        reader.close()
        tracking.close()


async def test_sqlite_reads_run_in_place_on_the_loop(tmp_path: Path) -> None:
    tracking = Tracking(tmp_path / "t.db")
    try:
        tracking.ensure_rows("eu", ["app"])
        reader = reader_for(tracking)
        assert not tracking.threaded_reads and not reader.threaded
        seen: list[int] = []

        def read() -> object:
            seen.append(threading.get_ident())
            return tracking.row("eu", "app")

        assert await reader(read) is not None
        assert seen == [threading.get_ident()]
    finally:
        tracking.close()


def test_the_pool_logs_in_with_the_password_and_never_shows_it(
    postgres_cluster: PostgresCluster, local_files: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with postgres_cluster.admin() as db:
        db.execute(f"ALTER ROLE {PASSWORD_ROLE} PASSWORD '{PASSWORD}'")
    url = postgres_cluster.url(postgres_cluster.database(owner=PASSWORD_ROLE), user=PASSWORD_ROLE)
    caplog.set_level(logging.DEBUG, logger="psycopg")
    tracking = Tracking(PostgresDatabase(url, PASSWORD))
    try:
        tracking.ensure_rows("eu", ["app"])
        assert tracking.row("eu", "app") is not None  # a pooled session, logged in with the password
        with postgres_cluster.admin() as db:  # its sessions dropped: the pool logs in again
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'geo-tui tracking reader%'"
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                assert tracking.row("eu", "app") is not None
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline
        shown = " ".join(
            [repr(tracking._pool), str(tracking._pool.stats() if tracking._pool else "")]
            + [record.getMessage() for record in caplog.records]
        )
        assert PASSWORD not in shown
    finally:
        tracking.close()


_READ_AND_EXIT = """
import asyncio, sys, time
from geo_tui.engine import Tracking
from geo_tui.engine.reads import reader_for
from geo_tui.engine.tracking.postgres import PostgresDatabase

tracking = Tracking(PostgresDatabase(sys.argv[1]))
reader = reader_for(tracking)
print("open", flush=True)
sys.stdin.readline()  # the server is frozen now

async def main() -> None:
    try:
        await reader(tracking.rows, timeout=0.5)
    except Exception as exc:
        print(type(exc).__name__, flush=True)

asyncio.run(main())
reader.close()
tracking.close()
print("closed", time.monotonic(), flush=True)
"""


def test_a_process_whose_read_waits_on_a_frozen_server_still_exits(own_cluster: PostgresCluster) -> None:
    """The reading threads are daemons: one stuck on a server that never answers does not hold the
    process's exit (a `serve` stopped during an outage ends)."""
    url = own_cluster.url(own_cluster.database())
    Tracking(PostgresDatabase(url)).close()  # migrated before the child opens it
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", _READ_AND_EXIT, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "open"
        with own_cluster.frozen():
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "ReadUnanswered"
            started = time.monotonic()
            assert child.wait(timeout=10) == 0
            exited = time.monotonic() - started
            assert child.stdout.readline().startswith("closed")
        print(f"exited {exited:.2f} s after its read gave up, the server still frozen")
        assert exited < 5
    finally:
        child.kill()
        child.wait()
