"""Wakes and the tracking database's state (engine/wakeups.py, engine/listen.py): the pure rules, and
NOTIFY/LISTEN on a real PostgreSQL server (a committed write wakes a listener in milliseconds; a
dropped listen connection is reported, reopened, and followed by a wake for what it missed)."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import psycopg

from geo_tui.engine import Tracking
from geo_tui.engine.listen import WakeListener
from geo_tui.engine.metrics import EngineMetrics
from geo_tui.engine.tracking.postgres import PostgresDatabase, read_wake_payload
from geo_tui.engine.wakeups import DatabaseState, Wake


def _sample(metrics: EngineMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


# -- Wake ------------------------------------------------------------------------------------------


def test_a_wake_names_its_first_cause_and_times_a_notified_one() -> None:
    async def run() -> None:
        metrics = EngineMetrics()
        wake = Wake("scheduler", metrics)
        wake.set("notify", time.time() - 0.004)
        wake.set("local")  # a later cause does not replace the first
        await asyncio.wait_for(wake.wait(), 1)
        assert wake.woke() == "notify"
        wake.clear()
        assert not wake.is_set()
        assert wake.woke() == "backstop"  # nothing set it: the poll interval ended the wait
        wake.clear()
        wake.set()
        assert wake.woke() == "local"
        for cause in ("notify", "backstop", "local"):
            assert _sample(metrics, "geo_tui_wakeups_total", part="scheduler", cause=cause) == 1
        count = _sample(metrics, "geo_tui_wake_seconds_count", part="scheduler")
        total = _sample(metrics, "geo_tui_wake_seconds_sum", part="scheduler")
        assert count == 1 and 0.004 <= total < 1.0  # only the notified wake is timed

    asyncio.run(run())


def test_wake_payloads_round_trip_and_foreign_ones_read_as_a_sync() -> None:
    assert read_wake_payload("push 1700000000.250000") == ("push", 1700000000.25)
    assert read_wake_payload("sync 12.5") == ("sync", 12.5)
    assert read_wake_payload("") == ("sync", None)
    assert read_wake_payload("hello world") == ("sync", None)


# -- DatabaseState ---------------------------------------------------------------------------------


def test_the_database_is_down_while_any_user_finds_it_down_and_each_outage_has_two_lines() -> None:
    lines: list[tuple[str, str]] = []
    metrics = EngineMetrics()
    state = DatabaseState(lambda level, message: lines.append((level, message)), metrics)
    assert state.up and state.describe() is None
    assert _sample(metrics, "geo_tui_tracking_database_up") == 1

    state.lost("writes", "OperationalError: connection refused")
    state.lost("listen", "listen connection lost: server closed the connection")
    assert not state.up
    assert _sample(metrics, "geo_tui_tracking_database_up") == 0
    described = state.describe()
    assert described is not None and "unreachable for" in described
    assert "writes: OperationalError" in described and "listen: listen connection lost" in described

    state.answered("writes")
    assert not state.up  # the listen connection is still down
    state.answered("reads")  # a user that never found it down changes nothing
    assert not state.up
    state.answered("listen")
    assert state.up and state.describe() is None
    assert _sample(metrics, "geo_tui_tracking_database_up") == 1

    assert [level for level, _ in lines] == ["error", "info"], lines
    assert "does not answer (writes: OperationalError: connection refused)" in lines[0][1]
    assert "answers again after" in lines[1][1]
    state.lost("reads", "again")
    assert state.outages == 2 and _sample(metrics, "geo_tui_tracking_database_outages_total") == 2


# -- NOTIFY / LISTEN on a real server -----------------------------------------------------------------


class _Heard:
    def __init__(self) -> None:
        self.wakes: asyncio.Queue[tuple[str, float | None, float]] = asyncio.Queue()
        self.states: asyncio.Queue[str | None] = asyncio.Queue()

    def wake(self, work: str, sent: float | None) -> None:
        self.wakes.put_nowait((work, sent, time.time()))

    def state(self, reason: str | None) -> None:
        self.states.put_nowait(reason)

    async def next_wake(self, *, notified: bool = True) -> tuple[str, float | None, float]:
        while True:
            work, sent, at = await asyncio.wait_for(self.wakes.get(), 10)
            if (sent is not None) == notified:
                return work, sent, at


def test_committed_work_wakes_a_listener_in_milliseconds_and_a_dropped_listen_reconnects(
    postgres_database: PostgresDatabase,
) -> None:
    tracking = Tracking(postgres_database)
    tracking.ensure_rows("eu", ["team/app"])

    async def run() -> list[float]:
        heard = _Heard()
        listener = WakeListener(postgres_database, asyncio.get_running_loop(), heard.wake, heard.state)
        listener.start()
        try:
            assert await asyncio.wait_for(heard.states.get(), 10) is None  # listening
            await heard.next_wake(notified=False)  # "look anyway" once listening
            latencies = []
            for _ in range(20):
                committed = time.time()
                assert tracking.request_sync(repositories=["team/app"]) == 1
                work, sent, at = await heard.next_wake()
                assert work == "sync" and sent is not None and sent <= committed + 0.5
                latencies.append(at - sent)
            tracking.record_notifications(
                [], [], time.time(), pushes=[("team/app", "v1", "sha256:" + "a" * 64)]
            )
            assert (await heard.next_wake())[0] == "push"
            # New repositories tracked (discovery on another engine), and the periodic reconcile.
            assert tracking.ensure_rows("eu", ["team/new"]) == 1
            assert (await heard.next_wake())[0] == "sync"
            assert tracking.request_reconcile() == 2
            assert (await heard.next_wake())[0] == "sync"
            assert tracking.request_sync(repositories=["nobody/here"]) == 0  # nothing queued: no NOTIFY

            # The listen connection dropped (a restart, a proxy): reported, reopened, and a wake follows
            # for whatever was committed meanwhile.
            with psycopg.connect(postgres_database.url, autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'geo-tui listener'"
                ).fetchall()
            assert ended == [(True,)]
            lost = await asyncio.wait_for(heard.states.get(), 10)
            assert lost is not None and "listen connection lost" in lost
            assert await asyncio.wait_for(heard.states.get(), 10) is None
            await heard.next_wake(notified=False)
            assert tracking.request_sync(repositories=["team/app"]) == 1
            assert (await heard.next_wake())[0] == "sync"
            assert listener.reconnects == 1
            return latencies
        finally:
            await asyncio.to_thread(listener.stop)

    try:
        latencies = asyncio.run(run())
    finally:
        tracking.close()
    median, worst = statistics.median(latencies), max(latencies)
    print(
        f"NOTIFY -> listener callback on the loop: median {median * 1000:.1f} ms, max {worst * 1000:.1f} ms"
    )
    assert median < 1.0  # generous: the figure is printed; a poll would show up as ~1 s


def test_sqlite_sends_no_notify_and_needs_none(tmp_path: Path) -> None:
    tracking = Tracking(tmp_path / "tracking.db")
    try:
        tracking.ensure_rows("eu", ["team/app"])
        assert tracking.request_sync(repositories=["team/app"]) == 1  # announce is a no-op there
    finally:
        tracking.close()
