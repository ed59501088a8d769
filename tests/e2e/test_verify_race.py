"""Issue 17: a verification that reads the primary, then the secondary, while a push is being copied sees
a difference that is no difference. `serve`'s Verifier reads the tags that differ again once the
repository's pushes are copied (`pushes_copied`), instead of failing the row and resyncing a repository of
thousands of tags for it. Real Distribution 2.8 on both sides."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from geo_tui.engine import Tracking, VerificationState
from geo_tui.engine.verify import RECHECK_LIMIT, Verifier
from geo_tui.registry import JwtAuth, RegistryClient, TokenSigner
from tests.support.distribution import Distribution
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.push import RawPusher

REPOSITORY = "ci/app"


def client(registry: Distribution, key_pair: TestKeyPair) -> RegistryClient:
    signer = TokenSigner(key_pair.key_pem, issuer=registry.issuer, service=registry.service)
    return RegistryClient(registry.name, registry.url, JwtAuth(signer))


async def verify(
    primary: Distribution,
    secondary: Distribution,
    key_pair: TestKeyPair,
    tracking: Tracking,
    pushes_copied: object,
) -> tuple[bool, str, list[str]]:
    log: list[str] = []
    async with client(primary, key_pair) as on_primary, client(secondary, key_pair) as on_secondary:
        verifier = Verifier(
            tracking,
            on_primary,
            {"secondary": on_secondary},
            wants=lambda site, repository: True,
            log=lambda level, message, **where: log.append(message),
            row_changed=lambda site, repository: None,
            pushes_copied=pushes_copied,  # type: ignore[arg-type]
        )
        [result] = await verifier.verify_repository(REPOSITORY, ["secondary"])
    return result.ok, result.detail, log


@pytest.mark.parametrize("copied", [True, False], ids=["copy-lands", "copy-never-lands"])
def test_a_push_copied_during_a_verification_is_no_difference(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    copied: bool,
) -> None:
    base = oci_image("race-base")
    for pusher in (primary_pusher, secondary_pusher):
        pusher.push_tree(REPOSITORY, base, "v1")
    pushed = oci_image("race-new")
    primary_pusher.push_tree(REPOSITORY, pushed, "v2")  # on the primary; its copy is on its way
    tracking = Tracking(tmp_path / "tracking.db")
    tracking.ensure_rows("secondary", [REPOSITORY])
    before = tracking.row("secondary", REPOSITORY)
    assert before is not None
    waited: list[str] = []

    async def pushes_copied(repository: str) -> None:
        waited.append(repository)
        if copied:  # what the push copier does meanwhile
            await asyncio.to_thread(secondary_pusher.push_tree, REPOSITORY, pushed, "v2")

    try:
        ok, detail, log = asyncio.run(verify(primary, secondary, key_pair, tracking, pushes_copied))
        row = tracking.row("secondary", REPOSITORY)
    finally:
        tracking.close()
    assert waited == [REPOSITORY]  # only a repository whose tags differ waits for its pushes
    assert row is not None
    if copied:
        assert ok, detail
        assert detail == "2 tags match" and row.verification_state is VerificationState.SUCCEEDED
        assert row.generation == before.generation  # no resync queued
    else:  # a real difference: read again, still there, failed and resynced as before
        assert not ok and "missing" in detail and "v2" in detail, detail
        assert row.verification_state is VerificationState.FAILED
        assert any("verification failed" in line for line in log)
        assert row.generation > before.generation  # a resync queued


def test_a_difference_of_more_tags_than_the_recheck_limit_is_not_read_again(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    image = oci_image("many")
    primary_pusher.push_tree(REPOSITORY, image, "t0")
    for n in range(1, RECHECK_LIMIT + 1):
        primary_pusher.push_manifest(REPOSITORY, f"t{n}", image.manifest, image.media_type)
    tracking = Tracking(tmp_path / "tracking.db")
    tracking.ensure_rows("secondary", [REPOSITORY])
    waited: list[str] = []

    async def pushes_copied(repository: str) -> None:
        waited.append(repository)

    try:
        ok, _, _ = asyncio.run(verify(primary, secondary, key_pair, tracking, pushes_copied))
    finally:
        tracking.close()
    assert not ok and waited == []  # no push race explains 101 missing tags: failed at once
