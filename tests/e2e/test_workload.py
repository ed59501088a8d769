"""The demo's workload against real Distribution: what it pushes is valid to a real registry, every
format it makes replicates byte for byte, and the same seed makes the same estate."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from geo_tui.config import load_config
from geo_tui.engine import Engine
from geo_tui.lab.workload import Action, Workload
from geo_tui.registry import JwtAuth, RegistryClient, TokenSigner
from tests.support.distribution import Distribution
from tests.support.geo import tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.push import RawPusher

SCALE = 0.05  # ~4 MiB in all: the formats matter here, not the bytes


def push_client(registry: Distribution, key_pair: TestKeyPair) -> RegistryClient:
    signer = TokenSigner(key_pair.key_pem, issuer=registry.issuer, service=registry.service)
    return RegistryClient(
        registry.name, registry.url, JwtAuth(signer, repository_actions=("pull", "push", "delete"))
    )


async def run_workload(registry: Distribution, key_pair: TestKeyPair, seed: int, steps: int) -> list[Action]:
    async with push_client(registry, key_pair) as client:
        workload = Workload(client, seed=seed, scale=SCALE)
        actions = await workload.seed_primary()
        for _ in range(steps):
            actions.append(await workload.step())
    return actions


def estate(registry: Distribution) -> dict[str, dict[str, str]]:
    with RawPusher.for_registry(registry) as reader:
        return {repo: tag_digests(reader, repo) for repo in reader.catalog() if reader.list_tags(repo)}


def test_the_workload_replicates_byte_for_byte(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> None:
    primary = registry_factory("primary")
    secondary = registry_factory("secondary")
    actions = asyncio.run(run_workload(primary, key_pair, seed=7, steps=60))
    kinds = {a.kind for a in actions}
    assert kinds == {"push", "artifact", "delete"}, kinds

    config = load_config(write_geo_config(tmp_path, primary, [secondary], key_pair))

    async def backfill() -> None:
        engine = Engine(config)
        await engine.open()
        try:
            summary = await engine.sync_once()
            assert summary.ok, summary
        finally:
            await engine.close()

    asyncio.run(backfill())
    on_primary = estate(primary)
    assert len(on_primary) >= 12
    assert any(tag.startswith("sha256-") for tags in on_primary.values() for tag in tags)  # referrers
    assert estate(secondary) == on_primary


def test_the_same_seed_makes_the_same_estate(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair
) -> None:
    first, second, other = (registry_factory(n) for n in ("first", "second", "other"))
    for registry, seed in ((first, 3), (second, 3), (other, 4)):
        asyncio.run(run_workload(registry, key_pair, seed=seed, steps=15))
    assert estate(first) == estate(second)
    assert estate(first) != estate(other)
