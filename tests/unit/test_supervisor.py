"""The supervisor of the engine's background tasks: a task that raises is logged, restarted after a
backoff and counted; one down (failing, or stuck in a cycle) longer than its interval is named."""

from __future__ import annotations

import asyncio
import random

from geo_tui.engine.supervisor import Supervisor

INTERVAL = 0.3


def make() -> tuple[Supervisor, list[str], list[str]]:
    reports: list[str] = []
    restarts: list[str] = []
    supervisor = Supervisor(
        report=lambda task, message: reports.append(message),
        restarted=restarts.append,
        describe=lambda exc: f"{type(exc).__name__}: {exc}",
        restart_delay=0.02,
        rng=random.Random(1),
    )
    return supervisor, reports, restarts


async def test_a_task_that_raises_is_reported_restarted_and_counted() -> None:
    supervisor, reports, restarts = make()
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        with supervisor.cycle("discovery"):
            if runs <= 2:
                raise OSError("disk I/O error")
        await asyncio.Event().wait()  # then it keeps going, like a healthy forever-task

    supervisor.start("discovery", flaky, interval=INTERVAL)
    for _ in range(100):
        if runs == 3:
            break
        await asyncio.sleep(0.01)
    await supervisor.stop()
    assert runs == 3
    assert restarts == ["discovery", "discovery"]
    assert len(reports) == 2 and reports[0].startswith("discovery task failed: OSError: disk I/O error; ")
    assert "restarting in" in reports[0] and "Traceback" not in reports[0]


async def test_a_task_down_longer_than_its_interval_is_named_until_a_cycle_completes() -> None:
    supervisor, _, restarts = make()
    failing = True

    async def discovery() -> None:
        while True:
            with supervisor.cycle("discovery"):
                if failing:
                    raise RuntimeError("database is locked")
            await asyncio.sleep(0.01)

    async def flush() -> None:
        while True:
            supervisor.beat("flush")
            await asyncio.sleep(0.01)

    supervisor.start("discovery", discovery, interval=INTERVAL)
    supervisor.start("flush", flush, interval=INTERVAL)
    await asyncio.sleep(INTERVAL / 2)
    assert supervisor.down() == []  # failing, but not for long yet
    await asyncio.sleep(INTERVAL)
    assert supervisor.down() == ["discovery"]
    assert len(restarts) >= 2
    failing = False
    for _ in range(100):
        if not supervisor.down():
            break
        await asyncio.sleep(0.02)
    assert supervisor.down() == []
    await supervisor.stop()


async def test_a_cycle_stuck_longer_than_the_interval_counts_as_down() -> None:
    supervisor, _, restarts = make()
    release = asyncio.Event()

    async def health() -> None:
        while True:
            with supervisor.cycle("health"):
                await release.wait()
            release.clear()

    supervisor.start("health", health, interval=INTERVAL)
    await asyncio.sleep(INTERVAL * 1.5)
    assert supervisor.down() == ["health"] and restarts == []
    release.set()
    await asyncio.sleep(0.02)
    assert supervisor.down() == []
    await supervisor.stop()


async def test_a_forever_task_that_returns_is_restarted_too() -> None:
    supervisor, reports, restarts = make()
    runs = 0

    async def ends() -> None:
        nonlocal runs
        runs += 1
        if runs > 1:
            await asyncio.Event().wait()

    supervisor.start("flush", ends, interval=INTERVAL)
    await asyncio.sleep(0.2)
    await supervisor.stop()
    assert runs == 2 and restarts == ["flush"]
    assert "the task returned" in reports[0]


async def test_a_heartbeat_task_alive_but_not_getting_round_counts_as_down() -> None:
    """The scheduler blocked outside any cycle (awaiting something that never answers) neither raises nor
    sits in a cycle: only its heartbeat shows it is stuck. A task without a heartbeat that sleeps longer
    than its interval between cycles (discovery between reconciles) is not down."""
    supervisor, _, restarts = make()
    blocked = asyncio.Event()
    release = asyncio.Event()

    async def scheduler() -> None:
        while True:
            supervisor.beat("scheduler")
            if blocked.is_set():
                await release.wait()  # alive, awaiting, not round again
                blocked.clear()
            await asyncio.sleep(0.01)

    async def discovery() -> None:
        while True:
            with supervisor.cycle("discovery"):
                await asyncio.sleep(0.01)
            await asyncio.sleep(INTERVAL * 10)  # a reconcile interval asleep: not a stall

    supervisor.start("scheduler", scheduler, interval=INTERVAL, heartbeat=True)
    supervisor.start("discovery", discovery, interval=INTERVAL)
    await asyncio.sleep(INTERVAL * 1.5)
    assert supervisor.down() == []  # beating, and the sleeper has no heartbeat
    blocked.set()
    await asyncio.sleep(INTERVAL / 2)
    assert supervisor.down() == []  # stuck, but not for long yet
    await asyncio.sleep(INTERVAL)
    assert supervisor.down() == ["scheduler"] and restarts == []
    release.set()
    await asyncio.sleep(0.05)
    assert supervisor.down() == []
    await supervisor.stop()


async def test_a_heartbeat_task_inside_a_long_cycle_is_watched_by_the_cycle() -> None:
    """One verification longer than the gap since the last beat, but shorter than the interval, is work in
    progress, not a stall; a cycle that completes counts as a round."""
    supervisor, _, _ = make()
    release = asyncio.Event()

    async def verification() -> None:
        supervisor.beat("verification")
        await asyncio.sleep(INTERVAL * 0.8)  # most of the interval without a beat
        with supervisor.cycle("verification"):
            await release.wait()
        await asyncio.Event().wait()  # then nothing more: its heartbeat stops

    supervisor.start("verification", verification, interval=INTERVAL, heartbeat=True)
    await asyncio.sleep(INTERVAL * 1.3)  # 1.3 intervals since the beat, 0.5 inside the cycle
    assert supervisor.down() == []
    release.set()
    await asyncio.sleep(INTERVAL * 0.5)
    assert supervisor.down() == []  # the cycle that ended was a round
    await asyncio.sleep(INTERVAL * 0.8)
    assert supervisor.down() == ["verification"]
    await supervisor.stop()


async def test_a_failure_reported_elsewhere_restarts_the_task_without_a_line_of_its_own() -> None:
    """The tracking database away: its outage is logged once by the engine, and the tasks failing on it
    meanwhile are down and restarted, each without a line per try; another failure is still reported."""
    reports: list[str] = []
    restarts: list[str] = []
    supervisor = Supervisor(
        report=lambda task, message: reports.append(message),
        restarted=restarts.append,
        describe=lambda exc: f"{type(exc).__name__}: {exc}",
        restart_delay=0.02,
        rng=random.Random(1),
        reported_elsewhere=lambda exc: isinstance(exc, ConnectionError),
    )
    runs = 0

    async def verification() -> None:
        nonlocal runs
        runs += 1
        with supervisor.cycle("verification"):
            if runs <= 3:
                raise ConnectionError("the database server closed the connection")
            if runs == 4:
                raise OSError("disk I/O error")
        await asyncio.Event().wait()

    supervisor.start("verification", verification, interval=0.05)
    for _ in range(200):
        if runs == 5:
            break
        await asyncio.sleep(0.01)
    down_while_failing = supervisor.states()[0].restarts
    await supervisor.stop()
    assert runs == 5
    assert restarts == ["verification"] * 4 and down_while_failing == 4
    assert len(reports) == 1 and reports[0].startswith("verification task failed: OSError: disk I/O error")


async def test_a_task_failing_on_a_fault_reported_elsewhere_still_counts_as_down() -> None:
    supervisor = Supervisor(
        report=lambda task, message: None,
        restarted=lambda task: None,
        describe=str,
        restart_delay=0.05,
        rng=random.Random(1),
        reported_elsewhere=lambda exc: True,
    )

    async def failing() -> None:
        with supervisor.cycle("discovery"):
            raise ConnectionError("gone")

    supervisor.start("discovery", failing, interval=0.1)
    await asyncio.sleep(0.3)
    down = supervisor.down()
    await supervisor.stop()
    assert down == ["discovery"]
