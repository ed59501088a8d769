"""A frozen leader loses its singleton duties (issue 16), with two `geo-tui serve` workers on one real
PostgreSQL database and real Distribution registries.

Worker A leads; its process is frozen (SIGSTOP). Within a lease and a few seconds worker B ends A's
leadership session, leads (its log line, `geo-tui status`), and runs discovery, which finds a repository
pushed to the primary meanwhile, which B copies. A thaws (SIGCONT): it logs that it lost the lead and
runs no duty (a repository pushed after B's discovery stays untracked, though A was frozen longer than
its reconcile interval: its next discovery was due the moment it thawed), and exactly one worker leads
afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from geo_tui.engine.tracking.leadership import ENGINE_LOCK
from geo_tui.engine.tracking.postgres import PostgresDatabase
from tests.e2e.test_serve import assert_log_clean, db_query, wait_replicated
from tests.e2e.test_workers import sockets, start_worker, worker_config
from tests.support.distribution import Distribution
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.push import RawPusher
from tests.support.served import Served, wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.parametrize("registry_kind", ["distribution"], indirect=True),
]

__all__ = ["sockets"]  # the fixture, imported for this module's tests

LEASE = 2.0
RECONCILE = 10.0  # the shortest the config allows
LEADS = "this worker now runs discovery, the reconcile and verification"


def worker_id(worker: Served) -> str:
    rows = db_query(worker.config.parent, "SELECT id, listen FROM workers")
    found = [str(i) for i, listen in rows if f"127.0.0.1:{worker.port}" in str(listen)]
    assert len(found) == 1, rows
    return found[0]


def log_of(worker: Served, since: int = 0) -> str:
    return worker.log_path.read_text(errors="replace")[since:]


def lock_holders(worker: Served) -> list[int]:
    """The server processes holding the leadership lock in this database."""
    rows = db_query(
        worker.config.parent,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid::bigint = ? "
        "AND objid::bigint = ? AND objsubid = 1 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (ENGINE_LOCK >> 32, ENGINE_LOCK & 0xFFFFFFFF),
    )
    return [int(r[0]) for r in rows]


def status_workers(worker: Served) -> list[dict[str, object]]:
    """The workers as `geo-tui status --json` shows them."""
    done = subprocess.run(
        [sys.executable, "-m", "geo_tui", "--config", str(worker.config), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    found: list[dict[str, object]] = json.loads(done.stdout)["workers"]
    return found


def test_a_frozen_leader_is_taken_over_from_and_runs_no_duty_when_it_thaws(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    postgres_database: PostgresDatabase,
    sockets: Path,
    workers: list[Served],
) -> None:
    primary, eu = registry_factory("primary"), registry_factory("eu")
    base, fresh, late = oci_image("leader-base"), oci_image("leader-fresh"), oci_image("leader-late")
    with RawPusher.for_registry(primary) as pusher:
        pusher.push_tree("base/app", base, "v1")

    def make(reconcile: float) -> Callable[[Path, Path, int], Path]:
        def config(directory: Path, socket: Path, port: int) -> Path:
            return worker_config(
                directory, primary, [eu], key_pair, postgres_database, socket, port=port,
                engine={"lease_seconds": LEASE, "reconcile_interval": reconcile},
            )  # fmt: skip

        return config

    # A, the first, leads; its reconcile comes round every 10 s, B's every hour.
    a = start_worker("a", tmp_path, sockets, make(RECONCILE))
    workers.append(a)
    wait_until(lambda: LEADS in log_of(a), timeout=20, what="A leads")
    b = start_worker("b", tmp_path, sockets, make(3600.0))
    workers.append(b)
    with RawPusher.for_registry(eu) as on_eu:
        wait_replicated([on_eu], "base/app", {"v1": base.digest}, timeout=60)
    a_id, b_id = worker_id(a), worker_id(b)
    assert [w["id"] for w in status_workers(b) if w["leader"]] == [a_id]
    assert LEADS not in log_of(b)

    a.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    frozen = time.monotonic()
    try:
        with RawPusher.for_registry(primary) as pusher:
            pusher.push_tree("fresh/app", fresh, "v1")
        took = wait_until(
            lambda: f"took the leadership over from worker {a_id}" in log_of(b),
            timeout=30,
            what="B takes over",
        )
        print(f"A frozen -> B leads: {took:.1f} s (lease {LEASE:g} s)")
        assert took < LEASE + 8, took
        line = next(t for t in log_of(b).splitlines() if "took the leadership over" in t)
        assert "heartbeat is" in line and "longer than the lease (2 s)" in line, line
        wait_until(lambda: LEADS in log_of(b), timeout=5, what="B says it leads")
        # B's discovery finds what was pushed while A was frozen, and B copies it.
        with RawPusher.for_registry(eu) as on_eu:
            wait_replicated([on_eu], "fresh/app", {"v1": fresh.digest}, timeout=30)
        print(f"A frozen -> fresh/app on the secondary: {time.monotonic() - frozen:.1f} s")
        leaders = [w["id"] for w in status_workers(b) if w["leader"]]
        assert leaders == [b_id]
        # Pushed after B's discovery: B's reconcile is an hour off; only a duty of A's would track it.
        with RawPusher.for_registry(primary) as pusher:
            pusher.push_tree("late/app", late, "v1")
        # A stays frozen past its reconcile interval: its discovery is due the moment it thaws.
        time.sleep(max(0.0, frozen + RECONCILE + 0.5 - time.monotonic()))
        thawed_from = len(log_of(a))
    finally:
        a.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    wait_until(lambda: "lost the leadership" in log_of(a, thawed_from), timeout=15, what="A says it lost")
    time.sleep(4.0)  # a round of A's leadership and more, after it thawed
    after = log_of(a, thawed_from)
    lost = [t for t in after.splitlines() if "lost the leadership" in t]
    assert len(lost) == 1, after
    assert "tracking" not in after and "took the leadership" not in after and LEADS not in after, after
    assert db_query(
        a.config.parent, "SELECT COUNT(*) FROM repositories WHERE repository = ?", ("late/app",)
    ) == [(0,)]
    # Exactly one leader: one session holds the lock, the one B's row names.
    holders = lock_holders(b)
    stamped = db_query(b.config.parent, "SELECT id, leader_pid FROM workers WHERE leader_pid IS NOT NULL")
    assert len(holders) == 1 and stamped == [(b_id, holders[0])], (holders, stamped)
    assert [w["id"] for w in status_workers(a) if w["leader"]] == [b_id]
    for worker in (a, b):
        assert worker.stop(signal.SIGTERM) == 0
    assert_log_clean(a.log_path, b.log_path)
