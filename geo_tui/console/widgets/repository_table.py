"""The repositories pane: one line per (secondary site, repository), drawn with Textual's line API.

Only the lines on screen are formatted (toolong's `log_lines.py` habit), so 100,000 rows scroll like 100:
never one widget per row (Textualize/textual #5163), never a DataTable that size. The rows, their filters,
order and cursor live in `repository_rows` (no Textual); what a line reads in `repository_lines`; how it
is drawn and cached in `repository_paint`; the cursor's keys and scrolling in `repository_cursor`.
Every method runs on the UI thread; workers hand rows over with `post_message` (textual #5137).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from rich.style import Style
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.strip import Strip

from geo_tui.engine import RepositoryRow, SyncState

from .repository_cursor import RowCursorView
from .repository_paint import RowPainter
from .repository_rows import SORT_COLUMNS, Key

__all__ = ["SORT_COLUMNS", "RepositoryTable"]


class RepositoryTable(RowCursorView, can_focus=True):
    """Every tracked (site, repository) pair, problems first; filter, sort, mark, select."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False, id="repositories.cursor_up"),
        Binding("down,j", "cursor_down", "Down", show=False, id="repositories.cursor_down"),
        Binding("pageup", "page_up", "Page up", show=False, id="repositories.page_up"),
        Binding("pagedown", "page_down", "Page down", show=False, id="repositories.page_down"),
        Binding("home", "first", "First", show=False, id="repositories.first"),
        Binding("end", "last", "Last", show=False, id="repositories.last"),
        Binding("enter", "select", "Details", id="repositories.select"),
        Binding("space", "toggle_mark", "Mark", id="repositories.toggle_mark"),
        Binding("o", "cycle_sort", "Sort", id="repositories.cycle_sort"),
        Binding("O", "reverse_sort", "Reverse", show=False, id="repositories.reverse_sort"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "repository-table--header",
        "repository-table--cursor",
        "repository-table--mark",
        "repository-table--failed",
        "repository-table--started",
        "repository-table--pending",
        "repository-table--synced",
        "repository-table--muted",
        "repository-table--error",
    }

    # The $text-* shades stay readable on light and dark themes; with 16 colours (textual-dark) failed,
    # pending, running and synced come out bright red, yellow, cyan and green. The glyphs carry the
    # meaning where colours merge (monochrome, other themes).
    DEFAULT_CSS = """
    RepositoryTable {
        background: $surface;
        color: $foreground;
        overflow-x: hidden;
        overflow-y: auto;
        height: 1fr;
        & > .repository-table--header { text-style: bold; background: $panel; color: $foreground; }
        &:ansi > .repository-table--header { background: ansi_bright_blue; color: ansi_default; }
        & > .repository-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .repository-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
        & > .repository-table--mark { color: $accent; text-style: bold; }
        & > .repository-table--failed { color: $error; text-style: bold; }
        & > .repository-table--started { color: $text-secondary; }
        & > .repository-table--pending { color: $text-warning; }
        & > .repository-table--synced { color: $success; }
        & > .repository-table--muted { color: $text-muted; }
        & > .repository-table--error { color: $text-error; }
    }
    """

    @dataclass
    class Selected(Message):
        """Enter on a row: the app opens its detail."""

        key: Key

    @dataclass
    class CountsChanged(Message):
        """The figures for the pane title changed."""

        total: int
        visible: int
        failed: int
        marked: int

    def __init__(
        self,
        *,
        now: Callable[[], float] = time.time,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.marked: set[Key] = set()
        self._painter = RowPainter(self._rows, self._component_style, now)
        self._age_ticks = 0
        self._last_counts: tuple[int, int, int, int] | None = None

    # -- reading --------------------------------------------------------------------------------

    def row(self, key: Key) -> RepositoryRow | None:
        """The latest row for ``key``, shown or filtered out."""
        entry = self._rows.entries.get(key)
        return entry.row if entry is not None else None

    @property
    def total_count(self) -> int:
        return len(self._rows.entries)

    @property
    def failed_count(self) -> int:
        """Failed rows among all rows, filtered or not."""
        return self._rows.failed

    @property
    def sort_column(self) -> str:
        return self._rows.sort_column

    @property
    def sort_reverse(self) -> bool:
        return self._rows.reverse

    # -- data -----------------------------------------------------------------------------------

    def set_rows(self, rows: Iterable[RepositoryRow]) -> None:
        """Replace every row."""
        self._rows.set_rows(rows)
        self.marked.intersection_update(self._rows.entries)
        self._after_change()

    def upsert_rows(self, rows: Iterable[RepositoryRow]) -> None:
        """Update or insert a batch by key; filters and sort are applied once for the batch."""
        changed = self._rows.upsert_rows(rows)
        if changed is None:
            self._after_change()
            return
        if not changed:
            return
        for entry in changed:  # same places: redraw only their lines
            if entry.visible:
                self.refresh_line(self._rows.position(self._rows.rank(entry)) + 1)
        self._post_counts()

    def set_text_filter(self, pattern: str, *, regex: bool = False, invert: bool = False) -> None:
        """Show rows whose 'site/repository' or last error contains `pattern`, in any case; with `regex`,
        rows where it matches either (searched as two lines, so ^ and $ anchor each). `invert` shows the
        rest; an empty pattern shows everything. A bad regex raises ValueError and changes nothing."""
        self._rows.set_text_filter(pattern, regex=regex, invert=invert)
        self._after_change()

    def set_state_filter(self, states: frozenset[SyncState] | None) -> None:
        """Show only rows in these sync states (None: all)."""
        self._rows.set_state_filter(states)
        self._after_change()

    def sort_by(self, column: str, reverse: bool = False) -> None:
        """Sort by one of `SORT_COLUMNS`; ties go by site, then repository."""
        self._rows.sort_by(column, reverse)
        self._after_change()

    def clear_marks(self) -> None:
        self.marked.clear()
        self.refresh()
        self._post_counts()

    def _after_change(self) -> None:
        self.virtual_size = Size(0, len(self._rows.order) + 1)
        self._scroll_cursor_into_view()
        self.refresh()
        self._post_counts()

    def _post_counts(self) -> None:
        rows = self._rows
        counts = (len(rows.entries), len(rows.order), rows.failed, len(self.marked))
        if counts != self._last_counts:
            self._last_counts = counts
            self.post_message(self.CountsChanged(*counts))

    # -- keys (moving the cursor: RowCursorView) -----------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("select", "toggle_mark") and not self._rows.order:
            return None
        return True

    def action_select(self) -> None:
        if (key := self.cursor_key) is not None:
            self.post_message(self.Selected(key))

    def action_toggle_mark(self) -> None:
        if (key := self.cursor_key) is None:
            return
        self.marked.symmetric_difference_update({key})
        self.refresh_line(self._rows.cursor + 1)
        self._post_counts()

    def action_cycle_sort(self) -> None:
        names = list(SORT_COLUMNS)
        self.sort_by(names[(names.index(self._rows.sort_column) + 1) % len(names)])

    def action_reverse_sort(self) -> None:
        self.sort_by(self._rows.sort_column, not self._rows.reverse)

    def on_mount(self) -> None:
        self.set_interval(1, self._ages_move_on)
        self._post_counts()

    # -- drawing (how a line looks: RowPainter) -------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._painter.styles_changed()

    def _component_style(self, name: str) -> Style:
        # full styles: partial ones drop the alpha of $text-muted and of the blurred cursor
        return self.get_component_rich_style(f"repository-table--{name}") if name else self.rich_style

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        return self._painter.line(y, round(self.scroll_y), width, self.marked)

    def _ages_move_on(self) -> None:
        """Redraw for the ages ("42 s ago"): every second while a line on screen shows one in seconds,
        else every 30 s. Only the lines whose text changed are formatted again."""
        self._age_ticks += 1
        if self._painter.seconds_shown or self._age_ticks >= 30:
            self._age_ticks, self._painter.seconds_shown = 0, False
            self.refresh()

    def _verification_text(self, row: RepositoryRow, now: float | None = None) -> str:
        """'✓ deep 2d': state, the depth of the last check and its age, once a check with a depth finished."""
        return self._painter.verification_text(row, now)
