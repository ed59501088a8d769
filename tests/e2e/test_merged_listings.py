"""The whole-repository diff merges the two sides' tag listings in chunks (engine/merge.py), issue 12's
"bounded resources": memory does not grow with the tag count, a repository of thousands of tags still
syncs exactly (copies, moved tags, deletions and the deletion rule) on real Distribution 2.8, whose
listing is one page in storage order, and a listing that goes back over pages is compared in memory,
said in a warning.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from geo_tui.config import load_config
from geo_tui.engine import Engine
from tests.e2e.test_faults import SECONDARY, geo_config, make_engine
from tests.support.distribution import Distribution
from tests.support.faults import FaultTransport
from tests.support.geo import tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.many_tags import remove_tag, tag_names, write_tags
from tests.support.oci import oci_image
from tests.support.push import RawPusher
from tests.support.synthetic import REPOSITORY, SyntheticRegistry, synthetic_sync_in_child, write_config

# Peak traced memory of the whole sync may differ by this much between 2000 and 6000 tags (both more than
# one listing page). The in-memory compare it replaces grew by about 310 bytes a tag measured the same way
# (676 KB at 1000 tags, 2,224 KB at 6000); the merge, by 139 KB from 1000 to 6000 (one page to several)
# and 130 KB from 3000 to 30000.
FLAT_BYTES = 256 * 1024


@pytest.mark.timeout(900)
@pytest.mark.parametrize("missing", [0.0, 0.5], ids=["in-sync", "half-missing"])
def test_peak_memory_of_the_compare_does_not_grow_with_the_tag_count(missing: float) -> None:
    """The real engine, client, httpx and database over the synthetic registry (sorted pages of 1000
    tags), in a child process each, under tracemalloc: the peak of what the sync allocates is the same at 2000
    and 6000 tags, whether every tag matches (the no-op compare) or half of them need copying."""
    peaks: dict[int, int] = {}
    for count in (2_000, 6_000):
        for _ in range(2):  # the lower of two runs: when the collector happens to run moves a peak
            figures = synthetic_sync_in_child(count, missing, trace=True)
            assert figures["ok"], figures
            assert figures["primary_tag_heads"] == count == figures["secondary_tags_held_after"], figures
            assert figures["puts"] == figures["missing_on_secondary"] == (count // 2 if missing else 0), (
                figures
            )
            peaks[count] = min(peaks.get(count, figures["traced_peak_bytes"]), figures["traced_peak_bytes"])
    growth = peaks[6_000] - peaks[2_000]
    assert growth < FLAT_BYTES, f"peak grew by {growth} bytes from 2000 to 6000 tags: {peaks}"


class PagesGoingBack(SyntheticRegistry):
    """Pages of the listing come last page first: each page is sorted, the listing is not."""

    def _tags(self, request: httpx.Request) -> httpx.Response:
        listed = [f"build-{i:07d}" for i in range(self.count) if self.present[i]]
        size = 100
        pages = [listed[i : i + size] for i in range(0, len(listed), size)][::-1]
        number = int(request.url.params.get("page", "0"))
        headers = {}
        if number + 1 < len(pages):
            headers["Link"] = f'</v2/{REPOSITORY}/tags/list?page={number + 1}>; rel="next"'
        return httpx.Response(200, json={"name": REPOSITORY, "tags": pages[number]}, headers=headers)


def test_a_listing_that_goes_back_over_pages_is_compared_in_memory_and_said(tmp_path: Path) -> None:
    count = 1_000
    primary, secondary = PagesGoingBack(count), SyntheticRegistry(count, missing_every=10)

    async def run() -> Any:
        async with Engine(
            load_config(write_config(tmp_path)), transports={"primary": primary, "eu": secondary}
        ) as e:
            return await e.sync_once()

    summary = asyncio.run(run())
    site = summary.sites["eu"]
    assert summary.ok and site.synced == 1, site.failures
    assert site.stats.tags_pushed == count // 10 and sum(secondary.present) == count
    warnings = " | ".join(site.warnings)
    assert "primary lists the tags of bench/tags out of lexical order" in warnings, warnings
    assert "compared in memory instead" in warnings, warnings


@pytest.mark.timeout(900)
@pytest.mark.distribution_only("Distribution 2.8 deletes tags only by digest and lists them in storage order")
async def test_thousands_of_tags_sync_exactly_through_the_merge_deletions_and_their_rule_included(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    registry_kind: str,
) -> None:
    """2000 tags written into the registries' storage (tests/support/many_tags.py). The secondary lacks
    200 of them, has one on another manifest, and 100 tags the primary does not have: 99 on a manifest
    only they use (deleted) and one on the manifest the kept tags use (kept, said: Distribution 2.8 can
    only delete by digest). Nothing falls back to the in-memory compare."""
    repository = "ci/many"
    image, other = oci_image("merge-kept"), oci_image("merge-gone")
    tags = tag_names(2_000)
    lacking, moved = set(tags[7::10]), tags[5]
    digest = primary_pusher.push_tree(repository, image, tags[0])
    assert secondary_pusher.push_tree(repository, image, tags[0]) == digest
    gone_digest = secondary_pusher.push_tree(repository, other, "gone-0000")
    write_tags(primary, repository, digest, tags[1:])
    write_tags(secondary, repository, digest, [t for t in tags[1:] if t not in lacking and t != moved])
    write_tags(secondary, repository, gone_digest, [moved, *tag_names(99, "gone-")[1:]])
    write_tags(secondary, repository, digest, ["gone-shared"])
    answer = secondary_pusher.request("GET", f"/v2/{repository}/tags/list?n=100", repository=repository)
    listed = answer.json()["tags"]  # as the registry sends it
    assert "next" not in answer.links  # Distribution 2.8 ignores n: one page
    assert len(listed) == 2_000 - len(lacking) + 100
    if registry_kind == "distribution":  # one page, in storage order: the merge sorts it
        assert listed != sorted(listed)

    async with make_engine(geo_config(tmp_path, primary, secondary, key_pair)) as engine:
        summary = await engine.sync_once()
    site = summary.sites[SECONDARY]
    assert summary.ok and site.synced == 1, site.failures
    assert site.stats.tags_pushed == len(lacking) + 1  # the lacking ones and the moved one
    warnings = " | ".join(site.warnings)
    assert "compared in memory" not in warnings, warnings
    assert "tag gone-shared kept" in warnings and digest in warnings, warnings
    assert tag_digests(secondary_pusher, repository) == {**dict.fromkeys(tags, digest), "gone-shared": digest}
    assert secondary_pusher.head_manifest(repository, gone_digest).status_code == 404

    async with make_engine(geo_config(tmp_path, primary, secondary, key_pair)) as engine:
        again = await engine.sync_once()  # the no-op compare: nothing written, the kept tag said again
    assert again.ok and again.sites[SECONDARY].stats.writes == 0, again.sites[SECONDARY]


@pytest.mark.timeout(900)
async def test_both_secondaries_runs_head_each_primary_tag_once(
    primary: Distribution,
    secondary: Distribution,
    secondary2: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    """One job compares a repository of 1,200 tags (three chunks) into two secondaries, each lacking a
    few tags of its own: every tag of the primary is HEADed once for both runs (engine/shared_heads.py),
    not once per secondary, and both end with every tag."""
    repository = "ci/shared-heads"
    image = oci_image("shared-heads")
    tags = tag_names(1_200)
    digest = primary_pusher.push_tree(repository, image, tags[0])
    write_tags(primary, repository, digest, tags[1:])
    lacking = {secondary.name: set(tags[3::100]), secondary2.name: set(tags[7::100])}
    for registry in (secondary, secondary2):
        with RawPusher.for_registry(registry) as pusher:
            assert pusher.push_tree(repository, image, tags[0]) == digest
        write_tags(registry, repository, digest, [t for t in tags[1:] if t not in lacking[registry.name]])

    mark = primary.settled_mark()
    config = write_geo_config(tmp_path / "geo", primary, [secondary, secondary2], key_pair)
    async with make_engine(config) as engine:
        summary = await engine.sync_once()
    assert summary.ok, {name: site.failures for name, site in summary.sites.items()}
    for registry in (secondary, secondary2):
        site = summary.sites[registry.name]
        assert site.synced == 1 and site.stats.tags_pushed == len(lacking[registry.name]) == 12
        with RawPusher.for_registry(registry) as pusher:
            assert tag_digests(pusher, repository) == dict.fromkeys(tags, digest)
    heads = primary.requests("HEAD", f"/v2/{repository}/manifests/build-", since_mark=mark)
    primary.settled_mark()
    by_tag: dict[str, int] = {}
    for entry in heads:
        tag = entry.uri.rsplit("/", 1)[-1]
        by_tag[tag] = by_tag.get(tag, 0) + 1
    assert sorted(by_tag) == sorted(tags)
    twice = sorted(t for t, n in by_tag.items() if n > 1)
    # Each run HEADed every tag on its own before: 2,400. A tag the other run reached more than 10 s
    # later is asked again (none is expected here: the runs go side by side).
    assert len(heads) <= 1_200 + 24, (len(heads), twice[:10])
    print(f"primary HEADs of tags for two secondaries: {len(heads)} for 1,200 tags ({len(twice)} twice)")


@pytest.mark.timeout(300)
async def test_a_run_that_changes_nothing_ends_in_one_tracking_write(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    """A whole-repository run records the tags it saw on both sides: a chunk it wrote to the secondary
    at once, and a chunk it only read with the run's mark, in one transaction. A compare that changes
    nothing then ends in one write, the tags seen are stamped anew, and a tag gone from the primary
    (and deleted on the secondary) is forgotten on both."""
    repository = "ci/one-write"
    digest = primary_pusher.push_tree(repository, oci_image("one-write"), "v1")
    write_tags(primary, repository, digest, ["v2"])
    gone = primary_pusher.push_tree(repository, oci_image("one-write-gone"), "v3")
    config = write_geo_config(tmp_path / "geo", primary, [secondary], key_pair)
    recording = {"record_seen", "record_tags_seen", "forget_tags_seen", "mark_synced"}
    async with make_engine(config) as engine:
        writes: list[tuple[str, Any]] = []
        write = engine._db

        async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
            if fn.__name__ in recording:
                writes.append((fn.__name__, kwargs.get("seen")))
            return await write(fn, *args, **kwargs)

        engine._db = counted  # type: ignore[method-assign]
        copy = await engine.sync_once()
        assert copy.ok and copy.sites[SECONDARY].stats.tags_pushed == 3, copy.sites[SECONDARY]
        # the chunk it wrote to the secondary is recorded before the run ends; the mark carries none
        assert [name for name, _ in writes] == ["record_seen", "mark_synced"], writes
        assert not writes[1][1]

        writes.clear()
        started = engine.tracking.now()
        again = await engine.sync_once()
        assert again.ok and again.sites[SECONDARY].stats.writes == 0, again.sites[SECONDARY]
        assert [name for name, _ in writes] == ["mark_synced"], writes
        both = {"v1": digest, "v2": digest, "v3": gone}
        assert writes[0][1] == {primary.name: both, secondary.name: both}
        seen = engine.tracking.tags_seen(repository)
        for site in (primary.name, secondary.name):
            assert seen[site][0] == both and seen[site][1] >= started, (site, seen[site])

        remove_tag(primary, repository, "v3")
        writes.clear()
        deleted = await engine.sync_once()
        assert deleted.ok and deleted.sites[SECONDARY].stats.tags_deleted == 1, deleted.sites[SECONDARY]
        assert [name for name, _ in writes] == ["mark_synced"], writes
        seen = engine.tracking.tags_seen(repository)
        for site in (primary.name, secondary.name):
            assert seen[site][0] == {"v1": digest, "v2": digest}, (site, seen[site])
    with RawPusher.for_registry(secondary) as pusher:
        assert tag_digests(pusher, repository) == {"v1": digest, "v2": digest}


@pytest.mark.timeout(300)
async def test_a_failed_primary_head_is_not_shared_each_secondarys_run_asks_and_fails_it(
    primary: Distribution,
    secondary: Distribution,
    secondary2: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    """Two secondaries' runs share the primary's HEADs of a repository (engine/shared_heads.py), but not
    a failed one: with the primary answering 500 to every HEAD of one tag, each run asks it on its own,
    fails the repository naming the tag and the status, and copies the other tag; once the primary
    answers, both end whole."""
    repository = "ci/shared-fault"
    good = primary_pusher.push_tree(repository, oci_image("shared-fault-good"), "v1")
    broken = primary_pusher.push_tree(repository, oci_image("shared-fault-broken"), "v2")
    faults = FaultTransport()
    rule = faults.fail("HEAD", rf"^/v2/{repository}/manifests/v2$", 500)
    config = write_geo_config(tmp_path / "geo", primary, [secondary, secondary2], key_pair)
    async with make_engine(config, primary=faults) as engine:
        summary = await engine.sync_once()
        for registry in (secondary, secondary2):
            site = summary.sites[registry.name]
            assert (site.failed, site.synced) == (1, 0), site
            assert repository in site.failures, site
            reason = site.failures[repository]
            assert "v2" in reason and "500" in reason, reason
            with RawPusher.for_registry(registry) as pusher:
                assert tag_digests(pusher, repository) == {"v1": good}
        # each site's attempts, each HEAD tried 1 + 3 times by its client: shared, it would be half
        attempts = engine.config.engine.sync_attempts
        assert attempts > 1 and rule.fired == 2 * attempts * 4, faults.log

        faults.clear()
        again = await engine.sync_once()
        assert again.ok, {name: site.failures for name, site in again.sites.items()}
    for registry in (secondary, secondary2):
        with RawPusher.for_registry(registry) as pusher:
            assert tag_digests(pusher, repository) == {"v1": good, "v2": broken}
