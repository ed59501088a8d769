"""`geo-tui demo` in a real terminal (tmux), as a newcomer runs it: the console comes up on three lab
registries, replication shows progress, the outage shows and heals, and quitting leaves nothing behind."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.binaries import find_binary

WIDTH, HEIGHT = 120, 36


class Terminal:
    """One tmux session running a command, read as a person would read the screen."""

    def __init__(self, tmux: str, command: list[str], env: dict[str, str], exit_file: Path) -> None:
        # A server of its own (its socket in the test's directory): a running server would give the
        # session its own environment instead of `env`.
        self.tmux = [tmux, "-S", str(exit_file.parent / "tmux.sock")]
        self.name = f"geo-tui-test-{uuid.uuid4().hex[:8]}"
        shell = " ".join(shlex.quote(part) for part in command) + f"; echo $? > {shlex.quote(str(exit_file))}"
        subprocess.run(
            [
                *self.tmux,
                "new-session",
                "-d",
                "-s",
                self.name,
                "-x",
                str(WIDTH),
                "-y",
                str(HEIGHT),
                "sh",
                "-c",
                shell,
            ],
            check=True,
            env=env,
        )
        self.exit_file = exit_file

    def screen(self) -> str:
        result = subprocess.run(
            [*self.tmux, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True
        )
        return result.stdout

    def press(self, *keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.25)
        pytest.fail(f"timed out waiting for {what}; the screen was:\n{screen}", pytrace=False)

    def command_pid(self) -> int:
        """The pid of the command: the child of the pane's shell."""
        result = subprocess.run(
            [*self.tmux, "display-message", "-p", "-t", self.name, "#{pane_pid}"],
            capture_output=True,
            text=True,
            check=True,
        )
        shell = result.stdout.strip()
        children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    tmux = find_binary("tmux")
    opened: list[Terminal] = []

    def open_terminal(*args: str, tmpdir: Path) -> Terminal:
        env = {**os.environ, "TMPDIR": str(tmpdir), "TERM": "xterm-256color"}
        env.pop("TMUX", None)
        term = Terminal(tmux, [sys.executable, "-m", "geo_tui", *args], env, tmp_path / "exit-status")
        opened.append(term)
        return term

    yield open_terminal
    for term in opened:
        term.close()


def _percents(screen: str) -> list[float]:
    return [float(p) for p in re.findall(r"(\d{1,3}\.\d{2})\s?%", screen)]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


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
    term.wait_for(lambda s: any(0 < p for p in _percents(s)), 60, "replication progress")
    labs = list(tmpdir.iterdir())
    assert len(labs) == 1 and labs[0].name.startswith("geo-tui-demo-")
    assert (labs[0] / "config.toml").stat().st_mode & 0o777 == 0o600
    assert _processes_mentioning(str(labs[0])), "the lab registries run in a child process"

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
    assert _processes_mentioning(str(labs[0])) == [], "the demo left processes running"


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
    while _processes_mentioning(str(lab)) or lab.exists():
        assert time.monotonic() < deadline, f"left behind: {_processes_mentioning(str(lab))}, {lab.exists()}"
        time.sleep(0.2)
