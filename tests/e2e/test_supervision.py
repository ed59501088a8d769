"""Nothing stops in silence (issue 12, case 4): a tracking database that refuses writes for a while (another
process holding the write lock, a full file system) delays only the work that writes. `/-/health` stays
fast and names the background task that is down, the supervisor restarts it and counts the restart, a
notification that cannot be stored gets a quick 503 that the primary's Distribution retries, and the
reconcile resumes once the database takes writes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from geo_tui.config import load_config
from geo_tui.engine import Engine
from geo_tui.engine import engine as engine_module
from geo_tui.engine.scheduler import Scheduler
from geo_tui.engine.tracking import Tracking
from geo_tui.service.receiver import ReceiverApp
from tests.e2e.test_serve import assert_log_clean, db_query, notification, post, tag_digests_safe
from tests.support.distribution import Distribution, free_port
from tests.support.geo import write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.push import RawPusher
from tests.support.served import EVENTS, NOTIFY_SECRET, Served, wait_until

pytestmark = pytest.mark.timeout(180)

# Longer than a whole missed discovery: up to one reconcile interval (10 s, the least allowed) asleep, the
# catalog read and a 5 s write timeout, then 10 s more before it counts as down; with room for a busy machine.
LOCK_SECONDS = 35.0
RESTARTS = re.compile(r'^geo_tui_task_restarts_total\{task="discovery"\} (\d+)', re.M)


@pytest.fixture
def served(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> Iterator[tuple[Distribution, Distribution, Served]]:
    port = free_port()
    primary = registry_factory(
        "primary", notification_url=f"http://127.0.0.1:{port}{EVENTS}", notification_secret=NOTIFY_SECRET
    )
    secondary = registry_factory("secondary")
    config = write_geo_config(
        tmp_path / "geo",
        primary,
        [secondary],
        key_pair,
        engine={"reconcile_interval": 10},
        notifications={"listen": f"127.0.0.1:{port}", "secret": NOTIFY_SECRET},
    )
    process = Served(config, port, tmp_path / "serve.log").start()
    try:
        yield primary, secondary, process
    finally:
        process.stop(signal.SIGKILL)


@contextlib.contextmanager
def write_lock(database: Path) -> Iterator[None]:
    """Another process's view: a second connection holds the database's write lock."""
    holder = sqlite3.connect(database, isolation_level=None, timeout=5)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def restarts(process: Served) -> int:
    found = RESTARTS.search(httpx.get(process.url + "/metrics", timeout=2).text)
    return int(found.group(1)) if found else -1


def test_a_locked_database_delays_only_what_writes_and_loses_no_notification(
    served: tuple[Distribution, Distribution, Served],
) -> None:
    primary, secondary, process = served
    database = process.config.parent / "tracking.db"
    with RawPusher.for_registry(primary) as pusher, RawPusher.for_registry(secondary) as target:
        before = oci_image("lock-before")
        pusher.push_tree("lock/before", before, "v1")
        wait_until(
            lambda: tag_digests_safe(target, "lock/before") == {"v1": before.digest}, what="replication"
        )
        restarts_before = restarts(process)

        during = oci_image("lock-during")
        latencies: list[float] = []
        down_seen: list[list[str]] = []
        with write_lock(database), httpx.Client(base_url=process.url, timeout=5) as client:
            locked_at = time.time()
            # Distribution posts this push's event now; it cannot be stored until the lock goes.
            pusher.push_tree("lock/during", during, "v1")
            started = time.monotonic()
            refused = post(process, {"events": [notification("lock/manual")]})
            refused_after = time.monotonic() - started
            while time.monotonic() - started < LOCK_SECONDS:
                asked = time.monotonic()
                answer = client.get("/-/health")
                latencies.append(time.monotonic() - asked)
                if answer.status_code == 503:
                    down_seen.append(answer.json()["tasks_down"])
                time.sleep(0.2)
            restarted = restarts(process)

        # Stored only now, when Distribution sent it again: the push made during the lock is replicated.
        wait_until(
            lambda: tag_digests_safe(target, "lock/during") == {"v1": during.digest},
            timeout=40,
            what="the push made during the lock replicated",
        )
        wait_until(lambda: httpx.get(process.url + "/-/health").status_code == 200, timeout=30, what="health")

    print(
        f"\n/-/health while locked: {len(latencies)} answers, max {max(latencies) * 1000:.0f} ms; "
        f"refused notification after {refused_after:.1f} s (machine shared)"
    )
    assert refused.status_code == 503, refused.text
    assert refused_after < 6, refused_after
    assert max(latencies) < 0.5, max(latencies)
    assert ["discovery"] in down_seen, down_seen
    assert restarts_before == 0 and restarted >= 1, (restarts_before, restarted)

    # The event itself is not lost: Distribution sends it again until it is stored (its backoff decides when).
    def stored() -> list[tuple[float]]:
        return [
            (float(at),)
            for (at,) in db_query(
                process.config.parent,
                "SELECT received_at FROM notifications WHERE repository = 'lock/during' AND action = 'push'",
            )
        ]

    wait_until(lambda: bool(stored()), timeout=60, what="the event of the push made during the lock stored")
    assert all(at >= locked_at for (at,) in stored()), stored()
    log = process.log_path.read_text()
    assert "discovery task failed" in log and "restarting in" in log, log[-3000:]
    assert_log_clean(process.log_path)


async def test_a_full_disk_for_a_while_does_not_end_the_reconcile(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No notifications: only the reconcile can find what is pushed while the disk is full.
    config = write_geo_config(
        tmp_path / "geo", primary, [secondary], key_pair, engine={"reconcile_interval": 10}
    )
    full = threading.Event()
    real_tx = Tracking._tx

    @contextlib.contextmanager
    def tx(self: Tracking, fence: object | None = None) -> Iterator[sqlite3.Connection]:
        if full.is_set():  # what SQLite raises when the file system has no room left
            raise sqlite3.OperationalError("database or disk is full")
        with real_tx(self, fence) as db:
            yield db

    monkeypatch.setattr(Tracking, "_tx", tx)

    async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(predicate):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.2)

    async with Engine(load_config(config)) as engine:
        await engine.start()
        first = oci_image("full-first")
        primary_pusher.push_tree("full/first", first, "v1")
        await until(
            lambda: tag_digests_safe(secondary_pusher, "full/first") == {"v1": first.digest}, 30, "first"
        )

        full.set()
        later = oci_image("full-later")
        primary_pusher.push_tree("full/later", later, "v1")
        await until(lambda: engine.tasks_down() == ["discovery"], 30, "discovery down")
        assert engine.snapshot().tasks_down == ("discovery",)
        counted = engine.metrics.registry.get_sample_value(
            "geo_tui_task_restarts_total", {"task": "discovery"}
        )
        assert counted is not None and counted >= 1
        full.clear()

        await until(
            lambda: tag_digests_safe(secondary_pusher, "full/later") == {"v1": later.digest}, 45, "later"
        )
        await until(lambda: engine.tasks_down() == [], 15, "discovery back")
        messages = [r.message for r in engine.tracking.recent_log()]
    assert any("discovery task failed" in m and "disk is full" in m for m in messages), messages


async def test_a_scheduler_alive_but_stuck_is_down_in_health_metrics_and_the_snapshot(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scheduler blocked on an await that never answers neither raises nor sits in a cycle: its heartbeat
    stops, and once it has not got round for longer than its interval it is down (health, metrics, the
    console's snapshot), without a restart; it is up again once it gets round."""
    monkeypatch.setattr(engine_module, "LOOP_TASK_INTERVAL", 2.0)
    config = write_geo_config(
        tmp_path / "geo", primary, [secondary], key_pair, engine={"reconcile_interval": 10}
    )
    stuck, release = threading.Event(), asyncio.Event()
    real_wait = Scheduler._wait

    async def wait(self: Scheduler, wake: asyncio.Event, timeout: float) -> None:
        if stuck.is_set():
            await release.wait()  # the scheduler's await that does not come back
        await real_wait(self, wake, timeout)

    monkeypatch.setattr(Scheduler, "_wait", wait)

    async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(predicate):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.2)

    def down_gauge(engine: Engine, task: str) -> float | None:
        return engine.metrics.registry.get_sample_value("geo_tui_task_down", {"task": task})

    async with Engine(load_config(config)) as engine:
        await engine.start()
        receiver = ReceiverApp(engine, None)
        first = oci_image("stuck-first")
        primary_pusher.push_tree("stuck/first", first, "v1")
        await until(
            lambda: tag_digests_safe(secondary_pusher, "stuck/first") == {"v1": first.digest}, 30, "first"
        )
        assert engine.tasks_down() == [] and down_gauge(engine, "scheduler") == 0.0

        stuck.set()
        await until(lambda: engine.tasks_down() == ["scheduler"], 20, "the scheduler named down")
        assert engine.snapshot().tasks_down == ("scheduler",)  # what the console's header shows
        health = await receiver.health()
        assert health["tasks_down"] == ["scheduler"] and health["status"] == "task down: scheduler"
        assert down_gauge(engine, "scheduler") == 1.0 and down_gauge(engine, "flush") == 0.0
        restarts = engine.metrics.registry.get_sample_value(
            "geo_tui_task_restarts_total", {"task": "scheduler"}
        )
        assert restarts == 0.0  # alive all along: nothing to restart

        stuck.clear()
        release.set()
        await until(lambda: engine.tasks_down() == [], 15, "the scheduler back")
        assert down_gauge(engine, "scheduler") == 0.0
