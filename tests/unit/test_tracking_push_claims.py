"""The push queue shared out among workers (issue 16): claims of whole repositories under leases,
renewal, expiry, owner-checked completion, migration 5.

Every test runs on SQLite and on a real PostgreSQL; the racing one gives each claimer its own Tracking
(its own connections), as separate worker processes would have.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from geo_tui.engine import Tracking
from geo_tui.engine.tracking import MIGRATIONS, schema
from geo_tui.engine.tracking.postgres import PostgresDatabase
from tests.support.postgres import BACKENDS
from tests.unit.test_tracking_claims import race

NOW = 1_000_000.0
LEASE = 30.0
GRACE = 0.5
DIGEST = "sha256:" + "a" * 64


@pytest.fixture(params=BACKENDS)
def tracking_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(tracking_target: Path | PostgresDatabase) -> Iterator[Tracking]:
    tracking = Tracking(tracking_target, clock=lambda: NOW)
    yield tracking
    tracking.close()


def queue(db: Tracking, *pushes: tuple[str, str | None], at: float = NOW - 10) -> None:
    """Queue (repository, tag) pushes as the receiver does, received at `at`."""
    db.record_notifications([], [], at, pushes=[(r, t, DIGEST) for r, t in pushes])


def claim(
    db: Tracking, owner: str | None, now: float = NOW, slots: int = 10, skip: set[str] | None = None
) -> dict[str, list[str | None]]:
    got = db.claim_pushes(owner, now, slots=slots, lease_seconds=LEASE, grace=GRACE, skip=skip or set())
    return {repository: [p.tag for p in pushes] for repository, pushes in got.repositories.items()}


def test_a_claim_takes_whole_repositories_oldest_first_and_leaves_them_to_their_worker(db: Tracking) -> None:
    queue(db, ("shop/web", "v1"), ("shop/api", "v1"), ("shop/web", "v2"), ("team/app", "1"))
    assert claim(db, "a", slots=2) == {"shop/web": ["v1", "v2"], "shop/api": ["v1"]}
    owners = Counter(owner for _, _, owner, _ in db.leased_pushes())
    assert owners == {"a": 3}
    assert {until for *_, until in db.leased_pushes()} == {NOW + LEASE}
    # A push of a repository worker a copies, arriving now: no other worker takes it, nor any of a's.
    queue(db, ("shop/web", "v3"))
    assert claim(db, "b") == {"team/app": ["1"]}
    assert claim(db, "c") == {}
    # a, its shop/web job still running here (skip), takes nothing of it; once done, the v3 push left.
    assert claim(db, "a", skip={"shop/web", "shop/api"}) == {}
    assert db.done_pushes([p for p, r, *_ in db.leased_pushes("a") if r == "shop/web"], owner="a") == 2
    assert claim(db, "c") == {"shop/web": ["v3"]}


def test_digest_only_pushes_wait_out_their_grace_and_the_claim_says_so(db: Tracking) -> None:
    queue(db, ("multi/app", None), at=NOW - 0.1)
    got = db.claim_pushes("a", NOW, slots=4, lease_seconds=LEASE, grace=GRACE)
    assert got.repositories == {} and got.waiting and db.leased_pushes() == []
    queue(db, ("multi/app", "v1"), at=NOW - 0.05)  # the push that references it: both go now, together
    assert claim(db, "a") == {"multi/app": [None, "v1"]}
    queue(db, ("referrer/app", None), at=NOW - 1.0)  # past its grace: goes on its own
    assert claim(db, "b") == {"referrer/app": [None]}


def test_only_the_holder_takes_pushes_off_the_queue_and_a_lapsed_lease_is_anyones(db: Tracking) -> None:
    queue(db, ("shop/web", "v1"), ("shop/web", "v2"))
    assert claim(db, "dead") == {"shop/web": ["v1", "v2"]}
    ids = [push for push, *_ in db.leased_pushes()]
    assert claim(db, "b", now=NOW + LEASE - 1) == {}  # live: not b's
    got = db.claim_pushes("b", NOW + LEASE, slots=4, lease_seconds=LEASE, grace=GRACE)
    assert [p.id for p in got.repositories["shop/web"]] == ids
    assert got.taken_over == {"shop/web": "dead"}  # for the warning that names it
    assert {owner for _, _, owner, _ in db.leased_pushes()} == {"b"}
    # The dead worker, come back, can neither renew nor complete them: they are b's.
    assert db.renew_push_leases("dead", NOW + LEASE, LEASE, ids) == set(ids)
    assert db.done_pushes(ids, owner="dead") == 0 and len(db.queued_pushes()) == 2
    assert db.renew_push_leases("b", NOW + LEASE + 5, LEASE, ids) == set()
    assert {until for *_, until in db.leased_pushes()} == {NOW + 2 * LEASE + 5}
    assert db.done_pushes(ids, owner="b") == 2 and db.queued_pushes() == []


def test_renewal_keeps_live_leases_and_reports_only_rows_still_queued(db: Tracking) -> None:
    queue(db, ("a/1", "v1"), ("a/2", "v1"), ("a/3", "v1"))
    claim(db, "me", slots=2)
    claim(db, "other")
    mine = [push for push, *_ in db.leased_pushes("me")]
    (theirs,) = [push for push, *_ in db.leased_pushes("other")]
    assert db.renew_push_leases("me", NOW + 10, LEASE, [*mine, theirs]) == {theirs}
    assert db.done_pushes(mine[:1], owner="me") == 1
    # a push done is gone, not lost; a lease that ran out is lost even before anyone takes it
    assert db.renew_push_leases("me", NOW + 20, LEASE, mine) == set()
    assert db.renew_push_leases("me", NOW + 20 + LEASE, LEASE, mine) == set(mine[1:])


def test_a_worker_gone_gives_its_pushes_back_at_once(db: Tracking) -> None:
    queue(db, ("shop/web", "v1"), ("shop/api", "v1"))
    claim(db, "gone")
    assert db.release_pushes("gone") == 2 and db.leased_pushes() == []
    assert claim(db, "b") == {"shop/web": ["v1"], "shop/api": ["v1"]}


def test_without_an_owner_the_claim_reads_the_same_choice_and_leases_nothing(db: Tracking) -> None:
    """SQLite's one engine per file: today's behaviour, one rule for both."""
    queue(db, ("shop/web", "v1"), ("shop/api", None), ("team/app", "1"))
    assert claim(db, None, slots=2, skip={"shop/web"}) == {"shop/api": [None], "team/app": ["1"]}
    assert db.leased_pushes() == []
    assert claim(db, None) == {"shop/web": ["v1"], "shop/api": [None], "team/app": ["1"]}
    assert db.done_pushes([p.id for p in db.queued_pushes()]) == 3


def test_racing_claimers_never_share_a_repository(
    db: Tracking, tracking_target: Path | PostgresDatabase
) -> None:
    for round_ in range(5):
        queue(db, *((f"r/{i:02d}", f"v{round_}") for i in range(40)))
    got: list[tuple[str, int, str]] = []
    lock = threading.Lock()

    def claim_until_empty(tracking: Tracking, owner: str) -> None:
        mine: set[str] = set()  # running here, as the copier's jobs would be: not claimed again
        while found := tracking.claim_pushes(
            owner, NOW, slots=3, lease_seconds=LEASE, grace=GRACE, skip=mine
        ).repositories:
            mine.update(found)
            with lock:
                got.extend((r, p.id, owner) for r, pushes in found.items() for p in pushes)

    race(tracking_target, 6, claim_until_empty)
    assert Counter(push for _, push, _ in got) == Counter({push.id: 1 for push in db.queued_pushes()})
    assert len(got) == 200  # every push claimed, and exactly once
    by_repository = {r: {o for rr, _, o in got if rr == r} for r, _, _ in got}
    assert all(len(owners) == 1 for owners in by_repository.values()), by_repository  # whole repositories
    if isinstance(tracking_target, PostgresDatabase):
        assert len({owner for *_, owner in got}) > 1  # the claimers shared the queue


def test_migration_5_adds_empty_push_leases_to_a_version_4_database(
    tracking_target: Path | PostgresDatabase,
) -> None:
    if isinstance(tracking_target, Path):
        tracking_target.parent.mkdir(parents=True)
        with sqlite3.connect(tracking_target, isolation_level=None) as raw:
            assert schema.migrate(raw, tracking_target, MIGRATIONS[:4]) == (0, 4)
            raw.execute(
                "INSERT INTO push_queue (received_at, repository, tag, digest) VALUES (1, 'old', 'v1', 'd')"
            )
        raw.close()
    else:
        from geo_tui.engine.tracking.postgres import MIGRATIONS as PG_MIGRATIONS
        from geo_tui.engine.tracking.postgres import POSTGRES, PostgresConnection

        raw_pg = PostgresConnection(tracking_target, "test")
        assert schema.migrate(raw_pg, str(tracking_target), PG_MIGRATIONS[:4], POSTGRES) == (0, 4)
        raw_pg.execute(
            "INSERT INTO push_queue (received_at, repository, tag, digest) VALUES (1, 'old', 'v1', 'd')"
        )
        raw_pg.close()
    tracking = Tracking(tracking_target, clock=lambda: NOW)
    try:
        assert tracking.schema_version >= 5
        assert [p.repository for p in tracking.queued_pushes()] == ["old"] and tracking.leased_pushes() == []
        assert {"lease_owner", "lease_until"} <= tracking.dialect.columns(tracking._db, "push_queue")
        assert claim(tracking, "a") == {"old": ["v1"]}
    finally:
        tracking.close()


def test_the_tags_seen_of_a_push_copy_are_read_for_its_tags_and_sites_only(db: Tracking) -> None:
    db.record_tags_seen("eu", "shop/web", {"v1": "d1", "v2": "d2", "other": "d9"}, complete=False)
    db.record_tags_seen("us", "shop/web", {"v1": "d1"}, complete=False)
    db.record_tags_seen("eu", "shop/api", {"v1": "dx"}, complete=False)
    db.record_tags_seen("primary", "shop/web", {"v1": "d1"}, complete=False)
    seen = db.tags_seen_on(["eu", "us"], "shop/web", ["v1", "v2", "missing"])
    assert seen == {("eu", "v1"): ("d1", NOW), ("eu", "v2"): ("d2", NOW), ("us", "v1"): ("d1", NOW)}
    assert db.tags_seen_on([], "shop/web", ["v1"]) == {}
