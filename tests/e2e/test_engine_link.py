"""The console's link to an embedded engine: a thread of its own, commands that return at once,
and coalesced batches, against real Distribution."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from geo_tui.config import load_config
from geo_tui.engine import SyncState
from geo_tui.engine.link import Batch, EngineThread
from tests.support.distribution import Distribution
from tests.support.geo import tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.push import RawPusher


def drain_until(
    link: EngineThread, done: Callable[[list[Batch]], bool], timeout: float = 20.0
) -> list[Batch]:
    batches: list[Batch] = []
    deadline = time.monotonic() + timeout
    while not done(batches):
        assert time.monotonic() < deadline, "timed out draining the engine link"
        batch = link.drain()
        if batch:
            batches.append(batch)
        time.sleep(0.05)
    return batches


def test_engine_thread_reports_and_obeys(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    for i in range(3):
        primary_pusher.push_tree(f"link/r{i}", oci_image(f"l{i}"), "v1")
    link = EngineThread(load_config(write_geo_config(tmp_path, primary, [secondary], key_pair)))
    started = time.monotonic()
    link.start()
    assert time.monotonic() - started < 0.5, "start() must not wait for the engine"
    assert link.wait_ready(15)
    assert any(t.name == "geo-tui-engine" for t in threading.enumerate())

    def synced(batches: list[Batch]) -> bool:
        latest: dict[tuple[str, str], SyncState] = {}
        for b in batches:
            for row in (b.all_rows or []) + b.rows:
                latest[row.key] = row.state
        return len(latest) == 3 and all(s is SyncState.SYNCED for s in latest.values())

    batches = drain_until(link, synced)
    assert any(b.snapshot is not None for b in batches)
    assert any(b.logs for b in batches)
    # rows are coalesced: one entry per key in a batch
    for b in batches:
        assert len({r.key for r in b.rows}) == len(b.rows)

    primary_pusher.push_tree("link/r0", oci_image("l0-v2"), "v2")
    link.resync([("secondary", "link/r0")])
    drain_until(link, lambda bs: any("resync queued" in r.message for b in bs for r in b.results))
    deadline = time.monotonic() + 15
    while "v2" not in tag_digests(secondary_pusher, "link/r0"):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    link.verify([("secondary", "link/r0")])
    results = drain_until(link, lambda bs: any("verified" in r.message for b in bs for r in b.results))
    verified = [r for b in results for r in b.results if "verified" in r.message]
    assert verified[-1].ok and "1 ok" in verified[-1].message

    link.load_detail("link/r0")
    details = drain_until(link, lambda bs: any(b.details for b in bs))
    detail = next(d for b in details for d in b.details)
    by_site = {s.site: s.tags for s in detail.sites}
    assert by_site["primary"] == by_site["secondary"] and set(by_site["primary"] or {}) == {"v1", "v2"}
    assert detail.differing_tags() == set()

    link.stop()
    assert not any(t.name == "geo-tui-engine" for t in threading.enumerate())


def test_a_broken_engine_is_reported_not_raised(
    tmp_path: Path, key_pair: TestKeyPair, primary: Distribution, secondary: Distribution
) -> None:
    config = load_config(write_geo_config(tmp_path, primary, [secondary], key_pair))
    database = config.engine.database
    database.parent.mkdir(parents=True, exist_ok=True)
    database.mkdir()  # a directory where the database file should be: the engine cannot open it
    link = EngineThread(config)
    link.start()
    link.wait_ready(10)
    batch = drain_until(link, lambda bs: any(b.failure for b in bs), timeout=10)[-1]
    assert batch.failure and "Traceback" not in batch.failure
    link.resync([("secondary", "x")])
    assert any(not r.ok for r in link.drain().results)
    link.stop()
