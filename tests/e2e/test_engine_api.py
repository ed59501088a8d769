"""The engine API for the console: start/stop, snapshot, typed updates and commands, on real Distribution."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from geo_tui.config import load_config
from geo_tui.engine import (
    BytesCopied,
    Engine,
    EngineStatus,
    LogLine,
    RepositoryUpdated,
    SiteHealth,
    SyncState,
    Update,
)
from tests.support.distribution import Distribution
from tests.support.geo import tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import ManifestNode, oci_image
from tests.support.push import RawPusher


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting for the engine"
        await asyncio.sleep(0.05)


async def test_background_engine_replicates_reports_and_obeys_commands(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    for i in range(3):
        primary_pusher.push_tree(f"api/r{i}", oci_image(f"r{i}", layer_size=256 * 1024), "v1")
    config = load_config(write_geo_config(tmp_path, primary, [secondary], key_pair))
    updates: list[Update] = []
    engine = Engine(config)
    await engine.open()
    unsubscribe = engine.subscribe(updates.append)
    try:
        await engine.start()

        def synced() -> int:
            counts = engine.snapshot().sites[1].counts
            return counts.synced if counts else 0

        await wait_for(lambda: synced() == 3)
        snapshot = engine.snapshot()
        assert snapshot.running and not snapshot.paused
        primary_card, secondary_card = snapshot.sites
        assert primary_card.role == "primary" and primary_card.repository_count == 3
        assert secondary_card.counts is not None and secondary_card.counts.percent_synced == 100.0
        assert secondary_card.health is not None and secondary_card.health.healthy
        for i in range(3):
            assert tag_digests(secondary_pusher, f"api/r{i}") == tag_digests(primary_pusher, f"api/r{i}")

        kinds = {type(u) for u in updates}
        assert {RepositoryUpdated, LogLine, SiteHealth, EngineStatus, BytesCopied} <= kinds
        copied = sum(u.nbytes for u in updates if isinstance(u, BytesCopied))
        assert copied >= 3 * 256 * 1024
        states = [
            u.row.state for u in updates if isinstance(u, RepositoryUpdated) and u.row.repository == "api/r0"
        ]
        assert states[0] is SyncState.STARTED and states[-1] is SyncState.SYNCED

        # paused: a resync is queued but nothing runs; resumed: it runs
        await engine.pause()
        assert engine.snapshot().paused
        primary_pusher.push_tree("api/r0", oci_image("r0-v2", layer_size=1024), "v2")
        assert await engine.resync(repositories=["api/r0"]) == 1
        await asyncio.sleep(1.5)
        row = engine.tracking.row("secondary", "api/r0")
        assert row is not None and row.state is SyncState.PENDING
        assert "v2" not in secondary_pusher.list_tags("api/r0")
        await engine.resume()
        await wait_for(lambda: "v2" in secondary_pusher.list_tags("api/r0"))
        await wait_for(lambda: engine.tracking.row("secondary", "api/r0").state is SyncState.SYNCED)  # type: ignore[union-attr]

        # verification runs in the background after a sync that wrote something
        await wait_for(
            lambda: engine.tracking.row("secondary", "api/r0").verification_state.value == "succeeded"
        )  # type: ignore[union-attr]
    finally:
        await engine.close()
        unsubscribe()
    assert any(isinstance(u, EngineStatus) and not u.running for u in updates)


async def test_a_site_going_down_shows_unhealthy_and_recovers(
    primary: Distribution, secondary: Distribution, key_pair: TestKeyPair, tmp_path: Path
) -> None:
    config = load_config(write_geo_config(tmp_path, primary, [secondary], key_pair))
    async with Engine(config) as engine:
        health = await engine.check_health()
        assert health["secondary"].healthy and health["secondary"].latency is not None
        secondary.stop()
        health = await engine.check_health()
        assert not health["secondary"].healthy and health["secondary"].error
        assert "secondary" in health["secondary"].error or "ping" in health["secondary"].error
        secondary.start()
        health = await engine.check_health()
        assert health["secondary"].healthy
        messages = [r.message for r in engine.tracking.recent_log()]
        assert any("unreachable" in m for m in messages) and any("reachable (" in m for m in messages)


async def test_a_failed_copy_shows_the_outage_at_once_and_recovery_within_seconds(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    """Health is checked every minute here; a copy failing on a stopped secondary must not wait for that."""
    config = load_config(write_geo_config(tmp_path, primary, [secondary], key_pair))
    engine = Engine(config, health_interval=60.0)
    await engine.open()
    try:
        await engine.start()
        await wait_for(lambda: _health(engine, "secondary") is True)
        secondary.stop()
        primary_pusher.push_tree("outage/app", oci_image("outage"), "v1")
        await engine.resync(repositories=["outage/app"])
        await wait_for(lambda: _health(engine, "secondary") is False, timeout=10)
        card = next(s for s in engine.snapshot().sites if s.name == "secondary")
        assert card.eta is None, "a site that is down has no ETA"
        secondary.start()
        await wait_for(lambda: _health(engine, "secondary") is True, timeout=10)
    finally:
        await engine.close()


def _health(engine: Engine, site: str) -> bool | None:
    card = next(s for s in engine.snapshot().sites if s.name == site)
    return None if card.health is None else card.health.healthy


async def test_repository_size_is_what_the_tags_reach_and_follows_changes(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    base = oci_image("size-base", layer_size=64 * 1024)
    primary_pusher.push_tree("size/app", base, "v1")
    config = load_config(write_geo_config(tmp_path, primary, [secondary], key_pair))

    def expected(*trees: ManifestNode) -> int:
        blobs = {d: b.size for t in trees for d, b in t.all_blobs().items()}
        manifests = {n.digest: n.size for t in trees for n in t.walk()}
        return sum(blobs.values()) + sum(manifests.values())

    async with Engine(config) as engine:
        assert (await engine.sync_once()).ok
        row = engine.tracking.row("secondary", "size/app")
        assert row is not None and row.bytes == expected(base)

        bigger = oci_image("size-next", layer_size=128 * 1024)
        primary_pusher.push_tree("size/app", bigger, "v2")
        primary_pusher.push_tree("size/app", base, "again")  # the same image twice counts once
        await engine.resync(repositories=["size/app"])
        assert (await engine.sync_once()).ok
        row = engine.tracking.row("secondary", "size/app")
        assert row is not None and row.bytes == expected(base, bigger)

        mark = primary.mark()
        await engine.resync(repositories=["size/app"])
        assert (await engine.sync_once()).ok  # nothing changed: the size is kept, no manifest is read
        assert primary.count_requests("GET", "/manifests/", since_mark=mark) == 0
        row = engine.tracking.row("secondary", "size/app")
        assert row is not None and row.bytes == expected(base, bigger)
