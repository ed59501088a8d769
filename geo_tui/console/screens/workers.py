"""The workers: every `geo-tui serve` process sharing the tracking database (issue 16), one line each.

Host, pid, heartbeat age, state, repositories in flight, throughput, listen addresses and the worker's id
(host/pid/start time, as the leases name it); under a worker, the repositories it holds leases on. A
worker whose heartbeat is older than the engine's threshold reads "✗ stale", in words as well as colour,
so it reads on a 16-colour terminal. The app asks the engine for the workers once a second while this
screen is shown, and hands each answer to `show`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from rich.cells import cell_len
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import HorizontalScroll, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Header, Static

from geo_tui.console.widgets.key_hints import key_hint_bar
from geo_tui.engine.model import WorkerInfo, WorkersView
from geo_tui.figures import age, ago, count, rate
from geo_tui.link.link import ReadFailed

__all__ = ["LOADING", "REFRESH_INTERVAL", "WorkersScreen", "workers_summary", "workers_table"]

LOADING = "asking the engine for its workers…"
REFRESH_INTERVAL = 1.0
SHOWN_REPOSITORIES = 6  # per worker; the rest is counted
SIDEWAYS_STEP = 12  # cells a left or right key scrolls the table
_COLUMNS = ("host", "pid", "heartbeat", "state", "in flight", "throughput", "listen", "id")
_RIGHT = {"pid", "in flight", "throughput"}


def _pad(text: str, width: int, right: bool = False) -> str:
    gap = " " * max(0, width - cell_len(text))
    return gap + text if right else text + gap


def _cells(worker: WorkerInfo) -> tuple[str, ...]:
    state = "✗ stale" if worker.stale else "✓ live"  # the heartbeat's age is the column before
    return (
        worker.host,
        str(worker.pid) if worker.pid else "?",
        ago(0.0, worker.heartbeat_age),  # an age the engine measured: "how long before now"
        state,
        count(worker.in_flight),
        rate(worker.throughput) if worker.throughput is not None else "—",
        ", ".join(worker.listen) or "—",
        worker.id,
    )


def workers_summary(view: WorkersView) -> str:
    """One line above the table: how many workers, how many stale, and the threshold."""
    stale = sum(1 for w in view.workers if w.stale)
    noun = "worker" if len(view.workers) == 1 else "workers"
    parts = [f"{count(len(view.workers))} {noun}"]
    if stale:
        parts.append(f"{count(stale)} stale")
    parts.append(f"in flight {count(sum(w.in_flight for w in view.workers))}")
    parts.append(f"stale after {age(view.stale_after)} without a heartbeat")
    return " · ".join(parts)


def workers_table(view: WorkersView) -> Content:
    """One line per worker (stale ones first, each group by host), its leased repositories below it."""
    if not view.workers:
        return Content("no worker has registered in this tracking database yet")
    workers = sorted(view.workers, key=lambda w: (not w.stale, w.host, w.pid))
    rows = [_cells(w) for w in workers]
    widths = [max(cell_len(title), *(cell_len(r[i]) for r in rows)) for i, title in enumerate(_COLUMNS)]
    header = "  ".join(
        _pad(t.upper(), w, t in _RIGHT) for t, w in zip(_COLUMNS, widths, strict=True)
    ).rstrip()
    lines = [Content.assemble((header, "bold"))]
    for worker, cells in zip(workers, rows, strict=True):
        text = "  ".join(
            _pad(c, w, t in _RIGHT) for c, w, t in zip(cells, widths, _COLUMNS, strict=True)
        ).rstrip()
        lines.append(Content.assemble((text, "bold $text-error") if worker.stale else text))
        held = [f"{site}/{repository}" for site, repository in worker.repositories]
        if held:
            more = len(held) - SHOWN_REPOSITORIES
            shown = ", ".join(held[:SHOWN_REPOSITORIES]) + (f" and {count(more)} more" if more > 0 else "")
            lines.append(Content.assemble(("    copying " + shown, "$text-muted")))
    return Content("\n").join(lines)


class WorkersScreen(Screen[None]):
    """The workers view; `request` asks the engine for them again (the answer comes back to `show`)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="workers.back"),
        Binding("W", "back", "Back", show=False, id="workers.toggle"),
        Binding("right", "sideways(1)", "Scroll right", show=False, id="workers.right"),
        Binding("left", "sideways(-1)", "Scroll left", show=False, id="workers.left"),
    ]

    DEFAULT_CSS = """
    WorkersScreen > VerticalScroll { padding: 0 1; }
    WorkersScreen #workers-scroll { height: auto; scrollbar-size-horizontal: 1; }
    WorkersScreen #workers-table { width: auto; text-wrap: nowrap; }
    WorkersScreen #workers-summary { color: $text-primary; text-style: bold; margin-bottom: 1; }
    WorkersScreen #workers-status { color: $text-warning; }
    """

    def __init__(self, request: Callable[[], None], clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.request = request
        self.clock = clock
        self.view: WorkersView | None = None
        self.failure: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        # Many workers scroll down, a long line (listen addresses) sideways, never wrapped under its row.
        with VerticalScroll(id="workers-body"):
            yield Static(LOADING, id="workers-summary")
            with HorizontalScroll(id="workers-scroll"):
                yield Static("", id="workers-table")
            yield Static("", id="workers-status")
        yield key_hint_bar()

    def on_mount(self) -> None:
        self.sub_title = "workers"
        # Up and down scroll the screen; left and right (which it cannot) come to `sideways`.
        self.query_one("#workers-scroll").can_focus = False
        self.query_one("#workers-body").focus()
        self._paint()  # an answer that came before the screen was mounted
        self.set_interval(REFRESH_INTERVAL, self._refresh_if_shown)

    def _refresh_if_shown(self) -> None:
        if self.is_current:
            self.request()

    def show(self, answer: object) -> None:
        """Show a `WorkersView`, or keep the last one and say why there is no fresh one (`ReadFailed`)."""
        if isinstance(answer, WorkersView):
            self.view, self.failure = answer, None
        elif isinstance(answer, ReadFailed):
            self.failure = answer.message
        else:
            return
        if self.is_mounted:
            self._paint()

    def _paint(self) -> None:
        if self.view is not None:
            self.query_one("#workers-summary", Static).update(workers_summary(self.view))
            self.query_one("#workers-table", Static).update(workers_table(self.view))
        status = ""
        if self.failure is not None:
            shown = "what is shown is stale" if self.view is not None else "nothing to show yet"
            status = f"no answer from the engine ({shown}): {self.failure}"
        self.query_one("#workers-status", Static).update(Content(status))

    def action_sideways(self, direction: int) -> None:
        """Scroll the table a column's worth sideways, at once: the scroll's own keys move one cell a
        press, and a scroll left for the next refresh drops the keys that come before it (a held key)."""
        table = self.query_one("#workers-scroll", HorizontalScroll)
        table.scroll_to(x=table.scroll_x + direction * SIDEWAYS_STEP, animate=False, immediate=True)

    def action_back(self) -> None:
        self.dismiss()
