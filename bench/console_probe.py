"""The console under measurement: run by `bench/console_latency.py` inside a pseudo-terminal.

    python bench/console_probe.py CONFIG RESULTS STATUS ROWS

It runs the real console (`make_app` over the engine in a child process as `geo-tui` runs it, `SpawnedEngine`;
Textual's Linux driver on a real tty) and
records, in this process, with bench-only wrappers (nothing in geo_tui changes):

- every key event: its `time` (Textual stamps it with time.monotonic() when its input thread parses the
  key), which part of the screen it should change, and what that part showed just before;
- every frame: when the app finished it, what it drew (the table's cursor row, sort, filter, the filter
  prompt's text, the screen), and how many characters the driver had been handed by then;
- every flush of the driver's writer thread to the tty (time and characters written so far), so a frame's
  end is when its last byte left for the terminal; and the UI thread's CPU time at keys and frames;
- the UI loop's lag (a 10 ms asyncio sleep's overshoot), full garbage collections, the bytes the
  engine reported copied (from the drained batches), and every 20 ms the UI thread's scheduler figures
  (/proc schedstat: time on a CPU, and time runnable but waiting for one).

A key's latency is from its event's `time` to the flush of the first frame that shows its effect (the part
it changes differs from what was shown when the key arrived). RESULTS gets the raw records as JSON at exit;
STATUS is rewritten every 20 ms with the backfill's state and what has the focus, so the driving process
knows when the backfill is over and when the filter prompt has opened or closed.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Before Textual: the console package sets the frame rate Textual reads when it loads.
import geo_tui.console  # noqa: E402, F401

# isort: split
from textual import events  # noqa: E402
from textual.app import ScreenStackError  # noqa: E402
from textual.drivers.linux_driver import LinuxDriver  # noqa: E402
from textual.geometry import Region  # noqa: E402
from textual.strip import Strip  # noqa: E402
from textual.widgets import Input  # noqa: E402

from geo_tui.config import load_config  # noqa: E402
from geo_tui.console.app import GeoTuiApp, make_app  # noqa: E402
from geo_tui.console.screens.detail import RepositoryDetailScreen  # noqa: E402
from geo_tui.console.tuning import applied  # noqa: E402
from geo_tui.console.widgets.repository_table import RepositoryTable  # noqa: E402
from geo_tui.link.link import Batch  # noqa: E402
from geo_tui.link.spawned import SpawnedEngine  # noqa: E402

LAG_PERIOD = 0.010
TABLE_KEYS = {"up": "cursor", "down": "cursor", "pageup": "cursor", "pagedown": "cursor", "o": "sort"}
TABLE_KEYS |= {"O": "sort", "enter": "screen", "slash": "prompt"}


class Probe:
    """What the console drew and when, filled by the wrappers below (all on the UI thread but flushes)."""

    def __init__(self) -> None:
        self.drawn: dict[str, Any] = {"cursor": None, "sort": None, "filter": None, "prompt": 0}
        self.drawn |= {"input": None, "screen": None}
        self.keys: list[dict[str, Any]] = []
        self.frames: list[tuple[float, int, dict[str, Any]]] = []
        self.flushes: list[tuple[float, int]] = []
        self.queued = 0  # characters handed to the driver
        self.written = 0  # characters the writer thread has written
        self.lag: list[tuple[float, float]] = []
        # The UI thread's scheduler figures (time, seconds on a CPU, seconds runnable but waiting for one).
        self.sched: list[tuple[float, float, float]] = []
        self.copied: list[tuple[float, int]] = []  # (drain time, bytes in that batch)
        self.full_gcs: list[tuple[float, float, float]] = []  # start, end, CPU seconds of the thread
        self.done_at: float | None = None
        self.rows = 0
        self._gc_began = self._gc_cpu = 0.0

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                self._gc_began, self._gc_cpu = time.monotonic(), time.thread_time()
            else:
                cpu = time.thread_time() - self._gc_cpu
                self.full_gcs.append((self._gc_began, time.monotonic(), cpu))


PROBE = Probe()


class TimedFile:
    """The tty as the writer thread sees it: counts characters and notes when each flush returns."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def write(self, text: str) -> int:
        PROBE.written += len(text)
        return int(self._file.write(text))

    def flush(self) -> None:
        self._file.flush()
        PROBE.flushes.append((time.monotonic(), PROBE.written))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


class TimedDriver(LinuxDriver):
    """Textual's own driver, counting what the app hands it."""

    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(app, **options)
        self._file = TimedFile(self._file)

    def write(self, data: str) -> None:
        PROBE.queued += len(data)
        super().write(data)


def instrument_widgets() -> None:
    """Note what the table and the prompt draw, line by line (the compositor calls these per frame)."""
    table_line = RepositoryTable.render_line
    input_lines = Input.render_lines

    def table_render_line(self: RepositoryTable, y: int) -> Strip:
        strip = table_line(self, y)
        drawn = PROBE.drawn
        if y == 0:
            drawn["sort"] = (self.sort_column, self.sort_reverse)
        index = round(self.scroll_y) + y - 1
        if y and index == self._rows.cursor and index < len(self._rows.order):
            drawn["cursor"] = self._rows.order[index].key
        drawn["filter"] = (self._rows._needle, self._rows._invert)
        return strip

    def prompt_render_lines(self: Input, crop: Region) -> list[Strip]:
        # The prompt's lines come through render_lines (its render_line is not always called).
        strips = input_lines(self, crop)
        PROBE.drawn["input"] = self.value
        PROBE.drawn["prompt"] += 1
        return strips

    RepositoryTable.render_line = table_render_line  # type: ignore[method-assign]
    Input.render_lines = prompt_render_lines  # type: ignore[method-assign]


def instrument_app(app: GeoTuiApp, expected_rows: int) -> None:
    display, on_event, drain = app._display, app.on_event, app.link.drain

    def timed_display(screen: Any, renderable: Any) -> None:
        PROBE.drawn["screen"] = type(screen).__name__
        before = PROBE.queued
        display(screen, renderable)
        if PROBE.queued != before:
            drawn = dict(PROBE.drawn, cpu=time.thread_time())
            PROBE.frames.append((time.monotonic(), PROBE.queued, drawn))

    async def timed_on_event(event: events.Event) -> None:
        if isinstance(event, events.Key) and not event.is_forwarded:
            part = what_changes(app, event.key)
            before = PROBE.drawn.get(part or "")
            PROBE.keys.append(
                {
                    "key": event.key,
                    "time": event.time,
                    "part": part,
                    "before": before,
                    "cpu": time.thread_time(),
                    "handled": time.monotonic(),  # when the app took it off its queue
                }
            )
        await on_event(event)

    def counted_drain() -> Batch:
        batch = drain()
        copied = sum(batch.bytes_by_site.values())
        now = time.monotonic()
        if copied:
            PROBE.copied.append((now, copied))
        if batch.snapshot is not None and PROBE.done_at is None and PROBE.copied:
            counts = [s.counts for s in batch.snapshot.sites if s.role != "primary" and s.counts]
            synced = sum(c.synced for c in counts)
            if synced >= expected_rows and not batch.snapshot.in_flight:
                PROBE.done_at = now
        PROBE.rows = app.query_one(RepositoryTable).total_count
        return batch

    app._display = timed_display  # type: ignore[method-assign]
    app.on_event = timed_on_event  # type: ignore[method-assign]
    app.link.drain = counted_drain  # type: ignore[method-assign]


def what_changes(app: GeoTuiApp, key: str) -> str | None:
    """The part of the screen this key should change, given where it lands."""
    if isinstance(app.focused, Input):
        return "filter" if key == "enter" else (None if key == "escape" else "input")
    if isinstance(app.screen, RepositoryDetailScreen):
        return "screen" if key == "escape" else None
    if isinstance(app.focused, RepositoryTable):
        table = app.focused
        # A cursor key at the edge it points to changes nothing: counting it would time the next re-sort.
        at_top, at_end = table._rows.cursor <= 0, table._rows.cursor >= len(table._rows.order) - 1
        if (key in ("up", "pageup") and at_top) or (key in ("down", "pagedown") and at_end):
            return None
        return TABLE_KEYS.get(key)
    return None


async def measure_lag(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        await asyncio.sleep(LAG_PERIOD)
        PROBE.lag.append((time.monotonic(), loop.time() - started - LAG_PERIOD))


def ui_thread_schedstat(tid: int) -> tuple[float, float] | None:
    """Seconds the thread ran, and seconds it was runnable but waited for a CPU (Linux schedstat)."""
    try:
        ran, waited, _ = Path(f"/proc/self/task/{tid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return None
    return int(ran) / 1e9, int(waited) / 1e9


def report_status(app: GeoTuiApp, path: Path, stop: threading.Event, ui_tid: int) -> None:
    # Read from another thread without locks: references only, good enough for pacing the typist.
    while not stop.wait(0.02):
        sched = ui_thread_schedstat(ui_tid)
        if sched is not None:
            PROBE.sched.append((time.monotonic(), *sched))
        try:
            focused, screen = app.focused, app.screen
        except ScreenStackError:
            # Before its first screen is up, the app has no focus to ask: an uncaught error here would
            # end this thread, and the typist would wait for a status that never comes.
            continue
        status = {
            "focus": type(focused).__name__,
            "screen": type(screen).__name__,
            "frames": len(PROBE.frames),
            "keys": len(PROBE.keys),
            "copied": sum(n for _, n in PROBE.copied),
            "rows": PROBE.rows,
            "done_at": PROBE.done_at,
            "now": time.monotonic(),
        }
        path.with_suffix(".tmp").write_text(json.dumps(status))
        path.with_suffix(".tmp").replace(path)


def heap_census() -> dict[str, Any]:
    """What the cycle collector walks at the end: how many objects, of which types, and how many frozen."""
    objects = gc.get_objects()
    kinds = collections.Counter(type(o).__qualname__ for o in objects)
    return {"tracked": len(objects), "frozen": gc.get_freeze_count(), "top": kinds.most_common(12)}


def main(argv: list[str]) -> int:
    config_path, results_path, status_path = (Path(a) for a in argv[:3])
    expected_rows = int(argv[3])
    logging.getLogger("geo_tui").handlers[:] = [logging.NullHandler()]  # as the CLI does
    logging.getLogger("geo_tui").propagate = False
    config = load_config(config_path)
    link = SpawnedEngine(config)
    link.launch()
    link.wait_ready()
    app = make_app(config, link=link)
    app.driver_class = TimedDriver
    instrument_widgets()
    instrument_app(app, expected_rows)
    gc.callbacks.append(PROBE.on_gc)
    stop_lag, stop_status = asyncio.Event(), threading.Event()

    async def run() -> None:
        lag = asyncio.create_task(measure_lag(stop_lag))
        try:
            await app.run_async()
        finally:
            stop_lag.set()
            await lag

    reporter = threading.Thread(
        target=report_status, args=(app, status_path, stop_status, threading.get_native_id()), daemon=True
    )
    reporter.start()
    try:
        with applied():  # as `geo-tui` runs the console (bench/console_latency.py --tuning says which)
            asyncio.run(run())
    finally:
        stop_status.set()
        results = {
            "keys": PROBE.keys,
            "frames": [(t, n, drawn) for t, n, drawn in PROBE.frames],
            "flushes": PROBE.flushes,
            "lag": PROBE.lag,
            "copied": PROBE.copied,
            "full_gcs": PROBE.full_gcs,
            "done_at": PROBE.done_at,
            "heap": heap_census(),
            "sched": PROBE.sched,
        }
        results_path.write_text(json.dumps(results, default=list))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
