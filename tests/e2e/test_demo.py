"""`geo-tui demo` in a real terminal (tmux), as a newcomer runs it: the console comes up on three lab
registries, replication shows progress, the outage shows and heals, and quitting leaves nothing behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import geo_tui
from tests.support.terminal import Terminal, percents, processes_mentioning, terminals


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    with terminals(tmp_path) as open_terminal:
        yield open_terminal


def test_the_demo_shows_live_replication_and_leaves_nothing(
    terminal: Callable[..., Terminal], tmp_path: Path
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    term = terminal("demo", "--seed", "3", "--speed", "4", tmpdir=tmpdir)

    # the console comes up with the three sites, and the backfill reaches the secondaries
    screen = term.wait_for(
        lambda s: all(name in s for name in ("primary", "secondary-eu", "secondary-us")), 60, "the site cards"
    )
    assert "demo" in screen
    term.wait_for(lambda s: any(0 < p for p in percents(s)), 60, "replication progress")
    labs = list(tmpdir.iterdir())
    assert len(labs) == 1 and labs[0].name.startswith("geo-tui-demo-")
    assert (labs[0] / "config.toml").stat().st_mode & 0o777 == 0o600
    assert processes_mentioning(str(labs[0])), "the lab registries run in a child process"

    # the outage (at 25 s / speed 4, for 5 s) shows, then heals
    term.wait_for(lambda s: "✗" in s, 45, "the secondary's outage on its card")
    term.wait_for(lambda s: "100.00%" in s, 90, "a secondary fully synced")

    term.press("q")
    deadline = time.monotonic() + 30
    while not term.exit_file.exists():
        assert time.monotonic() < deadline, f"the demo did not quit; the screen was:\n{term.screen()}"
        time.sleep(0.2)
    assert term.exit_file.read_text().strip() == "0"
    assert list(tmpdir.iterdir()) == [], "the demo left files behind"
    assert processes_mentioning(str(labs[0])) == [], "the demo left processes running"


def test_killing_the_demo_stops_its_registries_and_removes_its_files(
    terminal: Callable[..., Terminal], tmp_path: Path
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    term = terminal("demo", "--seed", "5", tmpdir=tmpdir)
    term.wait_for(lambda s: "secondary-us" in s, 60, "the site cards")
    (lab,) = tmpdir.iterdir()
    os.kill(term.command_pid(), signal.SIGKILL)
    deadline = time.monotonic() + 20
    while processes_mentioning(str(lab)) or lab.exists():
        assert time.monotonic() < deadline, f"left behind: {processes_mentioning(str(lab))}, {lab.exists()}"
        time.sleep(0.2)


def test_a_console_that_crashes_exits_1_with_one_line_and_a_private_crash_log(
    terminal: Callable[..., Terminal], tmp_path: Path
) -> None:
    """The failure a wheel without its stylesheet had: the console cannot start. Status 1, one line
    naming the error and the crash log, the traceback in that 0600 log, and the demo cleaned up."""
    package = tmp_path / "pkg"
    shutil.copytree(
        Path(geo_tui.__file__).parent, package / "geo_tui", ignore=shutil.ignore_patterns("__pycache__")
    )
    (package / "geo_tui" / "console" / "app.tcss").unlink()
    tmpdir, state = tmp_path / "tmp", tmp_path / "state"
    tmpdir.mkdir()
    term = terminal(
        "demo",
        "--seed",
        "2",
        tmpdir=tmpdir,
        env={"PYTHONPATH": str(package), "XDG_STATE_HOME": str(state)},
        cwd=package,  # `python -m` looks in the working directory first
        keep_screen=True,
    )
    assert term.wait_exit(240) == 1
    lines = [line.strip() for line in term.last_screen() if not line.startswith("Pane is dead")]
    assert all(line.startswith("geo-tui") for line in lines), lines  # no traceback on the screen
    (crashed,) = [line for line in lines if line.startswith("geo-tui: the console crashed")]
    match = re.fullmatch(
        r"geo-tui: the console crashed: StylesheetError: .*app\.tcss.* \(full traceback in (\S+)\)", crashed
    )
    assert match, crashed
    log = Path(match.group(1))
    assert log.parent == state / "geo-tui"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "StylesheetError" in text
    assert list(tmpdir.iterdir()) == [], "the demo left files behind"
    assert processes_mentioning(str(tmpdir)) == [], "the demo left processes running"


def test_a_demo_whose_lab_registries_die_exits_1_and_says_so(
    terminal: Callable[..., Terminal], tmp_path: Path
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    term = terminal("demo", "--seed", "4", tmpdir=tmpdir, keep_screen=True)
    term.wait_for(lambda s: "secondary-us" in s, 60, "the site cards")
    (lab,) = tmpdir.iterdir()
    (child,) = [p for p in processes_mentioning(str(lab)) if "geo_tui.lab.site" in p]
    os.kill(int(child.split(":")[0]), signal.SIGKILL)
    assert term.wait_exit(60) == 1
    lines = term.last_screen()
    said = "geo-tui: the demo's lab registries were killed by SIGKILL"
    assert any(line.startswith(said) for line in lines), lines
    assert list(tmpdir.iterdir()) == [], "the demo left files behind"
    assert processes_mentioning(str(lab)) == [], "the demo left processes running"
