"""The `geo-tui` command line as a user meets it: help and usage errors, bad config files, where the config
comes from, what a pull-only primary token can do, resync and status figures, and progress output."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import geo_tui.progress
from geo_tui.cli import main
from geo_tui.config import load_config
from geo_tui.engine import SyncState, Tracking
from geo_tui.engine.sites import build_client
from geo_tui.engine.tracking import SCHEMA_VERSION
from geo_tui.registry import RegistryAuthError
from tests.e2e.test_sync import assert_same_content, run_cli, sync_json
from tests.support.distribution import Distribution
from tests.support.geo import tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import layer_blob, oci_image, schema1_image
from tests.support.push import RawPusher

ROOT = Path(__file__).resolve().parents[2]
SECRET = "S3cr3t-marker-7f3a9c1e5b"
PASSWORD = "P4ssw0rd-marker-c0ffee42"
COMMAND_TIMEOUT = 60.0
WRITE_METHODS = ("PUT", "POST", "PATCH", "DELETE")


def geo(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`python -m geo_tui ARGS` in a child process, with this checkout importable."""
    environ = dict(os.environ if env is None else env)
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "geo_tui", *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env=environ,
        cwd=cwd,
    )


def env_without_config(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment with no GEO_TUI_CONFIG and a user config dir that holds nothing."""
    env = {k: v for k, v in os.environ.items() if k != "GEO_TUI_CONFIG"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg-data")
    env.update(extra)
    return env


# --- help and usage -------------------------------------------------------------------------------


def test_help_version_and_usage_errors(tmp_path: Path) -> None:
    result = geo("--help")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: geo-tui")
    for command in ("sync", "status", "verify", "resync", "--config"):
        assert command in result.stdout
    for command in ("sync", "status", "verify", "resync"):
        sub = geo(command, "--help")
        assert sub.returncode == 0 and sub.stdout.startswith(f"usage: geo-tui {command}"), sub.stderr

    version = geo("--version")
    assert version.returncode == 0 and re.fullmatch(r"geo-tui \d+\.\d+\.\d+\S*\n", version.stdout)

    env = env_without_config(tmp_path)
    for args, hint in (
        ((), "usage: geo-tui"),  # no command: the help, on stderr
        (("frobnicate",), "invalid choice"),
        (("sync",), "--once"),
        (("resync",), "--all"),
        (("resync", "--all", "--failed"), "not allowed with"),
        (("verify", "--bogus"), "unrecognized arguments"),
    ):
        result = geo(*args, env=env)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stdout == "", args
        assert hint in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_console_script(tmp_path: Path) -> None:
    script = shutil.which("geo-tui")
    if script is None:
        message = "the geo-tui console script is not installed (pip install -e .)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert result.returncode == 0 and result.stdout.startswith("usage: geo-tui")
    result = subprocess.run(
        [script], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=env_without_config(tmp_path)
    )
    assert result.returncode == 2 and "usage: geo-tui" in result.stderr


# --- bad configuration files ----------------------------------------------------------------------


def config_text(key_path: Path, *, secondary_name: str = "eu") -> str:
    """A valid config holding a notification secret and a basic-auth password (nothing is contacted)."""
    return f"""\
[engine]
database = "tracking.db"

[auth]
private_key = "{key_path}"
issuer = "geo-tui-lab"
service = "container_registry"

[notifications]
listen = "127.0.0.1:5050"
secret = "{SECRET}"

[primary]
name = "primary"
registry = "http://127.0.0.1:5000"
auth = "jwt"

[[secondaries]]
name = "{secondary_name}"
registry = "http://127.0.0.1:5001"
auth = "basic"
username = "geo"
password = "{PASSWORD}"
"""


SECONDARY_BLOCK = f"""\
[[secondaries]]
name = "eu"
registry = "http://127.0.0.1:5001"
auth = "basic"
username = "geo"
password = "{PASSWORD}"
"""

# case -> (how to break the valid text, what the one line must name besides the file)
BAD_CONFIGS: dict[str, tuple[Callable[[str, Path], str], tuple[str, ...]]] = {
    "syntax error": (
        lambda text, _: text.replace(f'secret = "{SECRET}"', f'secret = "{SECRET}'),
        (":11:", "TOML syntax error"),
    ),
    "unknown key": (
        lambda text, _: text.replace(
            'registry = "http://127.0.0.1:5001"', 'registyr = "http://127.0.0.1:5001"'
        ),
        ("secondaries[0]", "registyr", "registry"),
    ),
    "missing key": (
        lambda text, _: text.replace('issuer = "geo-tui-lab"\n', ""),
        ("auth.issuer",),
    ),
    "missing primary": (
        lambda text, _: text[: text.index("[primary]")] + text[text.index("[[secondaries]]") :],
        ("primary", "missing"),
    ),
    "bad URL": (
        lambda text, _: text.replace('"http://127.0.0.1:5000"', '"ftp://127.0.0.1:5000"'),
        ("primary.registry", "http"),
    ),
    "credentials in the URL": (
        lambda text, _: text.replace('"http://127.0.0.1:5001"', f'"http://geo:{PASSWORD}@127.0.0.1:5001"'),
        ("secondaries[0].registry", "credentials"),
    ),
    "missing key file": (
        lambda text, key: text.replace(str(key), str(key.parent / "nowhere.key")),
        ("auth.private_key", "nowhere.key", "no such file"),
    ),
    "unreadable key file": (
        # root reads a chmod 000 file, so the unreadable key is a directory
        lambda text, key: text.replace(str(key), str(key.parent)),
        ("auth.private_key", "directory"),
    ),
    "key file is not a key": (
        lambda text, key: text.replace(str(key), str(key.parent / "config.toml")),
        ("auth.private_key", "not a PEM private key"),
    ),
    "site name used twice": (
        lambda text, _: text + "\n" + SECONDARY_BLOCK.replace("5001", "5002"),
        ("secondaries[1].name", "duplicate", "eu"),
    ),
    "secondary named like the primary": (
        lambda text, _: text.replace('name = "eu"', 'name = "primary"'),
        ("secondaries[0].name", "duplicate"),
    ),
    "no secondary": (
        lambda text, _: text[: text.index("[[secondaries]]")],
        ("secondaries", "missing"),
    ),
    "empty secondaries": (
        lambda text, _: text[: text.index("[[secondaries]]")].replace(
            "[engine]", "secondaries = []\n\n[engine]"
        ),
        ("secondaries", "empty"),
    ),
    "short notification secret": (
        lambda text, _: text.replace(SECRET, SECRET[:8]),
        ("notifications.secret", "too short"),
    ),
    "password of the wrong type": (
        lambda text, _: text.replace(f'password = "{PASSWORD}"', f'password = ["{PASSWORD}"]'),
        ("secondaries[0].password", "string"),
    ),
}


@pytest.fixture
def key_file(tmp_path: Path, key_pair: TestKeyPair) -> Path:
    directory = tmp_path / "conf"
    directory.mkdir()
    key = directory / "registry.key"
    key.write_bytes(key_pair.key_pem)
    key.chmod(0o600)
    return key


def assert_one_line_config_error(result: subprocess.CompletedProcess[str], path: Path, *names: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert result.stdout == ""
    assert "Traceback" not in output
    assert SECRET not in output and SECRET[:8] not in output and PASSWORD not in output, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr:\n{result.stderr}"
    line = lines[0]
    assert line.startswith(f"geo-tui: {path}"), line
    for name in names:
        assert name in line, f"{name!r} not named in: {line}"
    return line


def test_the_valid_config_is_valid(key_file: Path, tmp_path: Path) -> None:
    path = key_file.parent / "config.toml"
    path.write_text(config_text(key_file))
    Tracking(key_file.parent / "tracking.db").close()  # status reads a database, never creates one
    result = geo("--config", str(path), "status", "--json", env=env_without_config(tmp_path))
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["sites"]) == {"eu"}
    assert SECRET not in result.stdout + result.stderr and PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_exits_2_with_one_line(case: str, key_file: Path, tmp_path: Path) -> None:
    breaks, names = BAD_CONFIGS[case]
    path = key_file.parent / "config.toml"
    path.write_text(config_text(key_file))  # also what "key file is not a key" points at
    path.write_text(breaks(config_text(key_file), key_file))
    assert path.read_text() != config_text(key_file)
    env = env_without_config(tmp_path)
    assert_one_line_config_error(geo("--config", str(path), "status", env=env), path, *names)
    if case in ("syntax error", "unknown key", "credentials in the URL"):
        for command in (("sync", "--once"), ("verify",), ("resync", "--all")):
            assert_one_line_config_error(geo("--config", str(path), *command, env=env), path, *names)


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "config.toml"
    result = geo("--config", str(path), "sync", "--once", env=env_without_config(tmp_path))
    assert "no such file" in assert_one_line_config_error(result, path)


# --- the tracking database ------------------------------------------------------------------------


def damage(database: Path, how: str) -> bytes:
    """Damage a tracking database of 2,000 rows as a failing disk or a full file system would."""
    tracking = Tracking(database)
    tracking.ensure_rows("eu", [f"shop/app-{i}" for i in range(2000)])
    tracking.close()
    data = database.read_bytes()
    damaged = os.urandom(len(data)) if how == "random bytes" else data[: len(data) // 2]
    database.write_bytes(damaged)
    return damaged


@pytest.mark.parametrize("how", ["random bytes", "truncated"])
def test_a_damaged_tracking_database_gives_one_line_saying_what_to_do(
    how: str, key_file: Path, tmp_path: Path
) -> None:
    path = key_file.parent / "config.toml"
    path.write_text(config_text(key_file))
    path.chmod(0o600)
    database = key_file.parent / "tracking.db"
    damaged = damage(database, how)
    env = env_without_config(tmp_path)
    for command in (("status",), ("status", "--json"), ("sync", "--once"), ("serve",)):
        result = geo("--config", str(path), *command, env=env)
        assert result.returncode == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr and result.stdout == "", (command, result)
        assert result.stderr.splitlines() == [
            f"geo-tui: tracking database {database} is damaged ("
            + ("file is not a database" if how == "random bytes" else "database disk image is malformed")
            + "): move it aside, with its -wal and -shm files, and run again; "
            "geo-tui rebuilds its state from the registries"
        ], command
    assert database.read_bytes() == damaged  # left as found, for whoever looks into it


def test_a_tracking_database_newer_than_this_geo_tui_gives_one_line_and_is_left_as_it_was(
    key_file: Path, tmp_path: Path
) -> None:
    path = key_file.parent / "config.toml"
    path.write_text(config_text(key_file))
    path.chmod(0o600)
    database = key_file.parent / "tracking.db"
    tracking = Tracking(database)
    tracking.ensure_rows("eu", ["shop/app"])
    tracking.close()
    newer = SCHEMA_VERSION + 1
    with sqlite3.connect(database) as db:  # as a later geo-tui's migration would leave it
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(newer),))
    db.close()
    before = database.read_bytes()
    env = env_without_config(tmp_path)
    for command in (("status",), ("sync", "--once"), ("serve",)):
        result = geo("--config", str(path), *command, env=env)
        assert result.returncode == 1, (command, result.stderr)
        assert result.stdout == "" and result.stderr.splitlines() == [
            f"geo-tui: tracking database {database} has schema version {newer}, but this geo-tui knows "
            f"versions up to {SCHEMA_VERSION}: run the newer geo-tui that wrote it, or point [engine] "
            "database at another file"
        ], command
    assert database.read_bytes() == before


def test_status_refuses_a_tracking_database_that_does_not_exist_and_creates_none(
    key_file: Path, tmp_path: Path
) -> None:
    path = key_file.parent / "config.toml"
    path.write_text(config_text(key_file).replace('database = "tracking.db"', 'database = "trakcing.db"'))
    path.chmod(0o600)
    database = key_file.parent / "trakcing.db"
    for command in (("status",), ("status", "--json")):
        result = geo("--config", str(path), *command, env=env_without_config(tmp_path))
        assert result.returncode == 2 and result.stdout == "", result
        assert result.stderr.splitlines() == [
            f"geo-tui: tracking database {database} does not exist: check [engine] database in {path}; "
            "`geo-tui sync --once` or `geo-tui serve` creates it"
        ]
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["config.toml", "registry.key"]


# --- where the config comes from ------------------------------------------------------------------


def test_geo_tui_config_variable_and_config_flag(key_file: Path, tmp_path: Path) -> None:
    from_env = key_file.parent / "env.toml"
    from_env.write_text(config_text(key_file, secondary_name="from-env"))
    from_flag = key_file.parent / "flag.toml"
    from_flag.write_text(config_text(key_file, secondary_name="from-flag"))
    missing = key_file.parent / "missing.toml"
    Tracking(key_file.parent / "tracking.db").close()  # status reads a database, never creates one

    def sites(result: subprocess.CompletedProcess[str]) -> set[str]:
        assert result.returncode == 0, result.stderr
        return set(json.loads(result.stdout)["sites"])

    env = env_without_config(tmp_path, GEO_TUI_CONFIG=str(from_env))
    assert sites(geo("status", "--json", env=env)) == {"from-env"}
    assert sites(geo("--config", str(from_flag), "status", "--json", env=env)) == {"from-flag"}
    # --config wins even when what it names is missing: no silent fallback to the variable
    assert_one_line_config_error(geo("--config", str(missing), "status", env=env), missing, "no such file")
    bad_env = env_without_config(tmp_path, GEO_TUI_CONFIG=str(missing))
    assert sites(geo("--config", str(from_flag), "status", "--json", env=bad_env)) == {"from-flag"}
    assert_one_line_config_error(geo("status", env=bad_env), missing, "no such file")
    # neither: the user config dir's geo-tui/config.toml; an empty variable counts as unset
    default = tmp_path / "xdg-config" / "geo-tui" / "config.toml"
    for environ in (env_without_config(tmp_path), env_without_config(tmp_path, GEO_TUI_CONFIG="")):
        assert_one_line_config_error(geo("status", env=environ), default, "no such file")
    default.parent.mkdir(parents=True)
    shutil.copy(from_env, default)
    Tracking(default.parent / "tracking.db").close()
    assert sites(geo("status", "--json", env=env_without_config(tmp_path))) == {"from-env"}


# --- a pull-only primary ---------------------------------------------------------------------------------


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_the_primary_token_is_pull_only(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    seeded = oci_image("seed")
    primary_pusher.push_tree("team/app", seeded, "v1")
    config = load_config(write_geo_config(tmp_path / "geo", primary, [secondary], key_pair))
    blob = layer_blob("not-for-the-primary", 1024)
    forged = oci_image("forged", layers=1, layer_size=1024)
    before = (primary_pusher.catalog(), tag_digests(primary_pusher, "team/app"))
    mark = primary.mark()

    async with build_client(config.primary, config) as client:
        assert await client.list_tags("team/app") == ["v1"]  # reading works
        with pytest.raises(RegistryAuthError):
            await client.upload_blob("team/app", blob.digest, blob.size, chunks_of(blob.data))
        with pytest.raises(RegistryAuthError):
            await client.upload_blob("team/new", blob.digest, blob.size, chunks_of(blob.data))
        # a manifest whose blobs the repository already holds: only the token stands in the way
        reuse = oci_image("seed").json
        reuse["annotations"] = {"forged": "yes"}
        content = json.dumps(reuse).encode()
        with pytest.raises(RegistryAuthError):
            await client.put_manifest("team/app", "hacked", content, seeded.media_type)
        with pytest.raises(RegistryAuthError):
            await client.put_manifest("team/app", "v1", forged.manifest, forged.media_type)
        with pytest.raises(RegistryAuthError):
            await client.delete_manifest("team/app", seeded.digest)

    writes = [r for r in primary.requests(since_mark=mark) if r.method in WRITE_METHODS]
    assert writes and {r.status for r in writes} == {401}, writes
    assert (primary_pusher.catalog(), tag_digests(primary_pusher, "team/app")) == before
    assert not primary_pusher.blob_exists("team/app", blob.digest)

    # the secondary's token can push
    async with build_client(config.secondaries[0], config) as client:
        for item in forged.blobs:
            await client.upload_blob("team/app", item.digest, item.size, chunks_of(item.data))
        digest = await client.put_manifest("team/app", "v1", forged.manifest, forged.media_type)
    assert digest == forged.digest
    assert tag_digests(secondary_pusher, "team/app") == {"v1": forged.digest}
    assert secondary_pusher.blob_exists("team/app", forged.blobs[1].digest)


# --- resync and status ----------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    code, out, err = run_cli(capsys, "--config", str(config), *args)
    assert "Traceback" not in err
    return code, out, err


def status_json(capsys: pytest.CaptureFixture[str], config: Path) -> dict[str, Any]:
    code, out, _ = cli(capsys, config, "status", "--json")
    assert code == 0
    data: dict[str, Any] = json.loads(out)
    return data


def states(config: Path) -> dict[str, SyncState]:
    tracking = Tracking(load_config(config).engine.database)
    try:
        return {r.repository: r.state for r in tracking.rows()}
    finally:
        tracking.close()


def test_status_percent_after_one_of_three_failed_and_resync_all_queues(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    primary_pusher.push_tree("team/a", oci_image("a"), "v1")
    primary_pusher.push_tree("team/b", oci_image("b"), "v1")
    # the `secondary` fixture has no schema 1 support: this one fails
    primary_pusher.push_tree("legacy/app", schema1_image("legacy/app", "v1", seed="l"), "v1")
    config = write_geo_config(tmp_path / "geo", primary, [secondary], key_pair)
    code, summary = sync_json(capsys, config)
    assert code == 1
    assert (summary["sites"]["secondary"]["synced"], summary["sites"]["secondary"]["failed"]) == (2, 1)

    code, out, _ = cli(capsys, config, "status")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("secondary "))
    assert row.split() == ["secondary", "2", "1", "0", "3", "66.66%", "0", "0"], row
    assert re.search(r"^  secondary  legacy/app  \(attempt \d+\): .*schema 1", out, re.M), out
    data = status_json(capsys, config)
    site = data["sites"]["secondary"]
    assert (site["total"], site["synced"], site["failed"], site["percent_synced"]) == (3, 2, 1, 66.66)
    assert [f["repository"] for f in data["failed"]] == ["legacy/app"]
    assert "schema 1" in data["failed"][0]["reason"]

    # --failed queues only the failed one; --all queues everything; neither runs anything
    mark = secondary.mark()
    code, out, _ = cli(capsys, config, "resync", "--failed")
    assert (code, out.strip()) == (0, "1 repositories queued for resync")
    assert states(config) == {"legacy/app": "pending", "team/a": "synced", "team/b": "synced"}
    code, out, _ = cli(capsys, config, "resync", "--all")
    assert (code, out.strip()) == (0, "3 repositories queued for resync")
    assert set(states(config).values()) == {SyncState.PENDING}
    site = status_json(capsys, config)["sites"]["secondary"]
    assert (site["pending"], site["synced"], site["failed"], site["percent_synced"]) == (3, 0, 0, 0.0)
    assert "0.00%" in cli(capsys, config, "status")[1]
    assert secondary.requests(since_mark=mark) == [], "resync without --now contacted the secondary"


def test_resync_repo_now_runs_that_repository(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("team/a", "team/b", "team/c"):
        primary_pusher.push_tree(name, oci_image(name), "v1")
    config = write_geo_config(tmp_path / "geo", primary, [secondary], key_pair)
    assert sync_json(capsys, config)[0] == 0
    # the secondary loses team/a's tag; a resync of team/a brings it back
    digest = tag_digests(secondary_pusher, "team/a")["v1"]
    assert secondary_pusher.delete_manifest("team/a", digest).status_code == 202

    code, out, _ = cli(capsys, config, "resync", "team/a", "--now")
    assert code == 0, out
    assert re.fullmatch(
        r"secondary: 1 repositories synced, 0 failed; blobs 0 copied, 0 mounted, 3 already present; "
        r"1 tags pushed, 0 deleted; 0 B in \d+\.\d s\n",
        out,
    ), out
    assert_same_content(primary_pusher, secondary_pusher, "team/a")
    assert states(config) == {"team/a": "synced", "team/b": "synced", "team/c": "synced"}

    # with other work queued, `resync REPO --now` runs REPO, and leaves the rest to `serve`
    code, out, _ = cli(capsys, config, "resync", "--all")
    assert (code, out.strip()) == (0, "3 repositories queued for resync")
    code, out, _ = cli(capsys, config, "resync", "team/b", "--now", "--json")
    assert code == 0
    summary = json.loads(out)["sites"]["secondary"]
    assert states(config) == {"team/a": "pending", "team/b": "synced", "team/c": "pending"}, (
        f"`resync team/b --now` ran more than team/b: {summary}"
    )
    assert summary["synced"] == 1


# --- progress -------------------------------------------------------------------------------------


SIZE = r"(?:\d{1,4} B|\d{1,4}\.\d [KMGTPE]iB)"


def load_for_progress(pusher: RawPusher) -> None:
    for i in range(3):
        pusher.push_tree(f"progress/r{i}", oci_image(f"p{i}", layers=2, layer_size=3 * 1024 * 1024), "v1")


def test_sync_progress_is_plain_lines_when_stderr_is_not_a_tty(
    primary: Distribution,
    secondary: Distribution,
    secondary2: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    load_for_progress(primary_pusher)
    engine = {"repository_concurrency": 1, "blob_concurrency": 1}
    config = write_geo_config(tmp_path / "geo", primary, [secondary], key_pair, engine=engine)

    # a child process whose stderr is a file: no carriage returns, no escape sequences
    result = geo("--config", str(config), "sync", "--once")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    assert re.fullmatch(
        r"secondary: 3 repositories synced, 0 failed; blobs 9 copied, 0 mounted, 0 already present; "
        r"3 tags pushed, 0 deleted; \d+\.\d MiB in \d+\.\d s\n",
        result.stdout,
    ), result.stdout

    # in-process, with the plain interval shortened so a short run draws: whole lines with "progress:"
    monkeypatch.setattr(geo_tui.progress, "PLAIN_INTERVAL", 0.02)
    config2 = write_geo_config(tmp_path / "geo2", primary, [secondary2], key_pair, engine=engine)
    code, _, err = run_cli(capsys, "--config", str(config2), "sync", "--once")
    assert code == 0, err
    assert "\r" not in err and "\x1b" not in err
    lines = [line for line in err.splitlines() if line.startswith("progress: ")]
    assert lines, f"no progress line on stderr:\n{err}"
    for line in lines:
        # sizes as geo_tui.figures writes them everywhere: "0 B" before the first byte, then "1.5 MiB"
        # before discovery has listed the primary: an empty bar that says so, never a full one over "0/0"
        assert re.fullmatch(
            r"progress: \[[#-]{30}\] \d+/3 repositories \(\d+ synced, \d+ failed\) "
            rf"{SIZE}, {SIZE}/s",
            line,
        ) or re.fullmatch(rf"progress: \[-{{30}}\] discovering repositories {SIZE}, {SIZE}/s", line), line
    assert any("/3 repositories" in line for line in lines), lines


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_sync_progress_is_a_bar_on_a_terminal(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_for_progress(primary_pusher)
    engine = {"repository_concurrency": 1, "blob_concurrency": 1}
    config = write_geo_config(tmp_path / "geo", primary, [secondary], key_pair, engine=engine)
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(geo_tui.progress, "TTY_INTERVAL", 0.02)
    assert main(["--config", str(config), "sync", "--once"]) == 0
    drawn = terminal.getvalue()
    assert "\r\x1b[2K[" in drawn and "progress: " not in drawn


# --- the primary down -----------------------------------------------------------------------------


def test_primary_unreachable_is_one_line_and_exit_1(
    primary: Distribution,
    secondary: Distribution,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    config = write_geo_config(tmp_path / "geo", primary, [secondary], key_pair)
    primary.stop()
    for command in (("sync", "--once"), ("verify",), ("resync", "--all", "--now")):
        result = geo("--config", str(config), *command)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("geo-tui: ")]
        assert len(errors) == 1 and "unreachable" in errors[0], result.stderr
