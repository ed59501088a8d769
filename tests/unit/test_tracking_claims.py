"""The tracking rows as a queue many workers share: claims under leases, renewal, expiry, caps, workers.

Every test runs on SQLite and on a real PostgreSQL; the racing ones give each claimer its own Tracking
(its own connections), as separate worker processes would have.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from geo_tui.engine import SyncState, Tracking
from geo_tui.engine.tracking import MIGRATIONS, SCHEMA_VERSION, schema, worker_id
from geo_tui.engine.tracking.postgres import PostgresDatabase
from tests.support.postgres import BACKENDS

NOW = 1_000_000.0
LEASE = 30.0


@pytest.fixture(params=BACKENDS)
def tracking_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(tracking_target: Path | PostgresDatabase) -> Iterator[Tracking]:
    tracking = Tracking(tracking_target, clock=lambda: NOW)
    yield tracking
    tracking.close()


def race(target: Path | PostgresDatabase, claimers: int, work: Callable[[Tracking, str], None]) -> None:
    """Run `work(tracking, owner)` in `claimers` threads at once, each with its own Tracking."""
    trackings = [Tracking(target, clock=lambda: NOW) for _ in range(claimers)]
    start = threading.Barrier(claimers)
    errors: list[BaseException] = []

    def run(tracking: Tracking, owner: str) -> None:
        try:
            start.wait(30)
            work(tracking, owner)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t, f"w{i}")) for i, t in enumerate(trackings)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for tracking in trackings:
        tracking.close()
    assert errors == [] and not any(t.is_alive() for t in threads)


def test_claims_never_hand_one_row_to_two_racing_claimers(
    db: Tracking, tracking_target: Path | PostgresDatabase
) -> None:
    names = [f"r/{i:04d}" for i in range(400)]
    db.ensure_rows("eu", names)
    db.ensure_rows("us", names[:100])
    got: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def claim_until_empty(tracking: Tracking, owner: str) -> None:
        while rows := tracking.claim_due(owner, NOW, limit=7, lease_seconds=LEASE):
            assert all(r.state is SyncState.STARTED and r.generation == 1 for r in rows)
            with lock:
                got.extend((r.site, r.repository, owner) for r in rows)

    race(tracking_target, 8, claim_until_empty)
    counted = Counter((site, repository) for site, repository, _ in got)
    assert len(counted) == 500 and set(counted.values()) == {1}  # every row claimed, and exactly once
    if isinstance(tracking_target, PostgresDatabase):  # SQLite's busy wait may leave it all to one
        assert len({owner for *_, owner in got}) > 1  # the claimers shared the queue
    leased = {(site, repository): owner for site, repository, owner, _ in db.leased()}
    assert leased == {(site, repository): owner for site, repository, owner in got}
    assert db.due(NOW) == [] and all(not db.never_started(s, r) for s, r, _ in got[:5])


def test_a_site_cap_holds_however_many_claimers_race(
    db: Tracking, tracking_target: Path | PostgresDatabase
) -> None:
    db.ensure_rows("eu", [f"e/{i:03d}" for i in range(60)])
    db.ensure_rows("us", [f"u/{i:03d}" for i in range(40)])
    db.claim_due("early", NOW, limit=2, lease_seconds=LEASE, caps={"eu": 5})  # two of eu's five taken
    db.claim_due("dead", NOW - 2 * LEASE, limit=50, lease_seconds=LEASE)  # expired: not counted
    assert Counter(site for site, *_ in db.leased()) == {"eu": 52}
    db.expire_leases(NOW, lambda count: NOW)  # the dead worker's 50 rows fail, due again now

    def claim_until_empty(tracking: Tracking, owner: str) -> None:
        while tracking.claim_due(owner, NOW, limit=3, lease_seconds=LEASE, caps={"eu": 5, "us": 100}):
            pass

    race(tracking_target, 8, claim_until_empty)
    running = Counter(site for site, *_ in db.leased())
    assert running == {"eu": 5, "us": 40}  # eu full at its cap; us, under its cap, all claimed
    assert len(db.due(NOW, sites=["eu"])) == 55


def test_the_claims_keep_the_due_order_and_skip_what_is_not_due(db: Tracking) -> None:
    db.ensure_rows("eu", ["a", "b", "c", "d", "e", "f"])
    db.request_sync(repositories=["e"], event_at=NOW - 10)  # an event waits: first
    db.request_sync(repositories=["f"], event_at=NOW - 20)  # an older one: before it
    db.claim_due("x", NOW, limit=3, lease_seconds=LEASE)  # f, e, a
    db.mark_failed("eu", "a", "boom", NOW + 60, owner="x")  # not due before its retry time
    db.mark_failed("eu", "e", "boom", NOW - 1, owner="x")  # due again, and first: its event still waits
    db.mark_absent_from_primary("eu", {"a", "c", "d", "e", "f"})  # b is gone from the primary
    expected = [r.repository for r in db.due(NOW)]
    claimed = [r.repository for r in db.claim_due("y", NOW, limit=10, lease_seconds=LEASE)]
    assert claimed == expected == ["e", "c", "d"]


def test_an_expired_lease_fails_with_one_more_retry_and_its_old_owner_cannot_complete(db: Tracking) -> None:
    db.ensure_rows("eu", ["shop/api", "shop/web"])
    db.mark_failed("eu", "shop/api", "earlier", NOW - 1)  # one retry already
    rows = db.claim_due("w-dead", NOW, limit=2, lease_seconds=LEASE)
    assert [(r.repository, r.retry_count) for r in rows] == [("shop/web", 0), ("shop/api", 1)]
    assert db.expire_leases(NOW + LEASE - 1, lambda count: 0.0) == []  # not yet

    backoffs: list[int] = []
    expired = db.expire_leases(NOW + LEASE, lambda count: backoffs.append(count) or NOW + 100.0 * count)
    assert sorted(expired) == [("eu", "shop/api", "w-dead"), ("eu", "shop/web", "w-dead")]
    assert sorted(backoffs) == [1, 2]
    api = db.row("eu", "shop/api")
    assert api is not None and api.state is SyncState.FAILED and api.retry_count == 2
    assert api.retry_at == NOW + 200.0 and api.last_sync_failure is not None
    assert "lease of worker w-dead expired" in api.last_sync_failure
    assert db.leased() == []

    # new work during a run whose lease then expires: due now, not after the backoff (as mark_failed)
    db.ensure_rows("eu", ["shop/new"])
    (claimed,) = db.claim_due("w-dead", NOW, limit=1, lease_seconds=LEASE)
    assert claimed.repository == "shop/new"
    db.request_sync(repositories=["shop/new"])  # a push while it copied: generation 2
    assert db.expire_leases(NOW + LEASE, lambda count: NOW + 999.0) == [("eu", "shop/new", "w-dead")]
    new = db.row("eu", "shop/new")
    assert new is not None and new.retry_at == NOW + LEASE and new.retry_count == 1
    db.mark_absent_from_primary("eu", {"shop/api", "shop/web"})  # out of the way of what follows

    # due again at its retry time, another worker claims it; the dead one's completion changes nothing
    taken = db.claim_due("w-new", NOW + 200, limit=5, lease_seconds=LEASE)
    assert [r.repository for r in taken] == ["shop/web", "shop/api"]
    assert not db.mark_synced("eu", "shop/api", 1, tag_count=3, size=10, owner="w-dead")
    assert db.mark_failed("eu", "shop/api", "late", NOW, owner="w-dead") == 0
    assert not db.mark_pending("eu", "shop/api", owner="w-dead")
    assert db.renew_leases("w-dead", NOW + 201, LEASE, [("eu", "shop/api")]) == set()
    api = db.row("eu", "shop/api")
    assert api is not None and api.state is SyncState.STARTED and api.retry_count == 2
    assert [(r, o) for _, r, o, _ in db.leased()] == [("shop/api", "w-new"), ("shop/web", "w-new")]
    # the holder's completion goes through, and gives the lease up
    assert db.mark_synced("eu", "shop/api", 1, tag_count=3, size=10, owner="w-new")
    assert db.mark_pending("eu", "shop/web", owner="w-new")
    assert db.leased() == [] and db.row("eu", "shop/api").state is SyncState.SYNCED  # type: ignore[union-attr]


def test_renew_extends_only_the_rows_the_owner_still_holds(db: Tracking) -> None:
    db.ensure_rows("eu", [f"r{i}" for i in range(5)])
    mine = db.claim_due("me", NOW, limit=3, lease_seconds=LEASE)
    db.claim_due("other", NOW, limit=2, lease_seconds=LEASE)
    keys = [(r.site, r.repository) for r in mine]
    everything = [("eu", f"r{i}") for i in range(5)] + [("eu", "missing")]

    assert db.renew_leases("me", NOW + 10, LEASE, everything) == set(keys)
    until = {repository: (owner, lease) for _, repository, owner, lease in db.leased()}
    assert until == {
        "r0": ("me", NOW + 10 + LEASE),
        "r1": ("me", NOW + 10 + LEASE),
        "r2": ("me", NOW + 10 + LEASE),
        "r3": ("other", NOW + LEASE),
        "r4": ("other", NOW + LEASE),
    }
    assert db.mark_synced("eu", "r0", 1, tag_count=1, size=None, owner="me")  # done: no longer held
    assert db.renew_leases("me", NOW + 20, LEASE, keys) == {("eu", "r1"), ("eu", "r2")}
    # a lease that ran out is not renewed, even before the sweep: the row may be someone else's soon
    assert db.renew_leases("other", NOW + LEASE + 1, LEASE, everything) == set()
    assert db.renew_leases("me", NOW + 20, LEASE, []) == set()


def test_the_engine_of_today_without_leases_works_as_before(db: Tracking) -> None:
    db.ensure_rows("eu", ["a"])
    generation = db.mark_started("eu", "a")
    assert db.expire_leases(NOW + 10 * LEASE, lambda count: NOW) == []  # no lease: not the sweep's
    assert db.mark_failed("eu", "a", "boom", NOW + 5, generation) == 1
    generation = db.mark_started("eu", "a")
    assert db.mark_synced("eu", "a", generation, tag_count=1, size=None)


def test_workers_register_and_beat(db: Tracking) -> None:
    me = worker_id(NOW)
    assert me.endswith(f"/{NOW:.3f}") and me.count("/") == 2
    db.register_worker(me, NOW, "127.0.0.1:5001")
    db.register_worker("other/1/2.000", NOW + 1)
    assert db.worker_heartbeat(me, NOW + 5, 3)
    assert not db.worker_heartbeat("gone/1/1.000", NOW + 5, 0)
    workers = {w.id: w for w in db.workers()}
    assert set(workers) == {me, "other/1/2.000"}
    assert (workers[me].started_at, workers[me].heartbeat_at, workers[me].listen, workers[me].working) == (
        NOW,
        NOW + 5,
        "127.0.0.1:5001",
        3,
    )


def test_migration_3_adds_empty_leases_to_a_version_2_database(
    tracking_target: Path | PostgresDatabase,
) -> None:
    if isinstance(tracking_target, Path):
        tracking_target.parent.mkdir(parents=True)
        with sqlite3.connect(tracking_target, isolation_level=None) as raw:
            assert schema.migrate(raw, tracking_target, MIGRATIONS[:2]) == (0, 2)
            raw.execute("INSERT INTO repositories (site, repository, state) VALUES ('eu', 'old', 'failed')")
        raw.close()
    else:
        from geo_tui.engine.tracking.postgres import MIGRATIONS as PG_MIGRATIONS
        from geo_tui.engine.tracking.postgres import POSTGRES, PostgresConnection

        raw_pg = PostgresConnection(tracking_target, "test")
        assert schema.migrate(raw_pg, str(tracking_target), PG_MIGRATIONS[:2], POSTGRES) == (0, 2)
        raw_pg.execute("INSERT INTO repositories (site, repository, state) VALUES ('eu', 'old', 'failed')")
        raw_pg.close()
    tracking = Tracking(tracking_target, clock=lambda: NOW)
    try:
        assert tracking.schema_version == SCHEMA_VERSION == MIGRATIONS[-1].version
        assert tracking.leased() == [] and tracking.workers() == []
        row = tracking.row("eu", "old")
        assert row is not None and row.state is SyncState.FAILED
        assert {"lease_owner", "lease_until"} <= tracking.dialect.columns(tracking._db, "repositories")
    finally:
        tracking.close()


def test_a_claim_reads_the_claim_index_in_order_and_sorts_nothing(tmp_path: Path) -> None:
    """SQLite without statistics once looked up both due states by another index and sorted the whole
    queue at every claim (13 ms a claim at 20,000 rows, bench/scale_out.py); the claim names its index."""
    tracking = Tracking(tmp_path / "tracking.db")
    try:
        tracking.ensure_rows("eu", [f"r{i}" for i in range(50)])
        for full in (0, 2):
            plan = tracking._db.execute(
                "EXPLAIN QUERY PLAN " + tracking._claim_query(full), [NOW, NOW, *["x"] * full, 5]
            ).fetchall()
            steps = " | ".join(str(step[3]) for step in plan)
            assert "USING INDEX repositories_claim" in steps and "TEMP B-TREE" not in steps, steps
    finally:
        tracking.close()
