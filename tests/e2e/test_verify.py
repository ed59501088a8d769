"""`geo-tui verify` against real CNCF Distribution: checksums over tag+digest, what a tampered secondary
looks like, the resync a mismatch queues, and the command's selection (`REPO...`, `--site`) and JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from geo_tui.config import load_config
from geo_tui.engine import SyncState, Tracking, VerificationState, repository_checksum
from tests.e2e.test_sync import assert_same_content, run_cli, sync_json
from tests.support.distribution import Distribution
from tests.support.geo import tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.push import RawPusher

HEX64 = re.compile(r"[0-9a-f]{64}")
# depth, missing, corrupt and blobs since verify has depths (issue 13): a shallow result says it is shallow
RESULT_KEYS = {
    "site", "repository", "ok", "primary_checksum", "secondary_checksum", "detail",
    "depth", "missing", "corrupt", "blobs",
}  # fmt: skip


@pytest.fixture
def config_for(tmp_path: Path, key_pair: TestKeyPair) -> Callable[..., Path]:
    def make(primary: Distribution, *secondaries: Distribution, **kwargs: Any) -> Path:
        return write_geo_config(tmp_path / "geo", primary, list(secondaries), key_pair, **kwargs)

    return make


def cli(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    code, out, err = run_cli(capsys, "--config", str(config), *args)
    assert "Traceback" not in err
    return code, out, err


def verify_json(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, list[Any]]:
    code, out, err = cli(capsys, config, "verify", "--json", *args)
    assert out.strip(), f"no JSON; stderr:\n{err}"
    return code, json.loads(out)


def tracked(config: Path) -> dict[tuple[str, str], Any]:
    tracking = Tracking(load_config(config).engine.database)
    try:
        return {(r.site, r.repository): r for r in tracking.rows()}
    finally:
        tracking.close()


def load(pusher: RawPusher, *repositories: str) -> None:
    for repository in repositories:
        image = oci_image(repository)
        pusher.push_tree(repository, image, "v1")
        pusher.push_manifest(repository, "latest", image.manifest, image.media_type)


def test_verify_after_sync_succeeds_everywhere(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    repositories = ("shop/api", "shop/web", "tools/cli")
    load(primary_pusher, *repositories)
    config = config_for(primary, secondary)
    assert sync_json(capsys, config)[0] == 0

    code, out, _ = cli(capsys, config, "verify")
    assert code == 0, out
    for repository in repositories:
        assert re.search(rf"^ok +secondary +{re.escape(repository)}: 2 tags match$", out, re.M), out
    assert out.strip().splitlines()[-1] == "3 verified, 0 failed"

    code, out, _ = cli(capsys, config, "status", "--json")
    assert code == 0
    site = json.loads(out)["sites"]["secondary"]
    assert (site["total"], site["synced"], site["verified"], site["verification_failed"]) == (3, 3, 3, 0)
    for repository in repositories:
        row = tracked(config)[("secondary", repository)]
        assert row.state is SyncState.SYNCED
        assert row.verification_state is VerificationState.SUCCEEDED
        assert row.verification_checksum == repository_checksum(tag_digests(primary_pusher, repository))
        assert row.verified_at is not None and row.verification_failure is None


def test_tampered_secondary_fails_verification_queues_a_resync_and_recovers(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    load(primary_pusher, "shop/api", "shop/web", "tools/cli")
    config = config_for(primary, secondary)
    assert sync_json(capsys, config)[0] == 0
    assert cli(capsys, config, "verify")[0] == 0

    # tamper, behind geo-tui's back: another image under an existing tag, an extra tag, a lost tag
    secondary_pusher.push_tree("shop/api", oci_image("intruder"), "v1")
    secondary_pusher.push_tree("shop/api", oci_image("stray"), "extra")
    web_digest = tag_digests(secondary_pusher, "shop/web")["v1"]
    assert secondary_pusher.delete_manifest("shop/web", web_digest).status_code == 202  # v1 and latest

    code, out, _ = cli(capsys, config, "verify")
    assert code == 1, out
    api = re.search(r"^FAIL +secondary +shop/api: (.*)$", out, re.M)
    web = re.search(r"^FAIL +secondary +shop/web: (.*)$", out, re.M)
    assert api and web, out
    assert "extra: extra" in api[1] and "different digest: v1" in api[1] and "missing" not in api[1]
    assert web[1] == "missing: latest, v1"
    assert re.search(r"^ok +secondary +tools/cli: 2 tags match$", out, re.M), out
    assert out.strip().splitlines()[-1] == "1 verified, 2 failed"

    rows = tracked(config)
    for repository in ("shop/api", "shop/web"):
        row = rows[("secondary", repository)]
        assert row.verification_state is VerificationState.FAILED
        assert row.verification_failure and row.verification_failure in out
        assert row.state is SyncState.PENDING, f"{repository}: the mismatch queued no resync ({row.state})"
    assert rows[("secondary", "tools/cli")].state is SyncState.SYNCED
    status = json.loads(cli(capsys, config, "status", "--json")[1])["sites"]["secondary"]
    assert (status["pending"], status["synced"], status["verification_failed"]) == (2, 1, 2)

    # `--failed` is about failed syncs: the queued mismatches are pending, not failed
    code, out, _ = cli(capsys, config, "resync", "--failed")
    assert (code, out.strip()) == (0, "0 repositories queued for resync")
    # the named resync runs them
    code, out, err = cli(capsys, config, "resync", "shop/api", "shop/web", "--now", "--json")
    assert code == 0, err
    summary = json.loads(out)["sites"]["secondary"]
    assert (summary["synced"], summary["failed"]) == (2, 0)
    # "extra" points at a manifest no kept tag uses: Distribution 2.8 deletes it by digest
    assert summary["tags_deleted"] == 1 and summary["warnings"] == []
    assert summary["tags_pushed"] == 3  # shop/api v1, shop/web v1 and latest
    for repository in ("shop/api", "shop/web", "tools/cli"):
        assert_same_content(primary_pusher, secondary_pusher, repository)

    code, out, _ = cli(capsys, config, "verify")
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "3 verified, 0 failed"
    rows = tracked(config)
    assert {r.state for r in rows.values()} == {SyncState.SYNCED}
    assert {r.verification_state for r in rows.values()} == {VerificationState.SUCCEEDED}
    assert all(r.verification_failure is None for r in rows.values())


def test_extra_tag_sharing_a_kept_manifest_is_kept_and_still_reported(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Distribution 2.8 cannot delete a tag alone; deleting the shared manifest by digest would take the
    kept tag with it. The engine keeps the extra tag and says so, and verify does not pretend it is gone."""
    load(primary_pusher, "shop/api")
    config = config_for(primary, secondary)
    assert sync_json(capsys, config)[0] == 0
    kept = tag_digests(primary_pusher, "shop/api")
    image = oci_image("shop/api")
    secondary_pusher.push_manifest("shop/api", "alias", image.manifest, image.media_type)

    code, out, _ = cli(capsys, config, "verify", "shop/api")
    assert code == 1 and "shop/api: extra: alias" in out, out
    code, summary = sync_json(capsys, config)
    assert code == 0, summary
    site = summary["sites"]["secondary"]
    assert site["tags_deleted"] == 0
    assert any("tag alias kept" in w and image.digest in w for w in site["warnings"]), site["warnings"]
    held = tag_digests(secondary_pusher, "shop/api")
    assert held == {**kept, "alias": image.digest}  # the kept tags were not lost with it

    code, out, _ = cli(capsys, config, "verify", "shop/api")
    assert code == 1 and "shop/api: extra: alias" in out, out
    row = tracked(config)[("secondary", "shop/api")]
    assert row.verification_state is VerificationState.FAILED


def test_verify_one_repository_and_one_site(
    primary: Distribution,
    secondary: Distribution,
    secondary2: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    load(primary_pusher, "shop/api", "shop/web")
    config = config_for(primary, secondary, secondary2)
    assert sync_json(capsys, config)[0] == 0
    secondary_pusher.push_tree("shop/web", oci_image("intruder"), "v1")  # only `secondary` differs

    code, results = verify_json(capsys, config, "shop/api")
    assert code == 0
    assert [(r["site"], r["repository"], r["ok"]) for r in results] == [
        ("secondary", "shop/api", True),
        ("secondary2", "shop/api", True),
    ]
    rows = tracked(config)
    assert rows[("secondary", "shop/api")].verification_state is VerificationState.SUCCEEDED
    # the repository not named was not verified
    assert rows[("secondary", "shop/web")].verification_state is VerificationState.PENDING
    assert rows[("secondary2", "shop/web")].verification_state is VerificationState.PENDING

    code, results = verify_json(capsys, config, "--site", "secondary2")
    assert code == 0
    assert [(r["site"], r["repository"], r["ok"]) for r in results] == [
        ("secondary2", "shop/api", True),
        ("secondary2", "shop/web", True),
    ]
    assert tracked(config)[("secondary", "shop/web")].verification_state is VerificationState.PENDING

    code, results = verify_json(capsys, config, "--site", "secondary", "shop/web")
    assert code == 1
    assert [(r["site"], r["repository"], r["ok"]) for r in results] == [("secondary", "shop/web", False)]
    assert results[0]["detail"] == "different digest: v1"
    rows = tracked(config)
    assert rows[("secondary", "shop/web")].state is SyncState.PENDING
    assert rows[("secondary2", "shop/web")].state is SyncState.SYNCED  # the other site is left alone

    code, out, err = cli(capsys, config, "verify", "--site", "nowhere")
    assert code == 2 and out == "" and "--site nowhere" in err


def test_verify_of_a_repository_the_primary_does_not_have(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A typo must not verify as "ok", nor add a tracked repository that drags percent synced down."""
    load(primary_pusher, "shop/api")
    config = config_for(primary, secondary)
    assert sync_json(capsys, config)[0] == 0

    code, out, err = cli(capsys, config, "verify", "shop/apj")
    assert code != 0, f"verify of a repository the primary does not have exited 0:\n{out}"
    assert "shop/apj" in out + err
    assert ("secondary", "shop/apj") not in tracked(config)
    status = json.loads(cli(capsys, config, "status", "--json")[1])["sites"]["secondary"]
    assert (status["total"], status["percent_synced"]) == (1, 100.0)


def test_verify_json_shape(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    load(primary_pusher, "shop/api", "shop/web")
    config = config_for(primary, secondary)
    assert sync_json(capsys, config)[0] == 0
    secondary_pusher.push_tree("shop/web", oci_image("stray"), "extra")

    code, results = verify_json(capsys, config)
    assert code == 1
    assert isinstance(results, list) and len(results) == 2
    for result in results:
        assert set(result) == RESULT_KEYS
        assert result["site"] == "secondary" and isinstance(result["ok"], bool)
        assert isinstance(result["detail"], str) and result["detail"]
        for key in ("primary_checksum", "secondary_checksum"):
            assert isinstance(result[key], str) and HEX64.fullmatch(result[key]), result
    api, web = results
    assert api["repository"] == "shop/api" and web["repository"] == "shop/web"
    assert api["ok"] is True and api["detail"] == "2 tags match"
    assert api["primary_checksum"] == api["secondary_checksum"]
    assert api["primary_checksum"] == repository_checksum(tag_digests(primary_pusher, "shop/api"))
    assert web["ok"] is False and web["detail"] == "extra: extra"
    assert web["primary_checksum"] == repository_checksum(tag_digests(primary_pusher, "shop/web"))
    assert web["secondary_checksum"] == repository_checksum(tag_digests(secondary_pusher, "shop/web"))
    assert web["primary_checksum"] != web["secondary_checksum"]
