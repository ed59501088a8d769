"""The repositories pane: one line per (secondary site, repository), drawn with Textual's line API.

Only the lines on screen are formatted (toolong's `log_lines.py` habit), so 100,000 rows scroll like 100:
never one widget per row (Textualize/textual #5163), never a DataTable that size. The rows, their filters,
order and cursor live in `repository_rows` (no Textual); what a line reads in `repository_lines`.
Every method runs on the UI thread; workers hand rows over with `post_message` (textual #5137).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from geo_tui.engine import RepositoryRow, SyncState
from geo_tui.figures import ago

from .repository_lines import Column, fit, fit_columns, row_cells, verification_text
from .repository_rows import SORT_COLUMNS, Key, RepositoryRows, RowEntry

__all__ = ["SORT_COLUMNS", "RepositoryTable"]


class RepositoryTable(ScrollView, can_focus=True):
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
        self.now = now
        self.marked: set[Key] = set()
        self._rows = RepositoryRows()
        self._layout_key: tuple[object, ...] = ()
        self._layout: list[tuple[Column, int]] = []
        self._strips: LRUCache[tuple[object, ...], Strip] = LRUCache(256)  # ~5 screens
        self._seconds_shown = False  # a line drawn since the last redraw shows an age under a minute
        self._age_ticks = 0
        self._styles: dict[str, Style] = {}
        self._last_counts: tuple[int, int, int, int] | None = None

    # -- reading --------------------------------------------------------------------------------

    @property
    def cursor_key(self) -> Key | None:
        rows = self._rows
        return rows.order[rows.cursor].key if rows.order else None

    @property
    def cursor_row(self) -> RepositoryRow | None:
        rows = self._rows
        return rows.order[rows.cursor].row if rows.order else None

    def row(self, key: Key) -> RepositoryRow | None:
        """The latest row for ``key``, shown or filtered out."""
        entry = self._rows.entries.get(key)
        return entry.row if entry is not None else None

    @property
    def total_count(self) -> int:
        return len(self._rows.entries)

    @property
    def visible_count(self) -> int:
        return len(self._rows.order)

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

    def visible_keys(self) -> list[Key]:
        """The keys the filters let through, in display order."""
        return [entry.key for entry in self._rows.order]

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

    # -- cursor and keys ------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("select", "toggle_mark") and not self._rows.order:
            return None
        return True

    def _page_height(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def move_cursor(self, index: int, *, scroll_by: int = 0) -> None:
        """Put the cursor on display row `index` (clamped); scroll with it."""
        if not self._rows.order:
            return
        old = self._rows.cursor
        self._rows.move_cursor(index)
        if scroll_by:
            self.scroll_to(y=self.scroll_y + scroll_by, animate=False, force=True)
        self.refresh_line(old + 1)
        self.refresh_line(self._rows.cursor + 1)
        self._scroll_cursor_into_view()

    def _scroll_cursor_into_view(self) -> None:
        if not self.size:
            return
        rows, top, cursor = self._page_height(), round(self.scroll_y), self._rows.cursor
        if cursor < top:
            self.scroll_to(y=cursor, animate=False, force=True)
        elif cursor >= top + rows:
            self.scroll_to(y=cursor - rows + 1, animate=False, force=True)

    def action_cursor_up(self) -> None:
        self.move_cursor(self._rows.cursor - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(self._rows.cursor + 1)

    def action_page_up(self) -> None:
        self.move_cursor(self._rows.cursor - self._page_height(), scroll_by=-self._page_height())

    def action_page_down(self) -> None:
        self.move_cursor(self._rows.cursor + self._page_height(), scroll_by=self._page_height())

    def action_first(self) -> None:
        self.move_cursor(0)

    def action_last(self) -> None:
        self.move_cursor(len(self._rows.order) - 1)

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

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is not None and offset.y > 0:
            self.move_cursor(round(self.scroll_y) + offset.y - 1)

    def on_mount(self) -> None:
        self.set_interval(1, self._ages_move_on)
        self._post_counts()

    def on_resize(self) -> None:
        self._scroll_cursor_into_view()

    # -- drawing --------------------------------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._strips.clear()

    def _style(self, name: str = "") -> Style:
        """A component's style, to lay over the widget's own (name ''): cached until styles change."""
        style = self._styles.get(name)
        if style is None:
            if name:  # full styles: partial ones drop the alpha of $text-muted and of the blurred cursor
                style = self.get_component_rich_style(f"repository-table--{name}")
            else:
                style = self.rich_style
            self._styles[name] = style
        return style

    def _columns(self, width: int) -> list[tuple[Column, int]]:
        """The columns that fit in `width` and their widths, worked out again only when these change."""
        rows = self._rows
        key = (width, rows.site_width, rows.repository_width, rows.sort_column)
        if key != self._layout_key:
            self._layout = fit_columns(width, rows.site_width, rows.repository_width, rows.sort_column)
            self._layout_key = key
        return self._layout

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        self._columns(width)  # brings self._layout_key up to date for the cache keys below
        if y == 0:
            return self._header(width)
        index = round(self.scroll_y) + y - 1
        if index >= len(self._rows.order):
            return Strip.blank(width, self._style())
        entry = self._rows.order[index]
        now, row = self.now(), entry.row
        synced = ago(row.last_synced_at, now)
        cursor, marked = index == self._rows.cursor, entry.key in self.marked
        verified = self._verification_text(row, now)
        for ts in (row.last_synced_at, row.verified_at):
            if ts is not None and now - ts < 60:
                self._seconds_shown = True
        key = (entry.version, width, self._layout_key, cursor, marked, synced, verified)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strips[key] = self._row_strip(entry, width, synced, cursor, marked, verified)
        return strip

    def _ages_move_on(self) -> None:
        """Redraw for the ages ("42 s ago"): every second while a line on screen shows one in seconds,
        else every 30 s. Only the lines whose text changed are formatted again."""
        self._age_ticks += 1
        if self._seconds_shown or self._age_ticks >= 30:
            self._age_ticks, self._seconds_shown = 0, False
            self.refresh()

    def _header(self, width: int) -> Strip:
        reverse, sort_column = self._rows.reverse, self._rows.sort_column
        key = ("header", width, self._layout_key, reverse)
        strip = self._strips.get(key)
        if strip is None:
            style = self._style() + self._style("header")
            cells = []
            for column, span in self._columns(width):
                title = column.title
                if column.name == sort_column:
                    title = f"{fit(title, span - 2).rstrip()} {'▼' if reverse else '▲'}"
                cells.append(fit(title, span, column.right))
            strip = self._strips[key] = Strip([Segment(fit(" ".join(cells), width), style)], width)
        return strip

    def _verification_text(self, row: RepositoryRow, now: float | None = None) -> str:
        """'✓ deep 2d': state, the depth of the last check and its age, once a check with a depth finished."""
        return verification_text(row, self.now() if now is None else now)

    def _row_strip(
        self, entry: RowEntry, width: int, synced: str, cursor: bool, marked: bool, verified: str
    ) -> Strip:
        base = self._style()
        overlay = self._style("cursor") if cursor else Style()
        cells = row_cells(entry, synced, marked, verified)
        segments: list[Segment] = []
        used = 0
        for column, span in self._columns(width):
            text, style_name = cells[column.name]
            if segments:
                segments.append(Segment(" ", base + overlay))
            style = base + self._style(style_name) if style_name else base
            segments.append(Segment(fit(text, span, column.right), style + overlay))
            used += span + (1 if used else 0)
        if used < width:
            segments.append(Segment(" " * (width - used), base + overlay))
        return Strip(segments, width).crop(0, width)
