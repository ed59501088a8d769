"""Clear failures (issue 12): a failed upload's session is cancelled on the secondary, a full secondary says
so, a digest mismatch from the primary is blamed on the primary, and no failure names a site twice. On real
Distribution 2.8 and the lab registry, with faults injected between geo-tui and the registries."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from geo_tui.engine.replicate import SMALL_BLOB_BYTES
from tests.e2e.test_faults import (
    SECONDARY,
    assert_blob_intact,
    assert_no_broken_tags,
    assert_same_tags,
    failed_reason,
    geo_config,
    make_engine,
    push_all,
)
from tests.support.distribution import Distribution
from tests.support.faults import FaultTransport
from tests.support.geo import image_with_layers, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import layer_blob, oci_image
from tests.support.push import RawPusher

pytestmark = pytest.mark.timeout(90)

# What Distribution 2.8 answers to an upload when its file system is full (checked on a full tmpfs).
DISK_FULL = (
    "write /var/lib/registry/docker/registry/v2/repositories/full/app/_uploads/9d1c/data: "
    "no space left on device"
)


def open_upload_sessions(registry: Distribution) -> list[Path]:
    """The upload sessions the registry still holds data for: Distribution's `_uploads/<id>/data`, the
    lab's `uploads/<id>/data`. (A cancelled session on Distribution 2.8 leaves only an empty
    `hashstates/sha256/0` behind; its data and `startedat` are gone, and the registry no longer knows it.)"""
    root = registry.root_dir
    return [*root.glob("docker/registry/v2/repositories/**/_uploads/*/data"), *root.glob("uploads/*/data")]


async def test_a_blob_cut_mid_copy_leaves_no_upload_session_on_the_secondary(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    big = layer_blob("cut-session", 1024 * 1024)
    push_all(primary_pusher, {"cut/app": {"v1": image_with_layers([big], seed="cut-session")}})
    faults = FaultTransport()
    rule = faults.cut("GET", rf"^/v2/cut/app/blobs/{big.digest}$", after_bytes=256 * 1024)
    mark = secondary.mark()
    async with make_engine(geo_config(tmp_path, primary, secondary, key_pair), primary=faults) as engine:
        summary = await engine.sync_once()
        reason = failed_reason(summary, "cut/app")
        assert "primary" in reason and "ReadError after the body started" in reason, reason
        secondary.settled_mark()  # both registries log a request after its reply
        # every broken copy's session was cancelled, and the registry confirmed it
        deletes = secondary.requests("DELETE", "/cut/app/blobs/uploads/", since_mark=mark)
        assert rule.fired >= 2 and len(deletes) == rule.fired, (rule.fired, deletes)
        assert {d.status for d in deletes} == {204}, deletes
        assert open_upload_sessions(secondary) == [], "an upload session was left behind"
        assert not secondary_pusher.blob_exists("cut/app", big.digest), "a truncated blob was committed"
        assert_no_broken_tags(secondary_pusher)

        faults.clear()
        summary = await engine.sync_once()
    assert summary.ok, summary.sites[SECONDARY].failures
    assert_blob_intact(secondary_pusher, "cut/app", big.digest)
    assert_same_tags(primary_pusher, secondary_pusher, ["cut/app"])
    assert open_upload_sessions(secondary) == []


async def test_a_full_secondary_says_what_it_said_and_that_its_storage_may_be_full(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    push_all(primary_pusher, {"full/app": {"v1": oci_image("full")}})
    faults = FaultTransport()
    faults.fail("PATCH|PUT", r"^/v2/full/app/blobs/uploads/.", 500, detail=DISK_FULL)
    async with make_engine(
        geo_config(tmp_path, primary, secondary, key_pair), **{SECONDARY: faults}
    ) as engine:
        summary = await engine.sync_once()
    reason = failed_reason(summary, "full/app")
    assert f"{SECONDARY}: upload blob full/app@sha256:" in reason, reason
    assert "500 UNKNOWN: unknown error: write /var/lib/registry/" in reason, reason
    assert "no space left on device" in reason, reason
    assert f"{SECONDARY} could not store it: its storage may be full or unwritable" in reason, reason
    assert_no_broken_tags(secondary_pusher)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (root only: mounting needs CAP_SYS_ADMIN), unmounted afterwards."""
    mount_point = tmp_path / "full-disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the proxy test above covers the message")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.distribution_only("the storage of real Distribution on a real full file system")
async def test_a_really_full_secondary_says_so(
    primary: Distribution,
    registry_factory: Callable[..., Distribution],
    primary_pusher: RawPusher,
    full_disk: Path,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    secondary = registry_factory(
        SECONDARY, extra_config={"storage": {"filesystem": {"rootdirectory": str(full_disk)}}}
    )
    big = layer_blob("full-disk", 1024 * 1024)
    push_all(primary_pusher, {"full/app": {"v1": image_with_layers([big], seed="full-disk")}})
    # One blob at a time: the small config lands, then the layer fills the disk (no race between them).
    engine_options = {"sync_attempts": 2, "blob_concurrency": 1}
    config = write_geo_config(tmp_path / "geo", primary, [secondary], key_pair, engine=engine_options)
    async with make_engine(config) as engine:
        summary = await engine.sync_once()
    reason = failed_reason(summary, "full/app")
    assert f"{SECONDARY}: upload blob full/app@{big.digest}: 500 UNKNOWN" in reason, reason
    # Distribution says it as a string (PATCH) or as a storage driver error with errno 28 (POST)
    assert "no space left on device" in reason.lower(), reason
    assert f"{SECONDARY} could not store it: its storage may be full or unwritable" in reason, reason


@pytest.mark.parametrize("size", [64 * 1024, 2 * 1024 * 1024], ids=["small", "streamed"])
async def test_a_digest_mismatch_from_the_primary_is_blamed_on_the_primary(
    size: int,
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    layer = layer_blob("rotten", size)
    push_all(primary_pusher, {"bad/app": {"v1": image_with_layers([layer], seed="rotten")}})
    faults = FaultTransport()
    rule = faults.corrupt("GET", rf"^/v2/bad/app/blobs/{layer.digest}$")
    async with make_engine(geo_config(tmp_path, primary, secondary, key_pair), primary=faults) as engine:
        summary = await engine.sync_once()
        reason = failed_reason(summary, "bad/app")
        assert rule.fired >= 1
        if size <= SMALL_BLOB_BYTES:  # read whole and hashed by geo-tui before any upload session opens
            assert f"primary: GET blob bad/app@{layer.digest}: content hashes to sha256:" in reason, reason
        else:  # streamed through: the secondary's check refuses it
            assert (
                f"primary: GET blob bad/app@{layer.digest}: the content it served does not hash" in reason
            ), reason
            assert f"{SECONDARY} refused it: 400 DIGEST_INVALID" in reason, reason
        assert f"{SECONDARY}: upload blob" not in reason, reason
        assert not secondary_pusher.blob_exists("bad/app", layer.digest)
        assert open_upload_sessions(secondary) == []

        faults.clear()
        summary = await engine.sync_once()
    assert summary.ok, summary.sites[SECONDARY].failures
    assert_same_tags(primary_pusher, secondary_pusher, ["bad/app"])


async def test_a_failure_reading_the_primary_names_it_once(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    push_all(primary_pusher, {"once/app": {"v1": oci_image("once")}})
    faults = FaultTransport()
    faults.fail("GET", r"^/v2/once/app/tags/list$", 500)
    async with make_engine(geo_config(tmp_path, primary, secondary, key_pair), primary=faults) as engine:
        summary = await engine.sync_once()
        reason = failed_reason(summary, "once/app")
        assert reason.startswith("primary: GET tags once/app: 500 UNKNOWN"), reason
        [result] = await engine.verify(repositories=["once/app"])
        row = engine.tracking.row(SECONDARY, "once/app")
    assert not result.ok and result.detail.startswith("primary: GET tags once/app: 500"), result.detail
    assert row is not None and row.last_sync_failure == reason
    for text in (reason, result.detail):
        assert "primary: primary:" not in text, text
