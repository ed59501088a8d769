"""Tracking writes on the database thread: another process's write lock delays the write, never the
event loop, and a write with a deadline gives up in time; reads go on meanwhile (WAL)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from geo_tui.engine.budget import Work, set_work
from geo_tui.engine.database import DatabaseBusy, DatabaseWriter, is_passing_fault
from geo_tui.engine.tracking import Tracking


@pytest.fixture
def tracking(tmp_path: Path) -> Tracking:
    return Tracking(tmp_path / "tracking.db", busy_timeout=0.2)


async def ticks_while(awaitable: object, every: float = 0.01) -> tuple[object, float]:
    """Await `awaitable` while a ticker runs on the loop; returns its result and the longest tick gap."""
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.ensure_future(ticker())
    try:
        result = await awaitable  # type: ignore[misc]
    finally:
        task.cancel()
    return result, max(gaps, default=0.0)


async def test_a_locked_database_delays_the_write_not_the_loop(tracking: Tracking) -> None:
    writer = DatabaseWriter(retry_delay=0.05, max_retry_delay=0.1)
    holder = sqlite3.connect(tracking.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    loop = asyncio.get_running_loop()
    loop.call_later(1.0, holder.execute, "ROLLBACK")
    started = time.monotonic()
    added, gap = await ticks_while(writer(tracking.ensure_rows, "eu", ["a/b"]))
    took = time.monotonic() - started
    writer.close()
    holder.close()
    assert added == 1 and took >= 0.9
    assert gap < 0.15, f"the loop stalled for {gap:.2f} s"
    assert [r.repository for r in tracking.rows()] == ["a/b"]


async def test_a_write_with_a_deadline_gives_up_in_time_and_reads_go_on(tracking: Tracking) -> None:
    writer = DatabaseWriter(retry_delay=0.05, max_retry_delay=0.1)
    tracking.ensure_rows("eu", ["kept/app"])
    holder = sqlite3.connect(tracking.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseBusy, match="locked"):
            await writer(tracking.ensure_rows, "eu", ["new/app"], timeout=0.5)
        assert time.monotonic() - started < 1.5
        assert [r.repository for r in tracking.rows()] == ["kept/app"]  # reading does not wait
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await writer(tracking.ensure_rows, "eu", ["new/app"]) == 1
    writer.close()


async def test_other_errors_are_not_retried() -> None:
    writer = DatabaseWriter()

    def broken() -> None:
        raise sqlite3.OperationalError("no such table: repositories")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await writer(broken)
    writer.close()
    assert is_passing_fault(sqlite3.OperationalError("database or disk is full"))
    assert is_passing_fault(sqlite3.OperationalError("database is locked"))
    assert not is_passing_fault(sqlite3.DatabaseError("file is not a database"))


def test_watchers_hear_when_writes_start_failing_and_when_one_goes_in_again() -> None:
    """The engine's DatabaseState hears of an outage once, and of its end once, however many retries."""
    heard: list[str | None] = []
    failures = iter([sqlite3.OperationalError("database is locked")] * 3)

    def write() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "stored"

    async def run() -> str:
        writer = DatabaseWriter(retry_delay=0.01)
        writer.watch(heard.append)
        try:
            assert await writer(lambda: "first") == "first"  # no fault yet: nothing to tell
            return await writer(write, timeout=5)
        finally:
            writer.close()

    assert asyncio.run(run()) == "stored"
    assert len(heard) == 2, heard
    assert heard[0] is not None and "database is locked" in heard[0] and heard[1] is None


async def test_a_push_copy_s_write_goes_ahead_of_the_ordinary_writes_waiting() -> None:
    writer = DatabaseWriter()
    order: list[str] = []
    held = threading.Event()
    first = asyncio.ensure_future(writer(held.wait, 5.0))  # the thread is busy with this one
    await asyncio.sleep(0.05)
    ordinary = [asyncio.ensure_future(writer(order.append, f"background {n}")) for n in range(3)]
    await asyncio.sleep(0.01)

    async def push_copy() -> None:
        set_work(Work())  # what a push job names its work
        await writer(order.append, "push")

    pushed = asyncio.ensure_future(push_copy())
    await asyncio.sleep(0.01)
    held.set()
    await asyncio.gather(first, pushed, *ordinary)
    writer.close()
    assert order == ["push", "background 0", "background 1", "background 2"]


async def test_an_urgent_write_goes_ahead_of_the_ordinary_writes_waiting() -> None:
    # The receiver's notification batches: no push work named, asked for as urgent.
    writer = DatabaseWriter()
    order: list[str] = []
    held = threading.Event()
    first = asyncio.ensure_future(writer(held.wait, 5.0))  # the thread is busy with this one
    await asyncio.sleep(0.05)
    ordinary = [asyncio.ensure_future(writer(order.append, f"background {n}")) for n in range(3)]
    await asyncio.sleep(0.01)
    urgent = asyncio.ensure_future(writer(order.append, "notification", urgent=True))
    await asyncio.sleep(0.01)
    held.set()
    await asyncio.gather(first, urgent, *ordinary)
    writer.close()
    assert order == ["notification", "background 0", "background 1", "background 2"]
