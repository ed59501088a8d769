"""Deadlines on real Distribution 2.8 (issue 12, case 5): a primary that trickles a body (one byte every
2 s) never trips a no-progress timeout, so every request has a total deadline (its size at
`min_transfer_rate`, plus the base timeout) and every repository job a maximum duration. The slow
repositories fail naming the slow site, their slots free up, and a healthy repository still syncs.

The fault proxy (tests/support/faults.py) trickles the primary's answers; the limits are small so that the
tests stay short: a 2 s base timeout, 1 KiB/s, 2 KiB layers (a 4 s deadline per layer).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from geo_tui.config import load_config
from geo_tui.engine import Engine, SyncState
from geo_tui.engine.updates import RepositoryUpdated, Update
from tests.support.distribution import Distribution
from tests.support.faults import FaultTransport
from tests.support.geo import image_with_layers, tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import layer_blob
from tests.support.push import RawPusher

pytestmark = pytest.mark.timeout(120)

SECONDARY = "secondary"
LAYER = 2048
BASE_TIMEOUT = 2.0
RATE = 1024
BODY_DEADLINE = BASE_TIMEOUT + LAYER / RATE  # 4 s: what a 2 KiB layer may take at 1 KiB/s
TRICKLE = 2.0  # seconds between two bytes: ~0.5 B/s, and never 2 s without progress


def engine_for(
    tmp_path: Path,
    primary: Distribution,
    secondary: Distribution,
    key_pair: TestKeyPair,
    faults: FaultTransport,
    **engine: object,
) -> Engine:
    path = write_geo_config(
        tmp_path / "geo",
        primary,
        [secondary],
        key_pair,
        engine={"min_transfer_rate": RATE, "sync_attempts": 1, **engine},
    )
    return Engine(load_config(path), transports={"primary": faults}, request_timeout=BASE_TIMEOUT)


async def test_ten_trickling_repositories_fail_naming_the_primary_and_a_healthy_one_still_syncs(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    faults = FaultTransport()
    slow = [f"a-slow-{n:02}" for n in range(10)]
    rules = []
    for n, repository in enumerate(slow):
        layer = layer_blob(f"trickle-{n}", LAYER)
        primary_pusher.push_tree(repository, image_with_layers([layer], seed=f"slow-{n}"), "v1")
        rules.append(faults.trickle("GET", rf"^/v2/{repository}/blobs/{layer.digest}$", every=TRICKLE))
    healthy = image_with_layers([layer_blob("healthy", LAYER)], seed="healthy")
    primary_pusher.push_tree("z-healthy", healthy, "v1")

    # Ten slots, and the ten slow repositories come first (by name): the healthy one waits for a slot.
    engine = engine_for(tmp_path, primary, secondary, key_pair, faults, repository_concurrency=10)
    synced_at: dict[str, float] = {}

    def watch(update: Update) -> None:
        if isinstance(update, RepositoryUpdated) and update.row.state == SyncState.SYNCED:
            synced_at.setdefault(update.row.repository, time.monotonic())

    async with engine:
        engine.subscribe(watch)
        started = time.monotonic()
        summary = await asyncio.wait_for(engine.sync_once(), 60)
        took = time.monotonic() - started

    failures = summary.sites[SECONDARY].failures
    assert sorted(failures) == slow, failures
    for repository in slow:
        reason = failures[repository]
        assert "primary: GET blob" in reason, reason
        assert repository in reason and "too slow" in reason and "min_transfer_rate 1 KiB/s" in reason, reason
    # The slots freed at the deadline (4 s), not after the 68 minutes the trickle would take.
    assert "z-healthy" in synced_at, summary
    waited = synced_at["z-healthy"] - started
    print(f"\nhealthy repository synced after {waited:.1f} s; run took {took:.1f} s (machine shared)")
    assert waited < 4 * BODY_DEADLINE, waited
    assert tag_digests(secondary_pusher, "z-healthy") == tag_digests(primary_pusher, "z-healthy")
    # Each trickled body was abandoned after a few bytes.
    assert [r.fired for r in rules] == [1] * 10


async def test_a_wait_on_a_trickling_shared_layer_ends_with_its_stream(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    faults = FaultTransport()
    shared = layer_blob("shared-trickle", LAYER)
    for name in ("shared-a", "shared-b"):
        primary_pusher.push_tree(name, image_with_layers([shared], seed=name), "v1")
    rule = faults.trickle("GET", rf"/blobs/{shared.digest}$", every=TRICKLE)

    async with engine_for(tmp_path, primary, secondary, key_pair, faults) as engine:
        started = time.monotonic()
        summary = await asyncio.wait_for(engine.sync_once(), 60)
        took = time.monotonic() - started
        rows = {r.repository: r for r in engine.rows()}

    failures = summary.sites[SECONDARY].failures
    assert sorted(failures) == ["shared-a", "shared-b"], failures
    for reason in failures.values():
        assert "primary: GET blob" in reason and "too slow" in reason, reason
    # One stream of the layer ran; the other repository waited on it and failed with it, not after it.
    assert rule.fired == 1
    assert took < 3 * BODY_DEADLINE, took
    assert {r.state for r in rows.values()} == {SyncState.FAILED}, rows


async def test_a_job_over_max_job_duration_fails_saying_what_it_waited_for(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    faults = FaultTransport()
    primary_pusher.push_tree("slow/meta", image_with_layers([layer_blob("meta", LAYER)], seed="meta"), "v1")
    # Each request is within its own deadline; together they are not.
    faults.delay("GET|HEAD", r"^/v2/slow/meta/(manifests|tags)/", seconds=1.5)

    async with engine_for(tmp_path, primary, secondary, key_pair, faults, max_job_duration=2) as engine:
        summary = await asyncio.wait_for(engine.sync_once(), 60)
        row = next(r for r in engine.rows() if r.repository == "slow/meta")

    reason = summary.sites[SECONDARY].failures["slow/meta"]
    assert reason == "over max_job_duration (2 s) while reading the primary", reason
    assert row.state == SyncState.FAILED and row.last_sync_failure == reason
