"""`geo-tui sync --once` against real CNCF Distribution: every format, byte for byte, and what it writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from geo_tui.cli import main
from geo_tui.config import load_config
from geo_tui.engine import Tracking
from geo_tui.engine.tracking import tracking_database
from tests.support.distribution import Distribution
from tests.support.geo import image_with_layers, tag_digests
from tests.support.oci import (
    ManifestNode,
    buildkit_cache_index,
    buildkit_cache_manifest,
    docker_image,
    layer_blob,
    multi_arch,
    oci_artifact,
    oci_image,
    oci_index,
    referrers_fallback,
    schema1_image,
    write_oci_layout,
)
from tests.support.postgres import BACKENDS
from tests.support.push import RawPusher, skopeo_push

WRITE_METHODS = ("PUT", "POST", "PATCH", "DELETE")


@pytest.fixture(params=BACKENDS)
def tracking_backend(request: pytest.FixtureRequest) -> str:
    """Every sync test runs with its tracking database on SQLite and on a real PostgreSQL."""
    return str(request.param)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def sync_json(capsys: pytest.CaptureFixture[str], config: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run_cli(capsys, "--config", str(config), "sync", "--once", "--json", *extra)
    assert out.strip(), f"no JSON summary; stderr:\n{err}"
    return code, json.loads(out)


def assert_same_content(primary: RawPusher, secondary: RawPusher, repository: str) -> dict[str, str]:
    """Every tag on the primary is on the secondary with the same digest and the same manifest bytes."""
    want = tag_digests(primary, repository)
    got = tag_digests(secondary, repository)
    assert got == want, f"{repository}: secondary tags differ"
    for tag, digest in want.items():
        a = primary.get_manifest(repository, digest)
        b = secondary.get_manifest(repository, digest)
        assert b.status_code == 200, f"{repository}@{digest} missing on the secondary"
        if "prettyjws" not in a.headers.get("Content-Type", ""):  # schema 1 is re-signed on every GET
            assert a.content == b.content, f"{repository}:{tag} bytes differ"
    return want


@dataclass
class FormatsWorkload:
    """What `push_formats_workload` put on the primary that the tests look at again."""

    nested: ManifestNode
    sbom: ManifestNode
    signature: ManifestNode


def push_formats_workload(
    primary: Distribution, primary_pusher: RawPusher, tmp_path: Path
) -> FormatsWorkload:
    """Every format in its own repository of the primary (8 repositories): Docker and OCI images, a
    multi-arch index and manifest list, schema 1, a nested index, BuildKit cache in both forms, and an
    image with an SBOM and a signature under its referrers fallback tag."""
    # skopeo pushes the ordinary images
    layout = write_oci_layout(
        tmp_path / "layout",
        {
            "docker": docker_image("d1"),
            "oci": oci_image("o1"),
            "multi": multi_arch("m1"),
            "dlist": multi_arch("dl", docker=True),
        },
    )
    skopeo_push(layout, "docker", primary.url, "formats/docker", dest_tag="v1")
    skopeo_push(layout, "oci", primary.url, "formats/oci", dest_tag="v1")
    skopeo_push(layout, "multi", primary.url, "formats/multiarch", dest_tag="latest")
    skopeo_push(layout, "dlist", primary.url, "formats/dockerlist", dest_tag="latest")
    # the lab's own client pushes what skopeo cannot make
    primary_pusher.push_tree("formats/schema1", schema1_image("formats/schema1", "old", seed="s1"), "old")
    nested = oci_index([multi_arch("n1"), oci_image("n2"), oci_index([oci_image("n3")])])
    primary_pusher.push_tree("formats/nested", nested, "v2")
    primary_pusher.push_tree("formats/buildkit", buildkit_cache_manifest("bk1"), "cache")
    primary_pusher.push_tree("formats/buildkit", buildkit_cache_index("bk2"), "cache-index")
    subject = oci_image("subject")
    primary_pusher.push_tree("formats/artifacts", subject, "app")
    sbom = oci_artifact(subject, seed="sbom")
    signature = oci_artifact(
        subject, artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json", seed="sig"
    )
    fallback_tag, fallback_index = referrers_fallback(subject, [sbom, signature])
    primary_pusher.push_tree("formats/artifacts", fallback_index, fallback_tag)
    return FormatsWorkload(nested, sbom, signature)


def test_every_format_arrives_byte_for_byte(
    primary: Distribution,
    registry_factory: Callable[..., Distribution],
    primary_pusher: RawPusher,
    config_for: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secondary = registry_factory("secondary", schema1=True)
    secondary_pusher = RawPusher.for_registry(secondary)
    workload = push_formats_workload(primary, primary_pusher, tmp_path)
    nested, sbom, signature = workload.nested, workload.sbom, workload.signature

    config = config_for(primary, secondary)
    code, summary = sync_json(capsys, config)
    site = summary["sites"]["secondary"]
    assert code == 0, site["failures"]
    assert site["failed"] == 0 and site["synced"] == 8

    for repository in primary_pusher.catalog():
        assert_same_content(primary_pusher, secondary_pusher, repository)
    # every platform of the multi-arch images, and every level of the nested index
    for node, repository in ((multi_arch("m1"), "formats/multiarch"), (nested, "formats/nested")):
        for digest in node.all_manifests():
            assert secondary_pusher.head_manifest(repository, digest).status_code == 200, digest
        for digest in node.all_blobs():
            assert secondary_pusher.blob_exists(repository, digest), digest
    # the referrers are there by digest, and so is the BuildKit cache's blob-only index content
    for artifact in (sbom, signature):
        assert secondary_pusher.head_manifest("formats/artifacts", artifact.digest).status_code == 200
    for digest in buildkit_cache_index("bk2").all_blobs():
        assert secondary_pusher.blob_exists("formats/buildkit", digest)


def test_schema1_into_a_secondary_without_schema1_fails_clearly(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    primary_pusher.push_tree("legacy/app", schema1_image("legacy/app", "v1", seed="l1"), "v1")
    primary_pusher.push_tree("modern/app", oci_image("m"), "v1")
    code, summary = sync_json(capsys, config_for(primary, secondary))
    site = summary["sites"]["secondary"]
    assert code == 1
    assert site["synced"] == 1 and site["failed"] == 1
    reason = site["failures"]["legacy/app"]
    assert "legacy/app" in reason and "schema 1" in reason and "compatibility.schema1.enabled" in reason


def test_second_run_writes_nothing_and_reads_no_content(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    for i in range(3):
        primary_pusher.push_tree(f"team/app{i}", multi_arch(f"app{i}"), "latest")
        primary_pusher.push_tree(f"team/app{i}", oci_image(f"app{i}-v1"), "v1")
    config = config_for(primary, secondary)
    assert sync_json(capsys, config)[0] == 0

    secondary_mark, primary_mark = secondary.mark(), primary.mark()
    code, summary = sync_json(capsys, config)
    assert code == 0
    site = summary["sites"]["secondary"]
    assert (site["tags_pushed"], site["blobs_copied"], site["blobs_mounted"]) == (0, 0, 0)
    secondary.wait_for_requests(6, method="HEAD", since_mark=secondary_mark)
    secondary_requests = secondary.requests(since_mark=secondary_mark)
    writes = [r for r in secondary_requests if r.method in WRITE_METHODS]
    assert writes == [], f"a no-op run wrote to the secondary: {writes}"
    for registry, mark in ((secondary, secondary_mark), (primary, primary_mark)):
        content_reads = [
            r
            for r in registry.requests(method="GET", since_mark=mark)
            if "/manifests/" in r.uri or "/blobs/" in r.uri
        ]
        assert content_reads == [], f"{registry.name}: a no-op run fetched content: {content_reads}"


def test_shared_layers_are_copied_once_then_mounted(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = [layer_blob("base-os", 64 * 1024), layer_blob("base-runtime", 32 * 1024)]
    for i in range(4):
        primary_pusher.push_tree(
            f"svc/s{i}", image_with_layers([*base, layer_blob(f"app-{i}")], seed=str(i)), "v1"
        )
    config = config_for(primary, secondary, engine={"repository_concurrency": 4})
    mark = secondary.mark()
    code, summary = sync_json(capsys, config)
    assert code == 0
    site = summary["sites"]["secondary"]
    # 4 repositories x (config + app layer) are unique; the 2 base layers are streamed once each
    assert site["blobs_copied"] == 4 * 2 + 2
    assert site["blobs_mounted"] == 3 * 2
    mounts = secondary.requests(method="POST", path_contains="mount=", since_mark=mark, status=201)
    assert len(mounts) == 6
    for i in range(4):
        for blob in base:
            assert secondary_pusher.blob_exists(f"svc/s{i}", blob.digest)
    # Repositories the secondary does not know, never started by this engine: nothing is looked for.
    heads = [
        r for r in secondary.requests(method="HEAD", since_mark=mark) if r.user_agent.startswith("geo-tui")
    ]
    assert heads == [], f"a first backfill looked for what could not be there: {heads}"


def test_a_repository_this_engine_wrote_to_is_looked_at_before_copying(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run that died after some uploads left blobs in a repository that has no tag yet (the registry
    does not list it): the next run must look (HEAD) and not upload them again."""
    layers = [layer_blob("early", 256 * 1024), layer_blob("late", 128 * 1024)]
    primary_pusher.push_tree("half/app", image_with_layers(layers, seed="half"), "v1")
    secondary_pusher.push_blob("half/app", layers[0])  # what the dead run had copied
    config = config_for(primary, secondary)
    tracking = Tracking(tracking_database(load_config(config).engine))
    try:
        tracking.ensure_rows("secondary", ["half/app"])
        tracking.mark_started("secondary", "half/app")  # the dead run's start
        tracking.recover_started()
    finally:
        tracking.close()
    mark = secondary.mark()
    code, summary = sync_json(capsys, config)
    assert code == 0, summary
    uploads = secondary.requests(method="PUT", path_contains="/blobs/uploads/", since_mark=mark)
    assert not any(layers[0].digest in line.uri for line in uploads), (
        "a blob already there was uploaded again"
    )
    assert any(layers[1].digest in line.uri for line in uploads)
    assert summary["sites"]["secondary"]["blobs_present"] == 1
    assert_same_content(primary_pusher, secondary_pusher, "half/app")


def test_moved_and_deleted_tags_follow_the_primary(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = "web/frontend"
    v1, v2, old = oci_image("v1"), oci_image("v2"), oci_image("old")
    primary_pusher.push_tree(repo, v1, "latest")
    primary_pusher.push_tree(repo, v1, "v1")
    primary_pusher.push_tree(repo, old, "old")
    config = config_for(primary, secondary)
    assert sync_json(capsys, config)[0] == 0

    primary_pusher.push_tree(repo, v2, "latest")  # moved
    primary_pusher.push_tree(repo, v2, "v2")  # added
    assert primary_pusher.delete_manifest(repo, old.digest).status_code == 202  # "old" removed
    code, summary = sync_json(capsys, config)
    assert code == 0, summary
    assert assert_same_content(primary_pusher, secondary_pusher, repo) == {
        "latest": v2.digest,
        "v1": v1.digest,
        "v2": v2.digest,
    }
    assert summary["sites"]["secondary"]["tags_deleted"] == 1


def test_deletion_never_removes_a_manifest_a_kept_tag_needs(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = "shared/digest"
    image = oci_image("shared")
    platform_image = multi_arch("plat")
    primary_pusher.push_tree(repo, image, "stable")
    primary_pusher.push_tree(repo, platform_image, "multi")
    # extra tags on the secondary that the primary does not have, pointing at manifests kept tags use:
    # Distribution 2.8 can only delete by digest, which would take "stable" (or a platform of "multi") along.
    secondary_pusher.push_tree(repo, image, "leftover")
    child = platform_image.children[0]
    secondary_pusher.push_tree(repo, platform_image, "multi")
    secondary_pusher.push_manifest(repo, "child-leftover", child.manifest, child.media_type)
    config = config_for(primary, secondary)
    code, summary = sync_json(capsys, config)
    assert code == 0, summary
    held = tag_digests(secondary_pusher, repo)
    assert held["stable"] == image.digest and held["multi"] == platform_image.digest
    assert secondary_pusher.head_manifest(repo, child.digest).status_code == 200
    warnings = " ".join(summary["sites"]["secondary"]["warnings"])
    assert "leftover" in warnings and "child-leftover" in warnings


def test_empty_and_removed_repositories(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    gone = oci_image("gone")
    primary_pusher.push_tree("team/retired", gone, "v1")
    primary_pusher.push_tree("team/live", oci_image("live"), "v1")
    empty = oci_image("empty")
    primary_pusher.push_tree("team/empty", empty, "tmp")
    assert primary_pusher.delete_manifest("team/empty", empty.digest).status_code == 202
    config = config_for(primary, secondary)
    assert sync_json(capsys, config)[0] == 0
    assert secondary_pusher.list_tags("team/retired") == ["v1"]

    # the primary removes every tag of a repository: the guard keeps the secondary's copy
    assert primary_pusher.delete_manifest("team/retired", gone.digest).status_code == 202
    code, summary = sync_json(capsys, config)
    assert code == 0, summary
    assert secondary_pusher.list_tags("team/retired") == ["v1"]
    assert any("deletion guard" in w for w in summary["sites"]["secondary"]["warnings"])
    # nothing to copy for a repository with no tags: the secondary holds no tag of it
    response = secondary_pusher.request("GET", "/v2/team/empty/tags/list", repository="team/empty")
    assert response.status_code == 404 or not response.json().get("tags")
    assert summary["sites"]["secondary"]["synced"] == 3 and summary["sites"]["secondary"]["failed"] == 0


def test_catalog_paging_past_100_repositories(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = oci_image("tiny", layers=1, layer_size=64)
    names = [f"many/r{i:03d}" for i in range(120)]
    for name in names:
        primary_pusher.push_tree(name, image, "v1")
    mark = primary.mark()
    code, summary = sync_json(capsys, config_for(primary, secondary, engine={"repository_concurrency": 16}))
    assert code == 0
    assert summary["sites"]["secondary"]["synced"] == 120
    assert primary.count_requests(method="GET", path_contains="/v2/_catalog", since_mark=mark) >= 2
    assert sorted(secondary_pusher.catalog()) == names


def test_status_and_filters(
    primary: Distribution,
    secondary: Distribution,
    secondary2: Distribution,
    primary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("group/a", "group/tmp-b", "other/c"):
        primary_pusher.push_tree(name, oci_image(name), "v1")
    config = config_for(
        primary,
        secondary,
        secondary2,
        secondary_options={"secondary2": {"include": ["group/*"], "exclude": ["*/tmp-*"]}},
    )
    code, summary = sync_json(capsys, config)
    assert code == 0
    assert summary["sites"]["secondary"]["synced"] == 3
    assert summary["sites"]["secondary2"]["synced"] == 1
    with RawPusher.for_registry(secondary2) as pusher:
        assert pusher.catalog() == ["group/a"]

    code, out, _ = run_cli(capsys, "--config", str(config), "status")
    assert code == 0
    assert "100.00%" in out
    code, out, _ = run_cli(capsys, "--config", str(config), "status", "--json")
    data = json.loads(out)
    assert data["sites"]["secondary2"] == {**data["sites"]["secondary2"], "total": 1, "synced": 1}

    code, _, err = run_cli(capsys, "--config", str(config), "sync", "--once", "--site", "nowhere")
    assert code == 2 and "--site nowhere" in err and "Traceback" not in err
