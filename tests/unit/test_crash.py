"""A bug ends with status 1, one line naming the error and the crash log, and a 0600 log without secrets."""

from __future__ import annotations

import argparse
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from geo_tui import cli
from geo_tui.config import Config
from geo_tui.crash import crash_dir

SECRET = "n0tif1cationSecretValue0123456789"
TOKEN = "apiTokenValue-abcdefghijklmnop"


def _write_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[engine]
database = "{tmp_path / "tracking.db"}"

[notifications]
listen = "127.0.0.1:1"
secret = "{SECRET}"

[api]
listen = "127.0.0.1:2"
token = "{TOKEN}"

[primary]
name = "primary"
registry = "http://127.0.0.1:9"

[[secondaries]]
name = "eu"
registry = "http://127.0.0.1:10"
"""
    )
    path.chmod(0o600)
    return path


def test_a_command_that_crashes_says_so_in_one_line_and_logs_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))

    async def crash(config: Config, args: argparse.Namespace, sites: Any) -> int:
        raise RuntimeError(f"a bug holding\n{config.notifications.secret.reveal()} and Bearer {TOKEN}")

    monkeypatch.setitem(cli._COMMANDS, "status", crash)
    status = cli.main(["--config", str(_write_config(tmp_path)), "status"])

    assert status == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    match = re.fullmatch(
        r"geo-tui: the command crashed: RuntimeError: a bug holding .* \(full traceback in (.+)\)\n", err
    )
    assert match, err
    log = Path(match.group(1))
    assert log.parent == state / "geo-tui" == crash_dir()
    assert re.fullmatch(r"crash-\d{8}T\d{6}\.\d{6}Z-\d+\.log", log.name)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in crash" in text and "RuntimeError" in text
    for secret in (SECRET, TOKEN):
        assert secret not in text and secret not in err


def test_without_a_writable_state_directory_the_line_still_names_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))  # a file: no directory can be made under it

    async def crash(config: Config, args: argparse.Namespace, sites: Any) -> int:
        raise KeyError("missing")

    monkeypatch.setitem(cli._COMMANDS, "status", crash)
    assert cli.main(["--config", str(_write_config(tmp_path)), "status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("geo-tui: the command crashed: KeyError: 'missing' (no crash log: ")
    assert err.count("\n") == 1
