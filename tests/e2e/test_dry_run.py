"""`geo-tui sync --once --dry-run`: it writes nothing, and its plan is what the run that follows writes, as
the secondary's access log shows it (write requests by method, and the tags and digests in their URLs)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from geo_tui.config import load_config
from tests.e2e.test_sync import WRITE_METHODS, push_formats_workload, run_cli, sync_json
from tests.support.distribution import Distribution
from tests.support.lab import LabInstance
from tests.support.oci import buildkit_cache_manifest, oci_image
from tests.support.push import RawPusher

MANIFEST = re.compile(r"/v2/(?P<repo>.+)/manifests/(?P<ref>[^/?]+)$")
BLOBS = re.compile(r"/v2/(?P<repo>.+)/blobs/uploads/")
DIGEST = re.compile(r"(?:^|[?&])(?P<key>digest|mount)=(?P<digest>sha256:[0-9a-f]{64})")


@dataclass
class Writes:
    """Write requests that changed a registry, by what they name."""

    methods: Counter[str] = field(default_factory=Counter)
    manifests: set[tuple[str, str]] = field(default_factory=set)  # PUT (repository, tag or digest)
    uploads: set[tuple[str, str]] = field(default_factory=set)
    mounts: set[tuple[str, str]] = field(default_factory=set)
    deleted: set[tuple[str, str]] = field(default_factory=set)  # (repository, manifest digest)


def writes_in_log(registry: Distribution | LabInstance, mark: int) -> Writes:
    found = Writes()
    for line in registry.requests(since_mark=mark):
        if line.method not in WRITE_METHODS or not 200 <= line.status < 300:
            continue
        found.methods[line.method] += 1
        uri = unquote(line.uri)
        path, _, query = uri.partition("?")
        if manifest := MANIFEST.match(path):
            target = (manifest["repo"], manifest["ref"])
            (found.manifests if line.method == "PUT" else found.deleted).add(target)
        elif (blobs := BLOBS.match(path)) and (digest := DIGEST.search("?" + query)):
            if digest["key"] == "mount":
                found.mounts.add((blobs["repo"], digest["digest"]))
            elif line.method == "PUT":
                found.uploads.add((blobs["repo"], digest["digest"]))
    return found


def writes_in_plan(site: dict[str, Any]) -> Writes:
    planned = Writes(methods=Counter({m: n for m, n in site["requests"].items() if n}))
    for repository, plan in site["repositories"].items():
        tags = plan["tags"]
        planned.manifests |= {(repository, t) for t in [*tags["create"], *tags["move"]]}
        planned.manifests |= {(repository, d) for d in plan["manifests"]}
        planned.uploads |= {(repository, b["digest"]) for b in plan["blobs"]["copy"]}
        planned.mounts |= {(repository, b["digest"]) for b in plan["blobs"]["mount"]}
        planned.deleted |= {(repository, d) for d in [*tags["delete"].values(), *plan["manifests_deleted"]]}
    return planned


def dry_run(capsys: pytest.CaptureFixture[str], config: Path) -> dict[str, Any]:
    code, summary = sync_json(capsys, config, "--dry-run")
    assert code == 0 and summary["dry_run"] is True
    return summary


def compare_plan_with_run(
    capsys: pytest.CaptureFixture[str], config: Path, secondary: Distribution | LabInstance
) -> tuple[dict[str, Any], Writes, dict[str, Any]]:
    """Plan, check that planning wrote nothing, run, check that the run wrote what the plan said, and
    return the plan's site, the run's writes and the run's summary of the site."""
    mark = secondary.settled_mark()
    plan = dry_run(capsys, config)["sites"]["secondary"]
    after_plan = secondary.settled_mark()
    assert [r for r in secondary.requests(since_mark=mark) if r.method in WRITE_METHODS] == []
    code, summary = sync_json(capsys, config)
    assert code == 0, summary["sites"]["secondary"]["failures"]
    secondary.settled_mark()
    done = writes_in_log(secondary, after_plan)
    planned = writes_in_plan(plan)
    assert planned.methods == done.methods
    assert planned.manifests == done.manifests
    assert planned.uploads == done.uploads
    assert planned.mounts == done.mounts
    assert planned.deleted == done.deleted
    ran = summary["sites"]["secondary"]
    for key in ("manifests_pushed", "referrers_deleted", "blobs_copied", "blobs_mounted", "bytes"):
        assert plan[key] == ran[key], key
    assert plan["tags_create"] + plan["tags_move"] == ran["tags_pushed"]
    assert plan["tags_delete"] == ran["tags_deleted"]
    return plan, done, ran


def test_the_plan_is_what_the_run_writes(
    primary: Distribution,
    registry_factory: Callable[..., Distribution],
    primary_pusher: RawPusher,
    config_for: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secondary = registry_factory("secondary", schema1=True)
    push_formats_workload(primary, primary_pusher, tmp_path)
    config = config_for(primary, secondary)

    # the backfill: every tag to create, every blob to copy or mount
    plan, done, _ = compare_plan_with_run(capsys, config, secondary)
    assert plan["tags_create"] == 10 and plan["tags_move"] == plan["tags_delete"] == 0
    assert done.methods["PUT"] > 20 and done.uploads

    # then a day's changes: a new tag, a moved one, a deleted one, a shared layer to mount
    primary_pusher.push_tree("formats/oci", oci_image("o2"), "v2")
    primary_pusher.push_tree("formats/docker", oci_image("o2"), "v1")  # moved, its blobs mounted
    removed = buildkit_cache_manifest("bk1")
    assert primary_pusher.delete_manifest("formats/buildkit", removed.digest).status_code == 202
    plan, done, _ = compare_plan_with_run(capsys, config, secondary)
    changes = plan["repositories"]
    assert set(changes["formats/oci"]["tags"]["create"]) == {"v2"}
    assert set(changes["formats/docker"]["tags"]["move"]) == {"v1"}
    assert changes["formats/buildkit"]["tags"]["delete"] == {"cache": removed.digest}
    assert plan["blobs_mounted"] > 0 and done.mounts
    assert set(changes) == {"formats/oci", "formats/docker", "formats/buildkit"}


def test_a_dry_run_writes_nothing_anywhere(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    primary_pusher.push_tree("team/app", oci_image("a1"), "v1")
    config = config_for(primary, secondary)
    marks = {r.name: r.settled_mark() for r in (primary, secondary)}
    code, out, err = run_cli(capsys, "--config", str(config), "sync", "--once", "--dry-run")
    assert code == 0, err
    assert "dry run: nothing was written" in out
    assert "team/app: create v1 sha256:" in out and "blobs to copy" in out
    for registry in (primary, secondary):
        registry.settled_mark()
        writes = [r for r in registry.requests(since_mark=marks[registry.name]) if r.method in WRITE_METHODS]
        assert writes == [], registry.name
        downloads = [r for r in registry.requests(method="GET", since_mark=marks[registry.name])]
        assert not [r for r in downloads if "/blobs/" in r.uri], "a plan downloaded a blob"
    assert not load_config(config).engine.database.exists(), "a plan created the tracking database"


def test_a_plan_that_cannot_read_the_secondary_says_so(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    config_for: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    primary_pusher.push_tree("team/app", oci_image("a1"), "v1")
    config = config_for(primary, secondary)
    secondary.stop()
    code, out, err = run_cli(capsys, "--config", str(config), "sync", "--once", "--dry-run")
    assert code == 1
    assert "team/app" in out and "cannot plan:" in out and "secondary" in out
    assert "Traceback" not in out + err
