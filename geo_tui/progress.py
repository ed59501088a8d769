"""Progress of a headless run on stderr: a bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import TextIO

from geo_tui.engine import BytesCopied, Engine, Update
from geo_tui.figures import rate, size

__all__ = ["ProgressReporter"]

BAR_WIDTH = 30
TTY_INTERVAL = 0.2
PLAIN_INTERVAL = 10.0


class ProgressReporter:
    """Draws progress while an engine pass runs. Use as a context manager around the pass."""

    def __init__(self, engine: Engine, sites: Sequence[str], stream: TextIO) -> None:
        self._engine = engine
        self._sites = list(sites)
        self._stream = stream
        self._tty = stream.isatty()
        self._bytes = 0
        self._started = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe = engine.subscribe(self._on_update)

    def _on_update(self, update: Update) -> None:
        if isinstance(update, BytesCopied):
            self._bytes += update.nbytes

    def __enter__(self) -> ProgressReporter:
        self._task = asyncio.get_running_loop().create_task(self._draw_forever())
        return self

    def __exit__(self, *exc: object) -> None:
        self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
        if self._tty:
            self._stream.write("\r\x1b[2K")
            self._stream.flush()

    def line(self) -> str:
        counts = self._engine.tracking.counts(self._sites)
        total = sum(c.total for c in counts.values())
        synced = sum(c.synced for c in counts.values())
        failed = sum(c.failed for c in counts.values())
        elapsed = max(time.monotonic() - self._started, 1e-6)
        moved = f"{size(self._bytes)}, {rate(self._bytes / elapsed)}"
        if not total:
            # before discovery has listed anything: an empty bar, not a full one over "0/0"
            return f"[{'-' * BAR_WIDTH}] discovering repositories {moved}"
        done = synced + failed
        fraction = done / total
        filled = int(BAR_WIDTH * fraction)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return f"[{bar}] {done}/{total} repositories ({synced} synced, {failed} failed) {moved}"

    async def _draw_forever(self) -> None:
        interval = TTY_INTERVAL if self._tty else PLAIN_INTERVAL
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                text = self.line()
                if self._tty:
                    self._stream.write("\r\x1b[2K" + text)
                else:
                    self._stream.write("progress: " + text + "\n")
                self._stream.flush()
