"""Bounded resources on real registries: listings that never end are refused with a reason naming the
site or repository."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.e2e.test_cli import geo
from tests.support.distribution import Distribution
from tests.support.endless import EndlessListings
from tests.support.geo import tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.push import RawPusher


def test_a_catalog_that_pages_forever_ends_sync_once_with_exit_1_naming_the_site(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> None:
    primary, eu = registry_factory("primary"), registry_factory("eu")
    with RawPusher.for_registry(primary) as pusher:
        pusher.push_tree("shop/app", oci_image("app"), "v1")
    with EndlessListings(primary.url, endless=r"^/v2/_catalog$") as proxy:
        config = write_geo_config(
            tmp_path / "geo",
            primary,
            [eu],
            key_pair,
            engine={"max_catalog_pages": 25},
            primary_options={"registry": proxy.url},
        )
        result = geo("--config", str(config), "sync", "--once")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "geo-tui: primary: GET catalog: more than 25 pages and the registry still links to a next one; "
        "raise [engine] max_catalog_pages if it really lists that many repositories"
    )
    assert proxy.pages == 25  # it stopped at the cap, not one page later


def test_a_tag_list_that_pages_forever_fails_that_repository_by_name_and_the_others_sync(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> None:
    primary, eu = registry_factory("primary"), registry_factory("eu")
    with RawPusher.for_registry(primary) as pusher:
        pusher.push_tree("shop/app", oci_image("app"), "v1")
        pusher.push_tree("shop/endless", oci_image("endless"), "v1")
        want = tag_digests(pusher, "shop/app")
    with EndlessListings(primary.url, endless=r"^/v2/shop/endless/tags/list$") as proxy:
        config = write_geo_config(
            tmp_path / "geo",
            primary,
            [eu],
            key_pair,
            engine={"max_tags_per_repository": 40, "sync_attempts": 1},
            primary_options={"registry": proxy.url},
        )
        result = geo("--config", str(config), "sync", "--once", "--json")
    assert result.returncode == 1, result
    summary = json.loads(result.stdout)["sites"]["eu"]
    assert summary["synced"] == 1 and summary["failed"] == 1, summary
    assert list(summary["failures"]) == ["shop/endless"]
    assert (
        "primary: GET tags shop/endless: more than 40 tags; raise [engine] max_tags_per_repository "
        "if the repository really holds that many"
    ) in summary["failures"]["shop/endless"]
    assert proxy.pages == 40  # one tag a page (the same one again): every page counts
    with RawPusher.for_registry(eu) as eu_pusher:
        assert tag_digests(eu_pusher, "shop/app") == want
