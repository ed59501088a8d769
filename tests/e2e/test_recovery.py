"""Crash recovery against real CNCF Distribution: a `sync --once` killed with SIGKILL in the middle of a
backfill leaves the secondary correct (no tag without its content), and the next run finishes the job
without copying any completed blob again. Also the in-process form: an asyncio cancel of `sync_once`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from geo_tui.config import load_config
from geo_tui.engine import Engine, SyncState, Tracking
from geo_tui.engine.tracking import tracking_database
from geo_tui.engine.tracking.postgres import PostgresDatabase
from tests.e2e.test_sync import assert_same_content
from tests.support.distribution import Distribution
from tests.support.geo import image_with_layers, tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import ManifestNode, layer_blob
from tests.support.postgres import BACKENDS, database_option
from tests.support.push import RawPusher

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
REPOSITORIES = 8
RUN_TIMEOUT = 180.0


@pytest.fixture(params=BACKENDS)
def tracking_backend(request: pytest.FixtureRequest) -> str:
    """The crash and cancel tests run with the tracking database on SQLite and on a real PostgreSQL."""
    return str(request.param)


def backfill_images(prefix: str, repositories: int = REPOSITORIES) -> dict[str, ManifestNode]:
    """`repositories` images of 2-3 random (incompressible) layers of 2-6 MiB each, none shared."""
    images = {}
    for i in range(repositories):
        layers = [
            layer_blob(f"{prefix}/{i}/{j}", (3 + (i + 2 * j) % 4) * MiB) for j in range(3 if i % 3 else 2)
        ]
        images[f"backfill/app{i}"] = image_with_layers(layers, seed=f"{prefix}-{i}")
    return images


def load_primary(pusher: RawPusher, images: dict[str, ManifestNode]) -> None:
    for repository, image in images.items():
        pusher.push_tree(repository, image, "v1")
        pusher.push_manifest(repository, "latest", image.manifest, image.media_type)


def completed_uploads(
    registry: Distribution, since_mark: int = 0, until_mark: int | None = None
) -> list[str]:
    """Digests of the blob uploads the registry completed (`PUT .../blobs/uploads/...?digest=` -> 201)."""
    lines = registry.access_log_lines()[since_mark:until_mark]
    digests = []
    for line in lines:
        if line.method == "PUT" and line.status == 201 and "/blobs/uploads/" in line.uri:
            digests.extend(parse_qs(urlsplit(line.uri).query).get("digest", []))
    return digests


def geo_command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "geo_tui", "--config", str(config), *args]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def assert_every_tag_complete(pusher: RawPusher, repositories: list[str]) -> dict[str, int]:
    """Every tag the registry holds has its manifest and every blob it names. Returns tags per repository."""
    found: dict[str, int] = {}
    for repository in repositories:
        response = pusher.request("GET", f"/v2/{repository}/tags/list", repository=repository)
        if response.status_code == 404:  # not created yet, or only blobs so far
            found[repository] = 0
            continue
        assert response.status_code == 200, f"{repository}: tags/list -> {response.status_code}"
        tags = response.json().get("tags") or []
        found[repository] = len(tags)
        for tag in tags:
            manifest = pusher.get_manifest(repository, tag)
            assert manifest.status_code == 200, f"{repository}:{tag} is tagged but its manifest is missing"
            body = manifest.json()
            for blob in [body["config"], *body["layers"]]:
                head = pusher.request(
                    "HEAD", f"/v2/{repository}/blobs/{blob['digest']}", repository=repository
                )
                assert head.status_code == 200, (
                    f"{repository}:{tag} is tagged but blob {blob['digest']} is missing ({head.status_code})"
                )
    return found


def test_sigkill_mid_backfill_then_restart_finishes_without_recopying(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    tracking_target: Path | PostgresDatabase,
) -> None:
    images = backfill_images("kill")
    all_blobs = {d for image in images.values() for d in image.all_blobs()}
    total_bytes = sum(b.size for image in images.values() for b in image.all_blobs().values())
    assert 80 * MiB <= total_bytes <= 120 * MiB, total_bytes / MiB
    kill_after = len(all_blobs) // 2  # completed uploads seen on the secondary before the SIGKILL
    load_primary(primary_pusher, images)
    config = write_geo_config(
        tmp_path / "geo",
        primary,
        [secondary],
        key_pair,
        engine={"repository_concurrency": 2, "blob_concurrency": 2, **database_option(tracking_target)},
    )

    # first run: killed with SIGKILL once a few blob uploads have completed
    mark = secondary.mark()
    out, err = tmp_path / "first.out", tmp_path / "first.err"
    started = time.monotonic()
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            geo_command(config, "sync", "--once", "--json"),
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=subprocess_env(),
            cwd=ROOT,
        )
    try:
        while process.poll() is None and len(completed_uploads(secondary, mark)) < kill_after:
            assert time.monotonic() - started < RUN_TIMEOUT, "the first run copied nothing in time"
            time.sleep(0.005)
        finished_on_its_own = process.poll() is not None
        if not finished_on_its_own:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    killed_at = time.monotonic() - started
    assert not finished_on_its_own, (
        f"the first run finished (exit {process.returncode}) in {killed_at:.2f} s before it could be "
        f"killed mid-way: make the content bigger. stderr:\n{err.read_text()}"
    )
    assert process.returncode == -signal.SIGKILL
    # a PUT whose body was fully sent may still complete after the kill: let the log settle
    time.sleep(0.5)
    kill_mark = secondary.mark()
    before = completed_uploads(secondary, mark, kill_mark)
    assert kill_after <= len(set(before)) < len(all_blobs), (
        f"not killed mid-way: {len(before)} of {len(all_blobs)} blobs were uploaded before the kill; "
        "make the content bigger"
    )
    assert set(before) <= all_blobs

    # no wrong tag at any time: whatever tag is there has its manifest and all its blobs
    tags_after_kill = assert_every_tag_complete(secondary_pusher, sorted(images))
    assert 0 < sum(tags_after_kill.values()) < 2 * REPOSITORIES, f"tags on the secondary: {tags_after_kill}"
    tracking = Tracking(tracking_database(load_config(config).engine))
    try:
        states = {r.repository: r.state for r in tracking.rows()}
    finally:
        tracking.close()
    started_rows = sorted(r for r, s in states.items() if s is SyncState.STARTED)
    print(
        f"killed after {killed_at:.2f} s: {len(before)}/{len(all_blobs)} blobs "
        f"({sum(tags_after_kill.values())} tags) on the secondary; rows left started: {started_rows}"
    )

    # second run: same command, finishes the job
    restart = time.monotonic()
    second = subprocess.run(
        geo_command(config, "sync", "--once", "--json"),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env=subprocess_env(),
        cwd=ROOT,
    )
    assert second.returncode == 0, f"stdout:\n{second.stdout}\nstderr:\n{second.stderr}"
    assert "Traceback" not in second.stderr
    summary = json.loads(second.stdout)["sites"]["secondary"]
    assert summary["synced"] == REPOSITORIES and summary["failed"] == 0
    if started_rows:
        assert f"picked up {len(started_rows)} repositories left in progress" in second.stderr
    for repository, image in images.items():
        held = assert_same_content(primary_pusher, secondary_pusher, repository)
        assert held == {"latest": image.digest, "v1": image.digest}

    # no completed blob was copied again; every other blob was copied exactly once
    after = completed_uploads(secondary, kill_mark)
    assert set(before).isdisjoint(after), f"re-uploaded after the restart: {set(before) & set(after)}"
    assert set(after) == all_blobs - set(before), "the restart left blobs uncopied"
    tracking = Tracking(tracking_database(load_config(config).engine))
    try:
        assert {r.state for r in tracking.rows()} == {SyncState.SYNCED}
    finally:
        tracking.close()
    print(f"restart finished in {time.monotonic() - restart:.2f} s, {len(after)} blob uploads")
    # and no blob was streamed twice, within a run either (two tags share each manifest here)
    twice = {d: n for d, n in (Counter(before) + Counter(after)).items() if n > 1}
    assert not twice, (
        f"{len(twice)} blobs were uploaded more than once into the same repository: "
        f"{sorted(twice.items())[:3]}"
    )
    assert summary["blobs_copied"] == len(after)


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def test_cancelled_sync_once_leaves_rows_pending_and_a_new_engine_completes(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    tracking_target: Path | PostgresDatabase,
) -> None:
    images = backfill_images("cancel", repositories=3)
    load_primary(primary_pusher, images)
    config = load_config(
        write_geo_config(
            tmp_path / "geo",
            primary,
            [secondary],
            key_pair,
            engine={"repository_concurrency": 1, "blob_concurrency": 1, **database_option(tracking_target)},
        )
    )
    mark = secondary.mark()
    engine = Engine(config)
    await engine.open()
    try:
        task = asyncio.ensure_future(engine.sync_once())
        await wait_until(
            lambda: task.done() or len(completed_uploads(secondary, mark)) >= 2, "a blob to be copied"
        )
        assert not task.done(), "sync_once finished before it could be cancelled: make the content bigger"
        assert any(r.state is SyncState.STARTED for r in engine.rows()), "nothing in progress to cancel"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        rows = engine.rows()
        assert not [r.repository for r in rows if r.state is SyncState.STARTED], (
            f"rows left started after the cancel: {[(r.repository, str(r.state)) for r in rows]}"
        )
        assert any(r.state is SyncState.PENDING for r in rows)
        # the cancel stopped the copies: nothing new is started on the secondary afterwards
        await asyncio.sleep(0.3)
        settled = secondary.mark()
        await asyncio.sleep(1.0)
        late = [r for r in secondary.requests(since_mark=settled) if r.method in ("POST", "PUT", "PATCH")]
        assert late == [], f"the cancelled sync_once kept writing to the secondary: {late[:5]}"
    finally:
        await engine.close()

    async with Engine(config) as again:
        summary = await again.sync_once()
        assert summary.ok, summary.sites["secondary"].failures
        assert {r.state for r in again.rows()} == {SyncState.SYNCED}
    for repository, image in images.items():
        assert tag_digests(secondary_pusher, repository) == {"latest": image.digest, "v1": image.digest}
        assert_same_content(primary_pusher, secondary_pusher, repository)
