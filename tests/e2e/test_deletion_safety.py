"""Deletion safety on a secondary, issue 12 cases 1-3, on real Distribution 2.8 (and the lab registry) with
faults injected between geo-tui and the registries.

The rule (README, "Deletions"): a manifest on a secondary is deleted only when this run has read, on the
secondary itself, every tag that stays there and every manifest they reach; if anything is unreadable,
nothing is deleted in that repository this run. Each case ends with a real client (`skopeo copy --all`)
pulling the kept images whole from the secondary, and checks that the run did not report success.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from geo_tui.engine.engine import SyncSummary
from tests.e2e.test_faults import (
    SECONDARY,
    assert_no_broken_tags,
    failed_reason,
    geo_config,
    make_engine,
    push_all,
)
from tests.support.distribution import Distribution
from tests.support.faults import FaultTransport
from tests.support.geo import image_with_layers, tag_digests
from tests.support.keys import TestKeyPair
from tests.support.oci import ManifestNode, layer_blob, oci_image, oci_index
from tests.support.push import RawPusher, skopeo_pull

pytestmark = pytest.mark.timeout(120)


def assert_pulls_whole(
    registry: Distribution, repository: str, reference: str, node: ManifestNode, tmp: Path
) -> None:
    """skopeo copies `repository` at `reference` (tag or digest), every platform, from `registry`, and
    gets every manifest of `node`."""
    destination = Path(tempfile.mkdtemp(prefix="pulled-", dir=tmp)) / "layout"
    result = skopeo_pull(registry.url, repository, reference, destination)
    assert result.returncode == 0, f"{repository} {reference} does not pull whole: {result.stderr[-800:]}"
    assert node.digest in (destination / "index.json").read_text()
    for manifest in node.walk():
        blob = destination / "blobs" / "sha256" / manifest.digest.removeprefix("sha256:")
        assert blob.exists(), f"{repository} {reference}: {manifest.digest} was not pulled"


def warnings_of(summary: SyncSummary) -> str:
    return " | ".join(summary.sites[SECONDARY].warnings)


# -- case 1: an index the secondary cannot serve for a moment protects everything below it ----------------


@pytest.mark.parametrize("unreadable", ["top index", "nested index"])
async def test_unreadable_index_on_the_secondary_holds_every_deletion(
    unreadable: str,
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    repository = "del/index"
    child, other = oci_image("case1-child"), oci_image("case1-other")
    # skopeo cannot copy an index of an index: the nested case pulls the inner index by digest, and
    # assert_no_broken_tags walks every level of `idx`.
    inner = oci_index([child, other])
    idx = oci_index([child, other]) if unreadable == "top index" else oci_index([inner, oci_image("case1-x")])
    broken = idx if unreadable == "top index" else inner
    push_all(primary_pusher, {repository: {"idx": idx}})
    faults = FaultTransport()
    config = geo_config(tmp_path, primary, secondary, key_pair)
    async with make_engine(config, **{SECONDARY: faults}) as engine:
        assert (await engine.sync_once()).ok
        # `child` was a tag of C, which `idx` reaches (one level down, two when nested), and the primary no
        # longer has it (Distribution 2.8 cannot delete a tag alone: the tag is put on the secondary directly,
        # as an earlier sync would have left it).
        secondary_pusher.push_manifest(repository, "child", child.manifest, child.media_type)
        held = {"idx": idx.digest, "child": child.digest}
        assert tag_digests(secondary_pusher, repository) == held

        # A storage hiccup on the secondary: every GET of one index answers 500 this run (the client's three
        # retries too); HEAD still works. Before the fix, C was deleted by digest and `idx` broken.
        rule = faults.fail("GET", rf"^/v2/{repository}/manifests/{broken.digest}$", 500)
        summary = await engine.sync_once()
        assert rule.fired >= 4, "the 500 was retried by the client, then reported"
        reason = failed_reason(summary, repository)  # the run does not say ok
        assert "deletions held back" in reason and broken.digest in reason and "500" in reason, reason
        assert f"nothing is deleted in {repository} this run" in reason, reason
        assert summary.sites[SECONDARY].stats.tags_deleted == 0
        assert tag_digests(secondary_pusher, repository) == held
        assert secondary_pusher.head_manifest(repository, child.digest).status_code == 200
        assert_pulls_whole(secondary, repository, broken.digest, broken, tmp_path)
        assert_no_broken_tags(secondary_pusher)

        # Readable again: C is reached by `idx`, so `child` (deletable only by digest here) is kept, loudly.
        faults.clear()
        summary = await engine.sync_once()
    assert summary.ok, summary.sites[SECONDARY].failures
    assert "tag child kept" in warnings_of(summary) and child.digest in warnings_of(summary)
    assert tag_digests(secondary_pusher, repository) == held
    assert_pulls_whole(secondary, repository, broken.digest, broken, tmp_path)
    assert_no_broken_tags(secondary_pusher)


# -- case 2: a kept tag protects the manifest it points at on the secondary now, not on the primary -------


async def test_failed_copy_of_a_moved_tag_keeps_the_manifest_it_still_points_at(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    repository = "del/moved"
    before = image_with_layers([layer_blob("case2-before", 2048)], seed="case2-before")
    new_layer = layer_blob("case2-after", 4096)
    after = image_with_layers([new_layer], seed="case2-after")
    push_all(primary_pusher, {repository: {"latest": before, "old": before}})
    primary_faults = FaultTransport()
    config = geo_config(tmp_path, primary, secondary, key_pair)
    async with make_engine(config, primary=primary_faults) as engine:
        assert (await engine.sync_once()).ok
        assert tag_digests(secondary_pusher, repository) == {"latest": before.digest, "old": before.digest}

        # On the primary `latest` moves and `old` is deleted; one blob of the new `latest` cannot be read.
        primary_pusher.push_tree(repository, after, "latest")
        assert primary_pusher.delete_manifest(repository, before.digest).status_code == 202
        assert primary_pusher.list_tags(repository) == ["latest"]
        primary_faults.fail("GET", rf"^/v2/{repository}/blobs/{new_layer.digest}$", 500)
        summary = await engine.sync_once()
        reason = failed_reason(summary, repository)  # the copy failed: the run does not say ok
        assert "tag latest" in reason and new_layer.digest in reason, reason
        # Deleting `old` by digest would take `latest` (still on that manifest here) with it.
        assert tag_digests(secondary_pusher, repository) == {"latest": before.digest, "old": before.digest}
        assert "tag old kept" in warnings_of(summary), warnings_of(summary)
        assert_pulls_whole(secondary, repository, "latest", before, tmp_path)
        assert_no_broken_tags(secondary_pusher)

        primary_faults.clear()
        summary = await engine.sync_once()
    assert summary.ok, summary.sites[SECONDARY].failures
    assert tag_digests(secondary_pusher, repository) == {"latest": after.digest}
    assert secondary_pusher.head_manifest(repository, before.digest).status_code == 404
    assert_pulls_whole(secondary, repository, "latest", after, tmp_path)


# -- case 3: a tag the primary lists but cannot serve is kept ---------------------------------------------


async def test_tag_listed_but_not_served_by_the_primary_is_kept_and_fails_the_repository(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    repository = "del/lagging"
    v1, v2 = oci_image("case3-v1"), oci_image("case3-v2")
    push_all(primary_pusher, {repository: {"v1": v1, "v2": v2}})
    primary_faults = FaultTransport()
    config = geo_config(tmp_path, primary, secondary, key_pair)
    async with make_engine(config, primary=primary_faults) as engine:
        assert (await engine.sync_once()).ok
        held = {"v1": v1.digest, "v2": v2.digest}

        # A lagging replica behind the primary's name: the listing has v2, HEAD of v2 answers 404.
        rule = primary_faults.fail(
            "HEAD", rf"^/v2/{repository}/manifests/v2$", 404, error=("MANIFEST_UNKNOWN", "manifest unknown")
        )
        summary = await engine.sync_once()
        assert rule.fired >= 1
        reason = failed_reason(summary, repository)
        assert "primary lists tag v2 but cannot serve it" in reason, reason
        assert summary.sites[SECONDARY].stats.tags_deleted == 0
        assert tag_digests(secondary_pusher, repository) == held
        assert_pulls_whole(secondary, repository, "v2", v2, tmp_path)

        primary_faults.clear()
        summary = await engine.sync_once()
    assert summary.ok, summary.sites[SECONDARY].failures
    assert tag_digests(secondary_pusher, repository) == held


# -- a tag pushed again while a run reads: the listing that named it gone is older than the primary -------


class _PushAfter(httpx.AsyncBaseTransport):
    """Passes requests to `inner`; once armed, right after the primary has answered `method` `path`
    (a listing, a HEAD), calls `push` (in a thread): a push that lands after the run read that."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, method: str, path: str, push: Callable[[], None]
    ) -> None:
        self._inner, self._method, self._path, self._push = inner, method, path, push
        self.armed = False
        self.fired = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if self.armed and request.method == self._method and request.url.path == self._path:
            self.armed = False
            await asyncio.to_thread(self._push)
            self.fired += 1
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.mark.parametrize("primary_answers", ["200", "500"])
async def test_tag_pushed_again_while_a_run_reads_is_not_deleted(
    primary_answers: str,
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`late` is on the secondary and gone from the primary (deleted there: Distribution 2.8 cannot delete
    a tag alone, so it is put on the secondary directly). A run lists the primary's tags; right after,
    `late` is pushed to the primary again. The listing names `late` gone, but before deleting it the run
    asks the primary again: it has `late`, so the tag stays, with a warning. When that question fails
    (500), the tag stays and the repository fails, until the primary answers."""
    repository = "del/race"
    v1, late = oci_image("race-v1"), oci_image("race-late")
    push_all(primary_pusher, {repository: {"v1": v1}})
    faults = FaultTransport()
    push = lambda: primary_pusher.push_tree(repository, late, "late")  # noqa: E731
    racing = _PushAfter(faults, "GET", f"/v2/{repository}/tags/list", push)
    config = geo_config(tmp_path, primary, secondary, key_pair)
    async with make_engine(config, primary=racing) as engine:
        assert (await engine.sync_once()).ok
        secondary_pusher.push_tree(repository, late, "late")
        if primary_answers == "500":
            faults.fail("HEAD", rf"^/v2/{repository}/manifests/late$", 500)
        racing.armed = True
        summary = await engine.sync_once()
        assert racing.fired == 1
        assert summary.sites[SECONDARY].stats.tags_deleted == 0
        assert tag_digests(secondary_pusher, repository) == {"v1": v1.digest, "late": late.digest}
        assert_pulls_whole(secondary, repository, "late", late, tmp_path)
        if primary_answers == "200":
            assert summary.ok, summary.sites[SECONDARY].failures
            assert "tag late kept on secondary: the primary has it again" in warnings_of(summary)
        else:
            # The first attempt fails on the question; the in-run retry lists `late` and fails its HEAD.
            reason = failed_reason(summary, repository)
            assert "tag late" in reason and "500" in reason, reason
            said = [r.getMessage() for r in caplog.records]
            assert any("tag late: kept, the primary cannot confirm it is gone" in m for m in said), said
            faults.clear()
            summary = await engine.sync_once()
            assert summary.ok, summary.sites[SECONDARY].failures
    assert tag_digests(secondary_pusher, repository) == {"v1": v1.digest, "late": late.digest}


async def test_tag_pushed_again_between_the_question_and_the_delete_fails_the_repository(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The primary answers 404 for `late` (gone), and `late` is pushed there again right after, before
    the run deletes it on the secondary. After its deletions the run asks the primary once more: `late` is
    back, so that attempt fails (it would end synced without `late`), and the in-run retry copies it."""
    repository = "del/race2"
    v1, late = oci_image("race2-v1"), oci_image("race2-late")
    push_all(primary_pusher, {repository: {"v1": v1}})
    push = lambda: primary_pusher.push_tree(repository, late, "late")  # noqa: E731
    racing = _PushAfter(FaultTransport(), "HEAD", f"/v2/{repository}/manifests/late", push)
    config = geo_config(tmp_path, primary, secondary, key_pair)
    async with make_engine(config, primary=racing) as engine:
        assert (await engine.sync_once()).ok
        secondary_pusher.push_tree(repository, late, "late")
        racing.armed = True
        summary = await engine.sync_once()
        assert racing.fired == 1
        stats = summary.sites[SECONDARY].stats
        assert stats.tags_deleted == 1  # on the strength of the 404
        assert stats.tags_pushed == 1  # by the retry that the first attempt's failure asked for
        assert summary.ok, summary.sites[SECONDARY].failures
        said = [r.getMessage() for r in caplog.records]
        needle = "tag late was pushed to the primary again while this run deleted it on secondary"
        assert any(needle in m for m in said), said
    assert tag_digests(secondary_pusher, repository) == {"v1": v1.digest, "late": late.digest}
