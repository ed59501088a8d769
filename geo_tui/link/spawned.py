"""`SpawnedEngine`: the console's own engine, run in a child process and driven through its API.

Why a process and not a thread: a backfill at full speed keeps the engine's interpreter busy (HTTP
pool bookkeeping for hundreds of queued requests, TLS, JSON), and an engine thread in the console's
process holds the interpreter lock while the operator's keys wait for it (p99 ~180 ms measured with
bench/console_latency.py). In a process of its own the engine cannot delay a keypress.

The child is ``geo-tui serve --console-child``: the same engine, receiver and API as `serve`, so a
second console on the same config attaches to it. It runs in a session of its own, so the terminal's
signals (Ctrl-C, the hangup of a dropped SSH link) reach only the console, and it stops when its
stdin closes: when the console quits, and also when the console dies (kill -9 included).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import subprocess
import sys
import threading

from geo_tui.config import Config
from geo_tui.engine.tracking import RepositoryRow, Tracking, tracking_database
from geo_tui.engine.wire import CHILD_READY

from .client import EngineClient
from .link import _setter
from .remote import RemoteLink

__all__ = ["EngineStartError", "SpawnedEngine"]

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0  # serve gives copies in flight 5 s, then closes the database


class EngineStartError(Exception):
    """The console's engine process did not start; ``str(e)`` is what it said, in one line."""


class SpawnedEngine(RemoteLink):
    """An engine in a child process that this console starts, attaches to, and stops when it quits.

    `launch()` starts the process and returns at once; `wait_ready()` waits until its API listens and
    raises EngineStartError with the child's own error line (a port in use, the database held by
    another engine, ...) so the CLI can print it before the console takes the screen. `start()` alone
    does both without waiting: it attaches once the API listens, or reports why it never did as the
    engine's failure in a batch.
    """

    owns_engine = True

    def __init__(self, config: Config, *, mode: str = "embedded") -> None:
        super().__init__("", token=config.api.token if config.api is not None else None)
        self.mode = mode
        self.config = config
        self._process: subprocess.Popen[str] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._ready = threading.Event()
        self._stopping_engine = threading.Event()
        self._stderr_reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def launch(self) -> None:
        if self._process is not None:
            return
        self._process = subprocess.Popen(
            [sys.executable, "-m", "geo_tui", "--config", str(self.config.path), "serve", "--console-child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read_stdout, name="geo-tui-engine-stdout", daemon=True).start()
        self._stderr_reader = threading.Thread(
            target=self._read_stderr, name="geo-tui-engine-stderr", daemon=True
        )
        self._stderr_reader.start()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Return once the engine's API listens; EngineStartError if the process ended or hung first."""
        assert self._process is not None, "launch() first"
        if self._ready.wait(timeout) and self.target:
            return
        if self._process.poll() is None:
            self._end_process()
            raise EngineStartError(f"the engine process did not start within {timeout:.0f} s{self._said()}")
        status = self._process.wait()
        raise EngineStartError(f"the engine process exited with status {status}{self._said()}")

    def start(self) -> None:
        self.launch()
        threading.Thread(target=self._attach, name="geo-tui-engine-watch", daemon=True).start()

    def _attach(self) -> None:
        """Attach once the API listens, then watch the process until it ends."""
        try:
            self.wait_ready()
        except EngineStartError as exc:
            if not self._stopping_engine.is_set():
                self._inbox.put(_setter("failure", str(exc)))
            return
        if self._stopping_engine.is_set():
            return
        super().start()
        self._watch()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Detach, then stop the engine process cleanly (copies in flight finish or stay pending)."""
        self._stopping_engine.set()
        super().stop(timeout=min(timeout, 5.0))
        self._end_process(timeout)

    async def _load_rows(self, client: EngineClient) -> list[RepositoryRow]:
        # The database is on this host by construction: reading it beats paging through the API (100k
        # rows on screen 1.5 s after launch instead of 2.8 s). Updates streamed meanwhile still win.
        return await asyncio.to_thread(self._read_rows)

    def _read_rows(self) -> list[RepositoryRow]:
        tracking = Tracking(tracking_database(self.config.engine), read_only=True)
        try:
            return tracking.rows()
        finally:
            tracking.close()

    # -- the child process ---------------------------------------------------------------------

    def _end_process(self, timeout: float = STOP_TIMEOUT) -> None:
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # the child's cue to stop
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def _read_stdout(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            word, _, address = line.strip().partition(" ")
            if word == CHILD_READY and address:
                self.target = address
                self._ready.set()
        self._ready.set()  # the process ended: wait_ready() tells why

    def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            if line.strip():
                self._stderr.append(line.rstrip("\n"))

    def _said(self) -> str:
        """The child's last line on stderr (its one-line error), once all of it has been read."""
        if self._stderr_reader is not None:
            self._stderr_reader.join(2.0)  # the process has ended: its stderr is at EOF or nearly
        lines = [line.removeprefix("geo-tui: ") for line in self._stderr]
        return f": {lines[-1]}" if lines else ""

    def _watch(self) -> None:
        assert self._process is not None
        status = self._process.wait()
        if self._stopping_engine.is_set():
            return
        reason = f"the engine process exited with status {status}{self._said()}"
        self._inbox.put(_setter("failure", reason))
        super().stop(timeout=0)  # nothing to reconnect to
