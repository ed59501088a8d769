"""`geo-tui verify --deep` and `--content` on real registries: a blob file deleted from a secondary's storage
and another overwritten with as many random bytes. The checksum depth cannot see either; deep finds the lost
one (and its resync puts it back), content finds the corrupt one."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from geo_tui.config import Secret, load_config
from geo_tui.engine import Engine, SyncState, VerificationDepth, VerificationState
from geo_tui.engine.wire import Verify, decode_rows
from geo_tui.lab.images import Blob, oci_artifact, oci_index, referrers_fallback
from geo_tui.link.link import CommandResult
from geo_tui.link.remote import RemoteLink
from tests.e2e import test_verify
from tests.e2e.test_api import TOKEN
from tests.e2e.test_sync import sync_json
from tests.e2e.test_verify import cli, tracked, verify_json
from tests.support.distribution import Distribution, free_port
from tests.support.geo import image_with_layers
from tests.support.inprocess import EngineInThread
from tests.support.keys import TestKeyPair
from tests.support.oci import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    ManifestNode,
    buildkit_cache_index,
    buildkit_cache_manifest,
    canonical_json,
    docker_image,
    layer_blob,
    multi_arch,
    oci_image,
    schema1_image,
)
from tests.support.push import RawPusher
from tests.support.served import ServedEngine, wait_until, write_served_config

MiB = 1024 * 1024


def blob_file(registry: Distribution, digest: str) -> Path:
    """Where a registry's filesystem storage keeps a blob's bytes: Distribution's layout, or the lab's."""
    algorithm, _, hex_digest = digest.partition(":")
    for path in (
        registry.root_dir / "docker/registry/v2/blobs" / algorithm / hex_digest[:2] / hex_digest / "data",
        registry.root_dir / "blobs" / algorithm / hex_digest,
    ):
        if path.exists():
            return path
    raise AssertionError(f"{registry.name} holds no file for {digest} under {registry.root_dir}")


config_for = test_verify.config_for  # the same fixture: a geo-tui config over the given registries


def test_deep_finds_a_lost_blob_content_a_corrupt_one_and_resync_puts_the_lost_one_back(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # shop/api: a two-platform index (the lost layer sits in its arm64 child); shop/web: one image
    amd64, arm64 = oci_image("api-amd64"), oci_image("api-arm64", architecture="arm64")
    primary_pusher.push_tree("shop/api", oci_index([amd64, arm64]), "v1")
    web = oci_image("web")
    primary_pusher.push_tree("shop/web", web, "v1")
    primary_pusher.push_tree("tools/cli", oci_image("cli"), "v1")
    config = config_for(primary, secondary)
    assert sync_json(capsys, config)[0] == 0

    lost, corrupt = arm64.blobs[-1], web.blobs[-1]
    lost_path, corrupt_path = blob_file(secondary, lost.digest), blob_file(secondary, corrupt.digest)
    lost_path.unlink()
    size = corrupt_path.stat().st_size
    corrupt_path.write_bytes(os.urandom(size))

    # shallow: every tag still matches, and it says it looked no further
    code, out, _ = cli(capsys, config, "verify")
    assert code == 0, out
    assert out.splitlines()[0].startswith("depth: checksum (shallow"), out
    code, results = verify_json(capsys, config)
    assert code == 0 and {r["depth"] for r in results} == {"checksum"}
    assert all(r["blobs"] is None and r["missing"] == [] for r in results)

    # deep: the lost blob fails its repository, by digest; the corrupt one still has its size
    code, out, _ = cli(capsys, config, "verify", "--deep")
    assert code == 1, out
    api = re.search(r"^FAIL +secondary +shop/api: (.*)$", out, re.M)
    assert api and f"missing blob {lost.digest}" in api[1], out
    assert re.search(r"^ok +secondary +shop/web: 1 tags match; 3 blobs present", out, re.M), out
    assert out.strip().splitlines()[-1] == "2 verified, 1 failed"
    row = tracked(config)[("secondary", "shop/api")]
    assert row.verification_state is VerificationState.FAILED and row.verification_depth == "deep"
    assert row.state is SyncState.PENDING and row.recheck_blobs, "the missing blob queued no resync"
    assert lost.digest in (row.verification_failure or "")
    # status shows each repository's verification depth and age
    code, out, _ = cli(capsys, config, "status", "shop/api", "tools/cli")
    assert code == 0
    assert re.search(
        r"^  secondary  shop/api: pending, verification failed \(deep, (just now|\d+ s ago)", out, re.M
    )
    site = json.loads(cli(capsys, config, "status", "--json")[1])["sites"]["secondary"]
    assert site["verification_depths"]["deep"] == 3 and site["verification_depths"]["never"] == 0

    code, results = verify_json(capsys, config, "--deep", "shop/api")
    assert code == 1
    (result,) = results
    assert (result["depth"], result["missing"], result["corrupt"]) == ("deep", [lost.digest], [])
    # index + 2 images; 2 configs and 4 layers, one of them gone
    assert (result["blobs"]["manifests"], result["blobs"]["checked"]) == (3, 6)

    # content: the corrupt blob is named, with the repositories that use it and what to do
    code, out, _ = cli(capsys, config, "verify", "--content", "shop/web", "tools/cli")
    assert code == 1, out
    assert out.splitlines()[0].startswith("depth: content"), out
    web_line = re.search(r"^FAIL +secondary +shop/web: (.*)$", out, re.M)
    assert web_line and f"corrupt on the secondary: {corrupt.digest}" in web_line[1], out
    assert re.search(r"^ok +secondary +tools/cli: 1 tags match; 3 blobs present .*, 3 hashed", out, re.M), out
    advice = out[out.index("CORRUPT on secondary") :]
    assert f"blob {corrupt.digest}" in advice and "used by shop/web" in advice
    assert "geo-tui resync --blobs --now --site secondary shop/web" in advice
    web_row = tracked(config)[("secondary", "shop/web")]
    assert web_row.verification_state is VerificationState.FAILED
    assert web_row.verification_depth == "content"
    assert web_row.state is SyncState.SYNCED  # a resync cannot mend it: the registry believes it has it

    # the resync the deep failure queued puts the lost blob back, though every tag already matched
    code, out, err = cli(capsys, config, "resync", "shop/api", "--now", "--json")
    assert code == 0, err
    summary = json.loads(out)["sites"]["secondary"]
    assert (summary["synced"], summary["tags_pushed"], summary["blobs_copied"]) == (1, 0, 1)
    assert blob_file(secondary, lost.digest).read_bytes() == lost.data
    code, results = verify_json(capsys, config, "--deep", "shop/api")
    assert code == 0 and results[0]["ok"] and results[0]["missing"] == [], results
    row = tracked(config)[("secondary", "shop/api")]
    assert row.verification_state is VerificationState.SUCCEEDED and not row.recheck_blobs

    # the advice works: the operator deletes the corrupt blob from storage and runs the line it printed
    blob_file(secondary, corrupt.digest).unlink()
    code, out, err = cli(capsys, config, "resync", "--blobs", "--now", "--site", "secondary", "shop/web")
    assert code == 0, err
    assert blob_file(secondary, corrupt.digest).read_bytes() == corrupt.data
    code, results = verify_json(capsys, config, "--content", "shop/web")
    assert code == 0 and results[0]["corrupt"] == [], results

    # and an ordinary sync stays the fast no-op: it does not look below matching tags
    code, summary_all = sync_json(capsys, config)
    site = summary_all["sites"]["secondary"]
    assert code == 0 and site["blobs_present"] == 0 and site["blobs_copied"] == 0, site


def test_content_sample_hashes_a_reproducible_share(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    layers = [layer_blob(f"sample-{i}", 512) for i in range(24)]
    primary_pusher.push_tree("big/app", image_with_layers(layers, seed="sample"), "v1")
    config = config_for(primary, secondary)
    assert sync_json(capsys, config)[0] == 0

    hashed = []
    for _ in range(2):
        code, results = verify_json(capsys, config, "--content", "--sample", "0.25")
        assert code == 0, results
        hashed.append(results[0]["blobs"]["hashed"])
    assert hashed[0] == hashed[1] and 0 < hashed[0] < 25, hashed  # 24 layers and a config
    code, _, err = cli(capsys, config, "verify", "--deep", "--sample", "0.5")
    assert code == 2 and "--sample goes with --content" in err


def test_content_memory_stays_flat_on_a_256_mib_layer(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    config_for: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """The engine issue's target: under 100 MiB peak RSS whatever the blob size. The image is pushed to both
    registries directly (no copy needed), then `geo-tui verify --content` runs in a process of its own."""
    layer = Blob(os.urandom(256 * MiB), "application/vnd.oci.image.layer.v1.tar")
    image = image_with_layers([layer], seed="large")
    for pusher in (primary_pusher, secondary_pusher):
        pusher.push_tree("big/layer", image, "v1")
    del layer
    config = config_for(primary, secondary)
    launcher = (
        "import os, sys\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.execv(sys.argv[1], sys.argv[1:])\n"
        "_, status, usage = os.wait4(pid, 0)\n"
        "print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))\n"
    )
    command = [sys.executable, "-m", "geo_tui", "--config", str(config), "verify", "--content", "--json"]
    done = subprocess.run(
        [sys.executable, "-S", "-c", launcher, *command],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    *body, last = done.stdout.strip().splitlines()
    max_rss_kib, code = (int(x) for x in last.split())
    results = json.loads("\n".join(body))
    assert code == 0, done.stderr
    assert results[0]["blobs"]["hashed_bytes"] >= 256 * MiB
    print(f"verify --content of a 256 MiB layer: peak RSS {max_rss_kib / 1024:.1f} MiB")
    assert max_rss_kib / 1024 < 100, f"peak RSS {max_rss_kib / 1024:.0f} MiB hashing a 256 MiB layer"


class ShiftedClock:
    """Wall time plus a shift a test moves forward: a week passes in a line."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


def test_serve_deep_verifies_on_its_schedule_and_repairs_a_lost_blob(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = oci_image("scheduled")
    primary_pusher.push_tree("shop/api", image, "v1")
    config_path = config_for(primary, secondary)
    with config_path.open("a") as handle:
        handle.write("\n[verification]\ndeep_interval = 3600\n")
    assert sync_json(capsys, config_path)[0] == 0
    lost = image.blobs[-1]
    blob_file(secondary, lost.digest).unlink()

    clock = ShiftedClock()
    config = load_config(config_path)
    link = EngineInThread(config, lambda c: Engine(c, clock=clock))
    rows: dict[tuple[str, str], Any] = {}
    logs: list[str] = []

    def wait_for(what: str, predicate: Callable[[Any], bool], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = link.drain()
            rows.update((row.key, row) for row in [*(batch.all_rows or []), *batch.rows])
            logs.extend(f"{record.level} {record.message}" for record in batch.logs)
            row = rows.get(("secondary", "shop/api"))
            if row is not None and predicate(row):
                return row
            time.sleep(0.1)
        raise AssertionError(
            f"{what}: not within {timeout} s; last row {rows.get(('secondary', 'shop/api'))}"
        )

    link.start()
    try:
        wait_for("shallow verification", lambda r: r.verification_state is VerificationState.SUCCEEDED)
        time.sleep(1.0)  # its slot in the hour is planned now, from the hash of its name
        assert rows[("secondary", "shop/api")].deep_verified_at is None
        clock.shift += 3600  # an hour on: its slot has come
        failed = wait_for("the scheduled deep check", lambda r: r.deep_verified_at is not None)
        assert failed.verification_depth == "deep"
        # It failed naming the blob. The row may already show the resync it queued (rows are coalesced
        # between drains, and the lab repairs within one), so the log says how the check ended.
        wait_for("the deep check's log line", lambda _row: any("(deep)" in line for line in logs))
        assert [line for line in logs if "(deep)" in line] == [
            f"error verification failed (deep): missing blob {lost.digest}"
        ], logs
        # the resync it queued looks below the matching tag and puts the blob back
        wait_for("the blob resync", lambda r: r.state is SyncState.SYNCED and not r.recheck_blobs)
        assert blob_file(secondary, lost.digest).read_bytes() == lost.data
        clock.shift += 3600  # a failed deep check looks again within the hour
        passed = wait_for(
            "the next deep check",
            lambda r: r.verification_depth == "deep" and r.verification_state is VerificationState.SUCCEEDED,
        )
        assert passed.deep_verified_at is not None and passed.deep_verified_at > failed.deep_verified_at
    finally:
        link.stop(timeout=10)


def test_deep_walks_the_referrers_a_fallback_tag_lists(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A signature's blob lost on the secondary fails deep verification: the `sha256-<hex>` fallback tag is
    a tag, and the walk follows the index it points at down to each referrer's blobs."""
    subject = oci_image("signed")
    signature = oci_artifact(subject, artifact_type="application/vnd.dev.cosign.simplesigning.v1+json")
    fallback_tag, fallback = referrers_fallback(subject, [signature])
    primary_pusher.push_tree("shop/signed", subject, "v1")
    primary_pusher.push_tree("shop/signed", fallback, fallback_tag)
    config = config_for(primary, secondary)
    assert sync_json(capsys, config)[0] == 0
    code, results = verify_json(capsys, config, "--deep")
    assert code == 0 and results[0]["blobs"]["manifests"] == 3, results  # image, fallback index, signature

    payload = signature.blobs[-1]
    blob_file(secondary, payload.digest).unlink()
    code, results = verify_json(capsys, config, "--deep")
    assert code == 1 and results[0]["missing"] == [payload.digest], results


def test_the_engine_api_verify_command_takes_a_depth_and_counts_blobs_in_metrics(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> None:
    port = free_port()
    primary, eu = registry_factory("primary"), registry_factory("eu")
    image = oci_image("api-depth")
    with RawPusher.for_registry(primary) as pusher:
        pusher.push_tree("shop/api", image, "v1")
    config = write_served_config(tmp_path / "geo", primary, [eu], key_pair, port=port, api={"token": TOKEN})
    engine = ServedEngine(config, tmp_path / "serve.log", api_url=f"http://127.0.0.1:{port}")
    engine.start(TOKEN)
    try:
        with engine.client(TOKEN) as client:

            def synced() -> bool:
                page = client.get("/api/v1/rows").json()["rows"]
                return [str(r.state) for r in decode_rows(page)] == ["synced"]

            wait_until(synced, what="the backfill")
            blob_file(eu, image.blobs[-1].digest).unlink()
            keys = {"keys": [["eu", "shop/api"]]}
            plain = client.post("/api/v1/commands/verify", json=keys, timeout=60).json()
            assert (plain["ok"], plain["depth"]) == (True, "checksum"), plain  # absent: checksum, as before
            deep = client.post("/api/v1/commands/verify", json={**keys, "depth": "deep"}, timeout=60).json()
            assert (deep["ok"], deep["depth"]) == (False, "deep"), deep
            assert f"blob {image.blobs[-1].digest}" in deep["message"]
            bad = client.post("/api/v1/commands/verify", json={**keys, "depth": "deepest"})
            assert bad.status_code == 400 and "depth: one of checksum, deep, content" in bad.json()["error"]
            metrics = client.get("/metrics").text
        assert 'geo_tui_verified_blobs_total{outcome="missing",site="eu"} 1.0' in metrics, metrics
        assert 'geo_tui_verified_blobs_total{outcome="present",site="eu"} 2.0' in metrics

        # a console asks through its link; an answer that names no depth (an engine from before depths,
        # which verifies checksums only) is no deep verification, and the console says so
        link = RemoteLink(engine.target, token=Secret(TOKEN))
        link.start()
        try:
            assert link.wait_connected(15)
            deep = Verify(keys=(("eu", "shop/api"),), depth=VerificationDepth.DEEP)
            link.command(lambda engine: engine.verify(deep))
            # (serve has run the resync the deep failure queued by now: the blob is back)
            assert wait_for_result(link).message.startswith("verified 1 (deep): ")
            assert link._client is not None
            real = link._client._request

            async def older_engine(*args: Any, **kwargs: Any) -> dict[str, Any]:
                answer = await real(*args, **kwargs)
                answer.pop("depth", None)
                return answer

            link._client._request = older_engine  # type: ignore[method-assign]
            link.command(lambda engine: engine.verify(deep))
            result = wait_for_result(link)
            assert not result.ok and "did not run a deep verification" in result.message
        finally:
            link.stop()
    finally:
        engine.stop(signal.SIGKILL)


def wait_for_result(link: RemoteLink, timeout: float = 60) -> CommandResult:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        results = link.drain().results
        if results:
            return results[0]
        time.sleep(0.1)
    raise AssertionError("no command result")


def test_content_verification_passes_on_every_format(
    primary: Distribution,
    registry_factory: Callable[..., Distribution],
    primary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing a correct secondary holds reads as missing or corrupt: schema 1 (re-signed on every GET),
    Docker and OCI lists, a nested index, BuildKit cache (an index of blobs), artifacts and referrers."""
    secondary = registry_factory("secondary", schema1=True)
    subject = oci_image("subject")
    fallback_tag, fallback = referrers_fallback(subject, [oci_artifact(subject, seed="sbom")])
    pushes = [
        ("formats/docker", docker_image("d1"), "v1"),
        ("formats/dockerlist", multi_arch("dl", docker=True), "latest"),
        ("formats/schema1", schema1_image("formats/schema1", "old", seed="s1"), "old"),
        (
            "formats/nested",
            oci_index([multi_arch("n1"), oci_image("n2"), oci_index([oci_image("n3")])]),
            "v2",
        ),
        ("formats/buildkit", buildkit_cache_manifest("bk1"), "cache"),
        ("formats/buildkit", buildkit_cache_index("bk2"), "cache-index"),
        ("formats/artifacts", subject, "app"),
        ("formats/artifacts", fallback, fallback_tag),
    ]
    for repository, node, tag in pushes:
        primary_pusher.push_tree(repository, node, tag)
    config = config_for(primary, secondary)
    assert sync_json(capsys, config)[0] == 0
    code, results = verify_json(capsys, config, "--content")
    assert code == 0, [(r["repository"], r["detail"]) for r in results if not r["ok"]]
    assert len(results) == 6 and all(r["blobs"]["errors"] == [] for r in results)
    assert all(r["blobs"]["hashed"] == r["blobs"]["checked"] > 0 for r in results), results


def test_a_foreign_layer_is_counted_not_checked(
    registry_factory: Callable[..., Distribution],
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A layer with `urls` is fetched from its URLs, not the registry: neither side holds it. (Distribution
    2.8 takes such a manifest only where validation.manifests.urls.allow lets its URLs through.)"""
    allow = {"validation": {"manifests": {"urls": {"allow": ["^https://"]}}}}
    primary = registry_factory("primary", extra_config=allow)
    secondary = registry_factory("secondary", extra_config=allow)
    config_blob = Blob(
        canonical_json({"architecture": "amd64", "os": "windows", "rootfs": {}}), DOCKER_CONFIG
    )
    layer = layer_blob("windows-app", 2048, DOCKER_LAYER_GZIP)
    foreign = {
        "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "size": 1024,
        "digest": "sha256:" + "ab" * 32,
        "urls": ["https://mcr.example.invalid/windows/base"],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [foreign, layer.descriptor()],
    }
    node = ManifestNode(json.dumps(manifest).encode(), DOCKER_MANIFEST, blobs=[config_blob, layer])
    with RawPusher.for_registry(primary) as pusher:
        pusher.push_tree("windows/app", node, "v1")
    config = config_for(primary, secondary)
    assert sync_json(capsys, config)[0] == 0
    code, results = verify_json(capsys, config, "--content")
    assert code == 0, results
    blobs = results[0]["blobs"]
    assert (blobs["checked"], blobs["hashed"], blobs["foreign"]) == (2, 2, 1), blobs
    assert "1 foreign not checked" in results[0]["detail"]
