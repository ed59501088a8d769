"""One stream of a blob per (secondary, digest) across the workers of one PostgreSQL database (issue 16):
the ``blob_streams`` rows taken, held by another, run out and taken over, finished and renewed, on a
real server; the worker's heartbeat renewing them; and SQLite making no use of them at all."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geo_tui.engine import Engine, Tracking
from geo_tui.engine.streams import POLL_MOST, ClusterStreams
from geo_tui.engine.tracking.postgres import PostgresDatabase
from tests.unit.test_workers import Clock, config_for, run

NOW = 1_000_000.0
LEASE = 30.0
BASE = "sha256:" + "b" * 64


@pytest.fixture
def db(postgres_database: PostgresDatabase) -> Iterator[Tracking]:
    tracking = Tracking(postgres_database, clock=lambda: NOW)
    yield tracking
    tracking.close()


def test_the_first_worker_takes_the_stream_and_another_is_told_who_holds_it(db: Tracking) -> None:
    assert db.take_blob_stream("eu", BASE, "w1", "app/a", NOW, LEASE) is None
    assert db.take_blob_stream("eu", BASE, "w2", "app/b", NOW + 1, LEASE) == "w1"
    assert db.blob_stream_holder("eu", BASE, NOW + 1) == "w1"
    # Another secondary's stream of the same digest is another row.
    assert db.take_blob_stream("us", BASE, "w2", "app/b", NOW + 1, LEASE) is None
    assert db.blob_streams() == [
        ("eu", BASE, "w1", NOW + LEASE, "app/a"),
        ("us", BASE, "w2", NOW + 1 + LEASE, "app/b"),
    ]


def test_a_row_whose_lease_ran_out_is_taken_over_and_its_old_holder_cannot_clear_it(db: Tracking) -> None:
    assert db.take_blob_stream("eu", BASE, "dead", "app/a", NOW, LEASE) is None
    assert db.blob_stream_holder("eu", BASE, NOW + LEASE) is None  # run out: nobody streams it
    assert db.take_blob_stream("eu", BASE, "w2", "app/b", NOW + LEASE - 0.5, LEASE) == "dead"
    assert db.take_blob_stream("eu", BASE, "w2", "app/b", NOW + LEASE, LEASE) is None
    db.finish_blob_stream("eu", BASE, "dead", "app/a")  # the dead worker's late finish
    assert db.blob_stream_holder("eu", BASE, NOW + LEASE) == "w2"
    assert db.blob_sources("eu", BASE, exclude="") == ["app/a"]  # what landed is still recorded


def test_finishing_removes_the_row_and_records_where_the_blob_landed_in_one_go(db: Tracking) -> None:
    assert db.take_blob_stream("eu", BASE, "w1", "app/a", NOW, LEASE) is None
    db.finish_blob_stream("eu", BASE, "w1", "app/a")
    assert db.blob_streams() == []
    assert db.blob_sources("eu", BASE, exclude="app/b") == ["app/a"]
    # A stream that failed leaves no location, and the next worker takes the row at once.
    assert db.take_blob_stream("us", BASE, "w1", "app/a", NOW, LEASE) is None
    db.finish_blob_stream("us", BASE, "w1", None)
    assert db.blob_sources("us", BASE, exclude="") == []
    assert db.take_blob_stream("us", BASE, "w2", "app/b", NOW + 1, LEASE) is None


def test_renewal_extends_only_the_rows_still_held_and_clears_the_dead(db: Tracking) -> None:
    other = "sha256:" + "c" * 64
    assert db.take_blob_stream("eu", BASE, "w1", "app/a", NOW, LEASE) is None
    assert db.take_blob_stream("eu", other, "w1", "app/a", NOW, 5.0) is None
    assert db.take_blob_stream("us", BASE, "dead", "app/z", NOW, 5.0) is None
    held = db.renew_blob_streams("w1", NOW + 10, LEASE, [("eu", BASE), ("eu", other)])
    assert held == {("eu", BASE)}  # `other` ran out at NOW + 5: lost
    rows = {(site, digest): (owner, until) for site, digest, owner, until, _ in db.blob_streams()}
    assert rows == {("eu", BASE): ("w1", NOW + 10 + LEASE)}  # the rows run out are gone
    # Renewed, the row holds against a take after its first lease would have run out.
    assert db.take_blob_stream("eu", BASE, "w2", "app/b", NOW + LEASE + 1, LEASE) == "w1"


def test_racing_workers_take_one_row_once(postgres_database: PostgresDatabase) -> None:
    trackings = [Tracking(postgres_database, clock=lambda: NOW) for _ in range(8)]
    start = threading.Barrier(len(trackings))
    won: list[str] = []

    def take(tracking: Tracking, owner: str) -> None:
        start.wait(30)
        for n in range(20):  # 20 digests raced by 8 workers at once
            if tracking.take_blob_stream("eu", f"sha256:{n:064d}", owner, owner, NOW, LEASE) is None:
                won.append(owner)

    threads = [threading.Thread(target=take, args=(t, f"w{i}")) for i, t in enumerate(trackings)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for tracking in trackings:
        tracking.close()
    assert len(won) == 20  # each digest taken by exactly one worker


def test_a_waiter_goes_on_when_the_stream_ends_or_its_holder_dies(db: Tracking) -> None:
    clock = Clock()
    holder = ClusterStreams(db, "w1", LEASE, clock=clock)
    waiter = ClusterStreams(db, "w2", LEASE, clock=clock)

    async def main() -> None:
        assert await holder.take("eu", BASE, "app/a") is None and holder.holds("eu", BASE)
        assert await waiter.take("eu", BASE, "app/b") == "w1" and not waiter.holds("eu", BASE)
        waiting = asyncio.ensure_future(waiter.wait("eu", BASE))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # still streamed by w1
        began = time.monotonic()
        await holder.finish("eu", BASE, "app/a")
        await asyncio.wait_for(waiting, POLL_MOST + 1)
        print(f"the waiter went on {time.monotonic() - began:.2f} s after the stream ended")
        assert db.blob_sources("eu", BASE, exclude="app/b") == ["app/a"]  # where it mounts from
        # A holder that dies stops renewing: once its lease runs out, the waiter goes on and takes over.
        assert await holder.take("us", BASE, "app/a") is None
        waiting = asyncio.ensure_future(waiter.wait("us", BASE))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        clock.now += LEASE
        await asyncio.wait_for(waiting, POLL_MOST + 1)
        assert await waiter.take("us", BASE, "app/b") is None and waiter.holds("us", BASE)

    asyncio.run(main())


class SlowTakes:
    """The real rows, with a take that is still running 0.3 s after it was asked for."""

    def __init__(self, tracking: Tracking) -> None:
        self._tracking = tracking

    def take_blob_stream(self, *args: Any) -> str | None:
        time.sleep(0.3)
        return self._tracking.take_blob_stream(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tracking, name)


def test_a_take_given_up_while_it_runs_gives_its_row_back(db: Tracking) -> None:
    streams = ClusterStreams(SlowTakes(db), "w1", LEASE, clock=lambda: NOW)

    async def main() -> None:
        taking = asyncio.ensure_future(streams.take("eu", BASE, "app/a"))
        await asyncio.sleep(0.1)
        taking.cancel()  # the copy was cancelled while the statement ran
        with pytest.raises(asyncio.CancelledError):
            await taking
        await asyncio.sleep(0.6)
        assert db.blob_streams() == [] and not streams.holds("eu", BASE)  # taken, then given back

    asyncio.run(main())


def test_the_worker_heartbeat_renews_its_streams_and_says_when_one_ran_out(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        assert a.leases.streams is not None and b.leases.streams is not None
        copier = a._sites["eu"].copier
        assert copier is not None and copier._streams is a.leases.streams
        assert await a.leases.streams.take("eu", BASE, "app/a") is None
        clock.now += 20  # the lease is 30 s: renewed at 20, it lasts to 50
        await a.leases.beat()
        clock.now += 25
        assert await b.leases.streams.take("eu", BASE, "app/b") == a.leases.owner
        clock.now += 40  # a's heartbeat stopped: its row ran out, and b takes over
        assert await b.leases.streams.take("eu", BASE, "app/b") is None
        await a.leases.beat()
        messages = [r.message for r in a.tracking.recent_log() if r.site == "eu"]
        assert any(f"the turn at streaming {BASE} ran out" in m for m in messages), messages
        await b.leases.beat()
        assert [row[2] for row in b.tracking.blob_streams()] == [b.leases.owner]

    run(tmp_path, postgres_database.url, body)


def test_on_sqlite_the_copiers_take_no_cluster_turn_and_write_no_row(tmp_path: Path) -> None:
    async def main() -> None:
        engine = Engine(config_for(tmp_path, None))
        await engine.open()
        try:
            assert engine.leases.owner is None and engine.leases.streams is None
            assert all(site.copier is None or site.copier._streams is None for site in engine._sites.values())
            assert engine.tracking.blob_streams() == []
        finally:
            await engine.close()

    asyncio.run(main())
