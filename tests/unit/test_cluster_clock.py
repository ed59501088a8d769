"""Workers on hosts whose clocks disagree (issue 16): each stamps the tracking database with the server's
clock (engine/tracking/clock.py), so a host two minutes ahead neither takes a live worker's leases nor
ends a live leader's session. On a real PostgreSQL server, engine by engine (no registry), with the
skewed host's clock as a wall clock plus two minutes; the same engine with that clock used as it is
(not set to the server's) does both, which is what the alignment prevents."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from geo_tui.engine import Engine
from geo_tui.engine.tracking import Tracking
from geo_tui.engine.tracking.clock import DatabaseClock
from geo_tui.engine.tracking.postgres import PostgresDatabase
from geo_tui.engine.updates import LogLine, Update
from tests.unit.test_workers import REPOSITORIES, claim, config_for, leases

AHEAD = 120.0  # seconds the skewed host's clock runs ahead of the others' (and the server's)


def ahead() -> float:
    return time.time() + AHEAD


# -- the clock, pure --------------------------------------------------------------------------------------


def test_the_offset_is_taken_from_the_quickest_round_trip() -> None:
    local = iter([100.0, 100.4, 200.0, 200.02, 300.0, 300.2])  # trips of 0.4, 0.02 and 0.2 s
    answers = iter([1100.3, 1200.0, 1300.0])
    clock = DatabaseClock(lambda: next(local))
    assert not clock.aligned and clock.offset == 0.0
    assert clock.align(lambda: next(answers)) == pytest.approx(1200.0 - 200.01)
    assert clock.aligned and clock.error == pytest.approx(0.01)


def test_a_failed_measurement_keeps_the_last_offset() -> None:
    clock = DatabaseClock(lambda: 50.0)
    clock.align(lambda: 80.0)
    assert clock() == 80.0

    def gone() -> float:
        raise OSError("server closed the connection")

    with pytest.raises(OSError):
        clock.align(gone)
    assert clock.offset == 30.0 and clock() == 80.0


# -- on a real server ---------------------------------------------------------------------------------------


def gauge(engine: Engine, name: str) -> float:
    (value,) = [
        line.split()[1]
        for line in engine.metrics.render().decode().splitlines()
        if line.startswith(name + " ")
    ]
    return float(value)


def two_hosts(
    tmp_path: Path,
    database: str,
    skewed_clock: Callable[[], float],
    body: Callable[[Engine, Engine, list[tuple[str, str]]], Awaitable[None]],
) -> None:
    """Worker A on a host whose clock is right, worker B on one whose clock is `skewed_clock`."""

    async def main() -> None:
        a = Engine(config_for(tmp_path / "a", database))
        b = Engine(config_for(tmp_path / "b", database), clock=skewed_clock)
        await a.open()
        await a._db(a.tracking.ensure_rows, "eu", REPOSITORIES)
        await a._db(a.tracking.ensure_rows, "us", REPOSITORIES)
        said_b: list[tuple[str, str]] = []

        def keep(update: Update) -> None:
            if isinstance(update, LogLine):
                said_b.append((update.record.level, update.record.message))

        b.subscribe(keep)
        await b.open()
        try:
            await body(a, b, said_b)
        finally:
            for engine in (a, b):
                for job in engine.scheduler.jobs.values():
                    job.cancel()
                await engine.close()

    asyncio.run(main())


def test_a_host_whose_clock_runs_ahead_keeps_to_the_servers_time(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    async def body(a: Engine, b: Engine, said_b: list[tuple[str, str]]) -> None:
        clock = b._clock
        assert isinstance(clock, DatabaseClock) and clock.aligned
        assert clock.offset == pytest.approx(-AHEAD, abs=1.0)  # PostgreSQL runs on this host's clock
        assert b._clock() == pytest.approx(time.time(), abs=1.0)
        warned = [m for level, m in said_b if level == "warning" and "clock" in m]
        assert len(warned) == 1 and warned[0].startswith(
            "this host's clock is 120.0 s ahead of the tracking database's"
        )
        assert gauge(b, "geo_tui_clock_offset_seconds") == pytest.approx(-AHEAD, abs=1.0)
        assert gauge(a, "geo_tui_clock_offset_seconds") == pytest.approx(0.0, abs=1.0)

        claimed = await claim(a)  # A copies two repositories, under leases of 30 s by the server's clock
        held = leases(a)
        assert len(held) == 4 and set(held.values()) == {a.leases.owner}
        await b.leases.sweep()  # B's sweep finds nothing run out
        assert b.leases.expired == 0 and leases(a) == held
        taken = await claim(b)  # and B claims other repositories, not A's
        assert taken and not set(taken) & set(claimed)

        await a.leadership._try()
        assert a.leadership.leads
        await b.leadership._try()  # A's heartbeat is seconds old by the server's clock: A is left alone
        assert a.leadership.leads and not b.leadership.leads
        assert await a.leadership.confirm("discovery") is not None
        assert not [m for _, m in said_b if "took the leadership" in m]

        # Once a minute (on a heartbeat) the offset is measured again: the host's clock stepped back.
        b._clock._local = time.time  # type: ignore[attr-defined]
        b.leases._aligned_at = None
        assert await b.leases.tick()
        assert clock.offset == pytest.approx(0.0, abs=1.0)
        assert said_b[-1] == ("info", "this host's clock is within 1 s of the tracking database's again")

    two_hosts(tmp_path, postgres_database.url, DatabaseClock(ahead), body)


def test_without_the_servers_time_that_host_takes_live_leases_and_the_lead(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    """What the alignment prevents: the same host, its clock used as it is."""

    async def body(a: Engine, b: Engine, said_b: list[tuple[str, str]]) -> None:
        assert gauge(b, "geo_tui_clock_offset_seconds") == 0.0  # nothing measured
        await claim(a)
        held = leases(a)
        await b.leases.sweep()
        assert b.leases.expired == len(held) == 4  # A's leases "ran out" two minutes early
        await a.leadership._try()
        await b.leadership._try()
        assert b.leadership.leads
        assert any(m.startswith("took the leadership over from worker") for _, m in said_b)

    two_hosts(tmp_path, postgres_database.url, ahead, body)


def test_status_reads_heartbeat_ages_by_the_servers_clock(postgres_database: PostgresDatabase) -> None:
    skewed = DatabaseClock(ahead)
    tracking = Tracking(postgres_database, clock=skewed)
    try:
        assert skewed.offset == pytest.approx(-AHEAD, abs=1.0)
        tracking.register_worker("elsewhere/1/1.000", time.time(), "")
        (worker,) = [w for w in tracking.workers() if w.id == "elsewhere/1/1.000"]
        assert tracking.now() - worker.heartbeat_at == pytest.approx(0.0, abs=1.0)
        assert tracking.align_clock() is skewed
        plain = Tracking(postgres_database, clock=ahead)
        try:
            assert plain.align_clock() is None  # a clock the caller brought is used as it is
        finally:
            plain.close()
    finally:
        tracking.close()
