"""Faults between geo-tui and real CNCF Distribution 2.8: every run ends in a clear state, never a crash.

Faults are injected by `tests.support.faults.FaultTransport` in front of a real registry (500s, 429s, an
expired token's 401, a reset in the middle of a blob), or made by Distribution itself (read-only mode,
deletes disabled, a stopped primary). Each case: a run that fails clearly (the reason names the registry,
the repository and the status), nothing half-written on the secondary meanwhile (every tag there has its
manifests and blobs), then a run without the fault that leaves the secondary equal to the primary.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from geo_tui.cli import main
from geo_tui.config import load_config
from geo_tui.engine import Engine, SyncState
from geo_tui.engine.engine import SyncSummary
from geo_tui.registry import Scope
from geo_tui.registry._auth import TokenSigner
from tests.support.distribution import Distribution
from tests.support.faults import FaultTransport, expired_token_challenge
from tests.support.geo import image_with_layers, tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import ALL_MANIFEST_TYPES, ManifestNode, layer_blob, oci_image
from tests.support.push import RawPusher

pytestmark = pytest.mark.timeout(60)

SECONDARY = "secondary"
MANIFEST_TYPES = set(ALL_MANIFEST_TYPES)


# -- helpers -------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_unretrieved_task_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The engine must not leave failing tasks behind (asyncio logs them when they are collected)."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    yield
    gc.collect()
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    leaked = [r.getMessage() for r in records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert leaked == [], f"asyncio reported errors nobody handled: {leaked}"


def geo_config(tmp_path: Path, primary: Distribution, secondary: Distribution, key_pair: TestKeyPair) -> Path:
    return write_geo_config(tmp_path / "geo", primary, [secondary], key_pair, engine={"sync_attempts": 2})


def make_engine(config_path: Path, **transports: httpx.AsyncBaseTransport) -> Engine:
    return Engine(load_config(config_path), transports=transports, in_run_retry_base=0.05)


def push_all(pusher: RawPusher, content: Mapping[str, Mapping[str, ManifestNode]]) -> None:
    for repository, tags in content.items():
        for tag, node in tags.items():
            pusher.push_tree(repository, node, tag)


def assert_tree_present(pusher: RawPusher, repository: str, digest: str, where: str) -> None:
    """The manifest `digest` and everything below it are in `repository`: HEAD each manifest and blob."""
    assert pusher.head_manifest(repository, digest).status_code == 200, f"{where}: manifest {digest} missing"
    document = pusher.get_manifest(repository, digest).json()
    blobs = [document["config"]] if "config" in document else []
    blobs += document.get("layers", [])
    for entry in document.get("manifests", []):
        if entry.get("mediaType") in MANIFEST_TYPES:
            assert_tree_present(pusher, repository, entry["digest"], where)
        else:
            blobs.append(entry)
    for blob in blobs:
        assert pusher.blob_exists(repository, blob["digest"]), f"{where}: blob {blob['digest']} missing"


def listed_tags(pusher: RawPusher, repository: str) -> list[str]:
    """The tags of `repository`; none if Distribution does not know it (blobs alone do not make it known
    to tags/list: it answers 404 NAME_UNKNOWN, though the catalog lists the repository)."""
    response = pusher.request("GET", f"/v2/{repository}/tags/list", repository=repository)
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return sorted(response.json().get("tags") or [])


def assert_no_broken_tags(pusher: RawPusher) -> int:
    """No tag on the registry points at a manifest or blob it lacks. Returns how many tags were checked."""
    checked = 0
    for repository in pusher.catalog():
        for tag in listed_tags(pusher, repository):
            head = pusher.head_manifest(repository, tag)
            assert head.status_code == 200, (
                f"{repository}:{tag} is listed but HEAD answers {head.status_code}"
            )
            assert_tree_present(
                pusher, repository, head.headers["Docker-Content-Digest"], f"{repository}:{tag}"
            )
            checked += 1
    return checked


def assert_same_tags(primary: RawPusher, secondary: RawPusher, repositories: list[str]) -> None:
    for repository in repositories:
        want = tag_digests(primary, repository)
        assert want, f"{repository}: nothing on the primary"
        assert tag_digests(secondary, repository) == want, f"{repository}: secondary differs from the primary"


def failed_reason(summary: SyncSummary, repository: str) -> str:
    site = summary.sites[SECONDARY]
    assert repository in site.failures, f"{repository} did not fail: {site}"
    return site.failures[repository]


def secondary_tags(pusher: RawPusher, repository: str) -> dict[str, str]:
    return tag_digests(pusher, repository) if listed_tags(pusher, repository) else {}


# -- 1. a primary answering 500 on one repository's manifests ----------------------------------------


async def test_primary_500_on_one_repository_fails_it_alone_then_recovers(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    push_all(
        primary_pusher,
        {
            "team/broken": {"v1": oci_image("broken-1"), "v2": oci_image("broken-2")},
            "team/ok1": {"v1": oci_image("ok1")},
            "team/ok2": {"latest": oci_image("ok2")},
        },
    )
    faults = FaultTransport()
    rule = faults.fail("GET|HEAD", r"^/v2/team/broken/manifests/", 500)
    async with make_engine(geo_config(tmp_path, primary, secondary, key_pair), primary=faults) as engine:
        summary = await engine.sync_once()
        site = summary.sites[SECONDARY]
        assert (site.failed, site.synced) == (1, 2), site
        reason = failed_reason(summary, "team/broken")
        assert "primary" in reason and "team/broken" in reason and "500" in reason, reason
        row = engine.tracking.row(SECONDARY, "team/broken")
        assert row is not None and row.state is SyncState.FAILED
        assert row.retry_count == 2, "two attempts in the run (sync_attempts = 2), each counted"
        assert row.last_sync_failure is not None and "500" in row.last_sync_failure
        # 2 tags x 2 attempts, each HEAD tried 1 + 3 times by the client before giving up
        assert rule.fired == 2 * 2 * 4, faults.log
        assert all(f.method == "HEAD" and "/team/broken/" in f.path for f in faults.log)

        assert_same_tags(primary_pusher, secondary_pusher, ["team/ok1", "team/ok2"])
        assert secondary_tags(secondary_pusher, "team/broken") == {}
        assert assert_no_broken_tags(secondary_pusher) == 2

        faults.clear()
        summary = await engine.sync_once()
        assert summary.ok, summary.sites[SECONDARY].failures
        assert summary.sites[SECONDARY].synced == 3
        row = engine.tracking.row(SECONDARY, "team/broken")
        assert row is not None and row.state is SyncState.SYNCED and row.retry_count == 0
        assert row.last_sync_failure is None
    assert_same_tags(primary_pusher, secondary_pusher, ["team/broken", "team/ok1", "team/ok2"])
    assert assert_no_broken_tags(secondary_pusher) == 4


# -- 2. 429 Too Many Requests ---------------------------------------------------------------------------


async def test_429_with_retry_after_is_waited_out_within_the_run(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    push_all(primary_pusher, {"rl/app": {"v1": oci_image("rl-1")}})
    faults = FaultTransport()
    rule = faults.fail("GET", r"^/v2/rl/app/blobs/sha256:", 429, headers={"Retry-After": "1"}, times=2)
    mark = primary.mark()
    async with make_engine(geo_config(tmp_path, primary, secondary, key_pair), primary=faults) as engine:
        started = time.monotonic()
        summary = await engine.sync_once()
        elapsed = time.monotonic() - started
    assert summary.ok, summary.sites[SECONDARY].failures
    assert rule.fired == 2 and all(f.status == 429 for f in faults.log)
    assert elapsed >= 0.95, f"Retry-After: 1 was not honoured ({elapsed:.2f} s)"
    # every blob reached the primary exactly once: the two 429s were answered in its place
    primary.wait_for_requests(3, method="GET", path_contains="/rl/app/blobs/", since_mark=mark)
    assert primary.count_requests("GET", "/rl/app/blobs/", since_mark=mark, status=200) == 3
    assert_same_tags(primary_pusher, secondary_pusher, ["rl/app"])
    assert_no_broken_tags(secondary_pusher)


async def test_persistent_429_fails_clearly_then_recovers(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    push_all(primary_pusher, {"rl/busy": {"v1": oci_image("busy")}, "rl/calm": {"v1": oci_image("calm")}})
    faults = FaultTransport()
    # Retry-After: 0 keeps the test short; the waiting itself is proven above
    rule = faults.fail("GET", r"^/v2/rl/busy/blobs/", 429, headers={"Retry-After": "0"})
    async with make_engine(geo_config(tmp_path, primary, secondary, key_pair), primary=faults) as engine:
        summary = await engine.sync_once()
        assert (summary.sites[SECONDARY].failed, summary.sites[SECONDARY].synced) == (1, 1)
        reason = failed_reason(summary, "rl/busy")
        assert "primary" in reason and "rl/busy" in reason and "429" in reason, reason
        assert rule.fired >= 2 * 4, "the client retried each 429 before giving up, in both attempts"
        row = engine.tracking.row(SECONDARY, "rl/busy")
        assert row is not None and row.state is SyncState.FAILED and "429" in (row.last_sync_failure or "")
        assert secondary_tags(secondary_pusher, "rl/busy") == {}
        assert_no_broken_tags(secondary_pusher)

        faults.clear()
        summary = await engine.sync_once()
    assert summary.ok, summary.sites[SECONDARY].failures
    assert_same_tags(primary_pusher, secondary_pusher, ["rl/busy", "rl/calm"])
    assert_no_broken_tags(secondary_pusher)


# -- 3. a connection reset in the middle of a blob --------------------------------------------------------


BIG = 3 * 1024 * 1024
CUT = 512 * 1024


def big_image(seed: str) -> tuple[ManifestNode, str]:
    layer = layer_blob(f"big-{seed}", BIG)
    assert 2 * 1024 * 1024 < layer.size < 4 * 1024 * 1024
    return image_with_layers([layer, layer_blob(f"small-{seed}", 2048)], seed=seed), layer.digest


def assert_blob_intact(pusher: RawPusher, repository: str, digest: str) -> None:
    response = pusher.get_blob(repository, digest)
    assert response.status_code == 200
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest


async def test_reset_mid_blob_once_is_retried_in_the_same_run(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    image, big = big_image("once")
    push_all(primary_pusher, {"big/app": {"v1": image}})
    faults = FaultTransport()
    rule = faults.cut("GET", rf"^/v2/big/app/blobs/{big}$", CUT, times=1)
    tracemalloc.start()
    try:
        async with make_engine(geo_config(tmp_path, primary, secondary, key_pair), primary=faults) as engine:
            summary = await engine.sync_once()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Not asserted: the blob is streamed (1 MiB chunks), so the peak stays near a chunk or two, not the layer.
    print(f"\npeak Python allocations while copying a {BIG >> 20} MiB layer: {peak / 1048576:.1f} MiB")
    assert summary.ok, summary.sites[SECONDARY].failures
    assert rule.fired == 1 and rule.cut_streams[0].delivered == CUT, "the reset happened mid-blob"
    assert summary.sites[SECONDARY].stats.blobs_copied == 3
    assert_blob_intact(secondary_pusher, "big/app", big)
    assert_same_tags(primary_pusher, secondary_pusher, ["big/app"])
    assert_no_broken_tags(secondary_pusher)


async def test_reset_mid_blob_every_time_fails_clearly_then_recovers(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    image, big = big_image("always")
    push_all(primary_pusher, {"big/app": {"v1": image}})
    faults = FaultTransport()
    rule = faults.cut("GET", rf"^/v2/big/app/blobs/{big}$", CUT)
    async with make_engine(geo_config(tmp_path, primary, secondary, key_pair), primary=faults) as engine:
        summary = await engine.sync_once()
        reason = failed_reason(summary, "big/app")
        assert "primary" in reason and "big/app" in reason and big in reason, reason
        assert "ReadError after the body started" in reason, reason
        # 3 copy attempts per run attempt (BlobCopier), 2 run attempts
        assert rule.fired == 2 * 3 and all(s.delivered == CUT for s in rule.cut_streams)
        assert not secondary_pusher.blob_exists("big/app", big), "a truncated blob was committed"
        assert secondary_tags(secondary_pusher, "big/app") == {}
        assert_no_broken_tags(secondary_pusher)

        faults.clear()
        summary = await engine.sync_once()
    assert summary.ok, summary.sites[SECONDARY].failures
    assert_blob_intact(secondary_pusher, "big/app", big)
    assert_same_tags(primary_pusher, secondary_pusher, ["big/app"])
    assert_no_broken_tags(secondary_pusher)


async def test_a_failed_blob_stops_the_repository_run_with_nothing_left_running(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    """When one blob of a manifest fails, the run must not report the repository failed while its other
    blob copies go on writing to the secondary behind the summary's back (and behind engine.close())."""
    lost, slow = layer_blob("lost", 1024), layer_blob("slow", 1024)
    push_all(primary_pusher, {"gone/app": {"v1": image_with_layers([lost, slow], seed="gone")}})
    faults = FaultTransport()
    missing = faults.fail("GET", rf"^/v2/gone/app/blobs/{lost.digest}$", 404)
    faults.delay("GET", rf"^/v2/gone/app/blobs/{slow.digest}$", 1.5)
    async with make_engine(geo_config(tmp_path, primary, secondary, key_pair), primary=faults) as engine:
        summary = await engine.sync_once()
        reason = failed_reason(summary, "gone/app")
        assert "primary" in reason and "gone/app" in reason and "404" in reason, reason
        assert missing.fired == 2
        mark = secondary.settled_mark()  # the run's last replies may still be logging
        await asyncio.sleep(2.0)  # the slow blob's copies, were they still running, land in this window
        late = [f"{r.method} {r.path} {r.status}" for r in secondary.requests(since_mark=mark)]
        assert late == [], f"the run ended, yet its copies went on writing to the secondary: {late}"
        assert_no_broken_tags(secondary_pusher)

        faults.clear()
        summary = await engine.sync_once()
    assert summary.ok, summary.sites[SECONDARY].failures
    assert_same_tags(primary_pusher, secondary_pusher, ["gone/app"])
    assert_no_broken_tags(secondary_pusher)


# -- 4. a token that expires in the middle of a copy ------------------------------------------------------


def count_primary_mints(monkeypatch: pytest.MonkeyPatch, repository: str) -> Callable[[], int]:
    """Spy on TokenSigner.mint: how many tokens were minted with the primary's scope (pull only) on
    `repository` (the secondary's tokens, same signer, carry pull,push,delete)."""
    minted: list[tuple[Scope, ...]] = []
    original = TokenSigner.mint

    def spy(self: TokenSigner, scopes: list[Scope]) -> tuple[str, float]:
        minted.append(tuple(scopes))
        return original(self, scopes)

    monkeypatch.setattr(TokenSigner, "mint", spy)
    wanted = (Scope.repository(repository, "pull"),)
    return lambda: sum(1 for scopes in minted if scopes == wanted)


async def test_token_expiring_mid_copy_is_reminted(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    push_all(primary_pusher, {"tok/app": {"v1": oci_image("tok", layers=3)}})
    primary_mints = count_primary_mints(monkeypatch, "tok/app")
    faults = FaultTransport()
    challenge = expired_token_challenge(primary.token_realm or "", "tok/app", primary.service)
    # the first blob GET goes through (the copy has started), the next one finds the token expired
    rule = faults.fail(
        "GET", r"^/v2/tok/app/blobs/", 401, headers={"WWW-Authenticate": challenge}, times=1, skip=1
    )
    async with make_engine(geo_config(tmp_path, primary, secondary, key_pair), primary=faults) as engine:
        summary = await engine.sync_once()
    assert summary.ok, summary.sites[SECONDARY].failures
    assert rule.fired == 1
    assert primary_mints() == 2, "one token for the copy, a second one after the 401"
    assert_same_tags(primary_pusher, secondary_pusher, ["tok/app"])
    assert_no_broken_tags(secondary_pusher)


async def test_token_refused_every_time_fails_clearly_then_recovers(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    push_all(primary_pusher, {"tok/app": {"v1": oci_image("tok-2")}})
    primary_mints = count_primary_mints(monkeypatch, "tok/app")
    faults = FaultTransport()
    challenge = expired_token_challenge(primary.token_realm or "", "tok/app", primary.service)
    faults.fail("GET", r"^/v2/tok/app/blobs/", 401, headers={"WWW-Authenticate": challenge})
    async with make_engine(geo_config(tmp_path, primary, secondary, key_pair), primary=faults) as engine:
        summary = await engine.sync_once()
        reason = failed_reason(summary, "tok/app")
        assert "primary" in reason and "tok/app" in reason and "401" in reason, reason
        assert primary_mints() >= 2, "the client re-minted before giving up"
        assert secondary_tags(secondary_pusher, "tok/app") == {}
        assert_no_broken_tags(secondary_pusher)

        faults.clear()
        summary = await engine.sync_once()
    assert summary.ok, summary.sites[SECONDARY].failures
    assert_same_tags(primary_pusher, secondary_pusher, ["tok/app"])


# -- 5. a secondary that refuses writes -----------------------------------------------------------------


async def test_read_only_secondary_fails_clearly_then_syncs_once_writable(
    primary: Distribution,
    registry_factory: Callable[..., Distribution],
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    secondary = registry_factory(SECONDARY, readonly=True)
    secondary_pusher = RawPusher.for_registry(secondary)
    repositories = ["ro/a", "ro/b"]
    push_all(primary_pusher, {r: {"v1": oci_image(r)} for r in repositories})
    mark = secondary.mark()
    async with make_engine(geo_config(tmp_path, primary, secondary, key_pair)) as engine:
        summary = await engine.sync_once()
        assert summary.sites[SECONDARY].failed == 2
        for repository in repositories:
            reason = failed_reason(summary, repository)
            assert reason.count(f"{SECONDARY}: upload blob {repository}@") >= 1, reason
            assert "405" in reason, reason
        # Distribution 2.8 in read-only mode: 405 (text/plain "Method not allowed") to the upload POST
        posts = secondary.requests("POST", "/blobs/uploads/", since_mark=mark)
        assert posts and {p.status for p in posts} == {405}, posts
        assert secondary.count_requests("PUT", since_mark=mark) == 0
        assert assert_no_broken_tags(secondary_pusher) == 0

        port = secondary.port
        secondary.stop()
        secondary.readonly = False
        secondary.start()
        assert secondary.port == port
        summary = await engine.sync_once()
    assert summary.ok, summary.sites[SECONDARY].failures
    assert_same_tags(primary_pusher, secondary_pusher, repositories)
    assert_no_broken_tags(secondary_pusher)


async def test_secondary_refusing_deletes_fails_clearly_and_keeps_other_tags(
    primary: Distribution,
    registry_factory: Callable[..., Distribution],
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    secondary = registry_factory(SECONDARY, delete_enabled=False)
    secondary_pusher = RawPusher.for_registry(secondary)
    repository = "del/app"
    old = oci_image("del-old")
    push_all(primary_pusher, {repository: {"v1": oci_image("del-1"), "v2": oci_image("del-2"), "old": old}})
    async with make_engine(geo_config(tmp_path, primary, secondary, key_pair)) as engine:
        assert (await engine.sync_once()).ok
        before = tag_digests(secondary_pusher, repository)
        assert primary_pusher.delete_manifest(repository, old.digest).status_code == 202

        summary = await engine.sync_once()
        reason = failed_reason(summary, repository)
        assert "refuses deletes" in reason and "405" in reason and "old" in reason, reason
        assert tag_digests(secondary_pusher, repository) == before, "the other tags stay as they were"
        assert assert_no_broken_tags(secondary_pusher) == 3

        secondary.stop()
        secondary.delete_enabled = True
        secondary.start()
        summary = await engine.sync_once()
    assert summary.ok, summary.sites[SECONDARY].failures
    assert tag_digests(secondary_pusher, repository) == {t: before[t] for t in ("v1", "v2")}
    assert_same_tags(primary_pusher, secondary_pusher, [repository])
    assert_no_broken_tags(secondary_pusher)


# -- 6. the CLI with a primary that is down -----------------------------------------------------------------


def test_cli_with_primary_down_says_so_in_one_line(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    push_all(primary_pusher, {"cli/app": {"v1": oci_image("cli")}})
    config = geo_config(tmp_path, primary, secondary, key_pair)
    primary.stop()
    code = main(["--config", str(config), "sync", "--once"])
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    final = [line for line in lines if line.startswith("geo-tui: ")]
    assert len(final) == 1, err
    assert final[0].startswith("geo-tui: primary: ") and "unreachable" in final[0], final[0]
    # the rest of stderr is the engine's timestamped log (health of each site), not a second error report
    assert all(line[:2].isdigit() and " [" in line for line in lines if line not in final), err

    primary.start()
    code = main(["--config", str(config), "sync", "--once", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["ok"] is True and "Traceback" not in err
    assert_same_tags(primary_pusher, secondary_pusher, ["cli/app"])
