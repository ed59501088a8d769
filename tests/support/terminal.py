"""A real terminal for the console: a tmux session running a command, read as a person reads the screen."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.binaries import find_binary

WIDTH, HEIGHT = 120, 36


class Terminal:
    """One tmux session running a command, read as a person would read the screen."""

    def __init__(
        self,
        tmux: str,
        command: list[str],
        env: dict[str, str],
        exit_file: Path,
        *,
        keep_screen: bool = False,
        cwd: Path | None = None,
    ) -> None:
        # A server of its own (its socket in the test's directory): a running server would give the
        # session its own environment instead of `env`.
        self.tmux = [tmux, "-S", str(exit_file.parent / "tmux.sock")]
        self.name = f"geo-tui-test-{uuid.uuid4().hex[:8]}"
        shell = " ".join(shlex.quote(part) for part in command)
        shell += f"; echo $? > {shlex.quote(str(exit_file))}"
        # Textual draws on stderr, so what the command prints after the console is gone is read from the
        # screen: with `keep_screen` the pane stays after the command ends (`last_screen`).
        config = exit_file.parent / "tmux.conf"
        config.write_text("set -g remain-on-exit on\n" if keep_screen else "")
        self.tmux.insert(1, "-f")
        self.tmux.insert(2, str(config))
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
            cwd=cwd,
        )
        self.exit_file = exit_file

    def screen(self) -> str:
        result = subprocess.run(
            [*self.tmux, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True
        )
        return result.stdout

    def last_screen(self) -> list[str]:
        """The lines on the screen, wrapped lines joined (after the command ended, with `keep_screen`)."""
        result = subprocess.run(
            [*self.tmux, "capture-pane", "-p", "-J", "-t", self.name], capture_output=True, text=True
        )
        return [line for line in result.stdout.splitlines() if line.strip()]

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

    def wait_exit(self, timeout: float) -> int:
        """The command's exit status, once it has ended."""
        deadline = time.monotonic() + timeout
        while not self.exit_file.exists() or not self.exit_file.read_text().strip():
            if time.monotonic() > deadline:
                pytest.fail(f"the command did not end; the screen was:\n{self.screen()}", pytrace=False)
            time.sleep(0.2)
        return int(self.exit_file.read_text())

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


def processes_mentioning(text: str) -> list[str]:
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


def percents(screen: str) -> list[float]:
    """The percentages on a screen (the site cards' percent synced)."""
    return [float(p) for p in re.findall(r"(\d{1,3}\.\d{2})\s?%", screen)]


@contextlib.contextmanager
def terminals(tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    """Open terminals running geo-tui (`python -m geo_tui ARGS`, or `command`); close them all at the end.
    `tmpdir` is the command's TMPDIR; `env` adds to the environment, and `unset` removes from it."""
    tmux = find_binary("tmux")
    opened: list[Terminal] = []

    def open_terminal(
        *args: str,
        tmpdir: Path,
        command: Sequence[str] = (sys.executable, "-m", "geo_tui"),
        env: dict[str, str] | None = None,
        unset: Sequence[str] = (),
        keep_screen: bool = False,
        cwd: Path | None = None,
    ) -> Terminal:
        environment = {**os.environ, "TMPDIR": str(tmpdir), "TERM": "xterm-256color", **(env or {})}
        for name in ("TMUX", *unset):
            environment.pop(name, None)
        term = Terminal(
            tmux,
            [*command, *args],
            environment,
            tmp_path / "exit-status",
            keep_screen=keep_screen,
            cwd=cwd,
        )
        opened.append(term)
        return term

    try:
        yield open_terminal
    finally:
        for term in opened:
            term.close()
