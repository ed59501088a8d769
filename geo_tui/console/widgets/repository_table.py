"""The repositories pane: one line per (secondary site, repository), drawn with Textual's line API.

Only the lines on screen are formatted (toolong's `log_lines.py` habit), so 100,000 rows scroll like 100:
never one widget per row (Textualize/textual #5163), never a DataTable that size. Rows are held by key, so
the cursor stays on the same repository when rows update, re-sort or re-filter (Dolphie's processlist).
Every method runs on the UI thread; workers hand rows over with `post_message` (textual #5137).
"""

from __future__ import annotations

import gc
import re
import time
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, ClassVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from geo_tui.engine import RepositoryRow, SyncState, VerificationState
from geo_tui.figures import ago, short_ago, size

__all__ = ["SORT_COLUMNS", "RepositoryTable"]

Key = tuple[str, str]

_F, _S, _P, _OK = SyncState.FAILED, SyncState.STARTED, SyncState.PENDING, SyncState.SYNCED
_STATE_TEXT = {_F: "✗ failed", _S: "⟳ running", _P: "… pending", _OK: "✓ synced"}
_STATE_RANK = {_F: 0, _S: 1, _P: 2, _OK: 3}  # problems first
_STATE_CLASS = {_F: "failed", _S: "started", _P: "pending", _OK: "synced"}
_VS = VerificationState
_VERIFY_TEXT = {
    _VS.SUCCEEDED: "✓ ok",
    _VS.FAILED: "✗ failed",
    _VS.PENDING: "… pending",
    _VS.STARTED: "⟳ running",
}
_VERIFY_RANK = {_VS.FAILED: 0, _VS.STARTED: 1, _VS.PENDING: 2, _VS.SUCCEEDED: 3}
_VERIFY_CLASS = {_VS.SUCCEEDED: "synced", _VS.FAILED: "failed", _VS.PENDING: "muted", _VS.STARTED: "started"}
# The depth of a finished verification, shown in its cell with its age: "✓ deep 2d", "✗ sum 3h" (10 cells).
_DEPTH_WORD = {"checksum": "sum", "deep": "deep", "content": "hash"}
# Above this many changed rows one sort of the whole list beats a bisect-and-insert per row.
_INSORT_LIMIT = 256


class _Entry:
    """One row and what is worked out for it once: filter haystack, sort values, version."""

    __slots__ = (
        "error",
        "error_key",
        "haystack",
        "key",
        "name_key",
        "repository",
        "row",
        "size",
        "state_rank",
        "synced",
        "tags",
        "verify_rank",
        "version",
        "visible",
    )

    def __init__(self, row: RepositoryRow, version: int) -> None:
        self.key = (row.site, row.repository)
        self.name_key = row.site + "\x00" + row.repository  # sorts like (site, repository)
        self.repository = row.repository
        self.visible = True
        self.update(row, version)

    def update(self, row: RepositoryRow, version: int) -> None:
        self.row, self.version = row, version
        self.state_rank = _STATE_RANK[row.state]
        self.verify_rank = _VERIFY_RANK[row.verification_state]
        self.tags = -1 if row.tag_count is None else row.tag_count
        self.synced = -1.0 if row.last_synced_at is None else row.last_synced_at
        self.size = -1 if row.bytes is None else row.bytes
        self.haystack: str | None = None  # made when a text filter first needs it
        error = row.last_sync_failure
        if not error and row.verification_failure:
            error = "verification: " + row.verification_failure
        if error:
            self.error: str | None = " ".join(error.split())
            self.error_key = "0" + self.error.lower()  # rows with an error first, by its text
        else:
            self.error, self.error_key = None, "1"

    def make_haystack(self) -> str:
        """What a text filter searches: 'site/repository', and the error on a second line."""
        label = self.name_key.replace("\x00", "/", 1)
        self.haystack = (label + "\n" + self.error if self.error else label).lower()
        return self.haystack


# What each column sorts by. The sort is stable over a list kept in (site, repository) order, so ties
# stay in that order; and one C-level attrgetter over ints sorts 100k rows in ~14 ms, where building
# string keys took 70 ms and tuple keys 120 ms.
SORT_COLUMNS: dict[str, str] = {
    "state": "state_rank",
    "site": "name_key",
    "repository": "repository",
    "tags": "tags",
    "last_synced": "synced",
    "verification": "verify_rank",
    "size": "size",
    "error": "error_key",
}
_NAME = attrgetter("name_key")


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Building 100k rows allocates 100k tracked objects; young-generation collections walking them
    again and again while they are built more than doubled `set_rows` (254 ms against 112 ms)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class _Column:
    name: str
    title: str
    width: int  # 0: sized from the data (site) or flexible (repository, error)
    drop: int = 0  # when the width runs out, 1 goes first, then 2...; 0 never goes
    right: bool = False


_COLUMNS = (
    _Column("mark", "", 1),
    _Column("state", "state", 9),
    _Column("site", "site", 0, drop=6),
    _Column("repository", "repository", 0),
    _Column("tags", "tags", 6, drop=1, right=True),
    _Column("last_synced", "synced", 10, drop=4),
    _Column("verification", "verified", 10, drop=3),
    _Column("size", "size", 10, drop=2, right=True),
    _Column("error", "last error", 0, drop=5),
)
_REPOSITORY_MIN, _REPOSITORY_WANT, _REPOSITORY_MAX, _ERROR_MIN, _SITE_MAX = 20, 32, 60, 16, 16


def _fit(text: str, width: int, right: bool = False) -> str:
    """Pad or cut `text` to exactly `width` cells; a cut ends with '…'."""
    length = cell_len(text)
    if length > width:
        return set_cell_size(text, width - 1) + "…" if width > 1 else "…"[:width]
    pad = " " * (width - length)
    return pad + text if right else text + pad


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
        self._entries: dict[Key, _Entry] = {}
        self._by_name: list[_Entry] = []  # every row, by (site, repository)
        self._sorted: list[_Entry] = []  # every row, by the sort column, then (site, repository)
        self._order: list[_Entry] = []  # the visible rows, in display order
        self._cursor = 0
        self._cursor_key: Key | None = None  # remembered even while filtered away
        self._sort_column = "state"
        self._primary: Callable[[_Entry], Any] = attrgetter(SORT_COLUMNS["state"])
        self._reverse = False
        self._needle = ""
        self._pattern: re.Pattern[str] | None = None
        self._invert = False
        self._states: frozenset[SyncState] | None = None
        self._failed = 0
        self._version = 0
        self._site_width = 6  # "site ▲"
        self._repository_width = _REPOSITORY_MIN
        self._layout_key: tuple[object, ...] = ()
        self._layout: list[tuple[_Column, int]] = []
        self._strips: LRUCache[tuple[object, ...], Strip] = LRUCache(256)  # ~5 screens
        self._seconds_shown = False  # a line drawn since the last redraw shows an age under a minute
        self._age_ticks = 0
        self._styles: dict[str, Style] = {}
        self._last_counts: tuple[int, int, int, int] | None = None

    # -- reading --------------------------------------------------------------------------------

    @property
    def cursor_key(self) -> Key | None:
        return self._order[self._cursor].key if self._order else None

    @property
    def cursor_row(self) -> RepositoryRow | None:
        return self._order[self._cursor].row if self._order else None

    def row(self, key: Key) -> RepositoryRow | None:
        """The latest row for ``key``, shown or filtered out."""
        entry = self._entries.get(key)
        return entry.row if entry is not None else None

    @property
    def total_count(self) -> int:
        return len(self._entries)

    @property
    def visible_count(self) -> int:
        return len(self._order)

    @property
    def failed_count(self) -> int:
        """Failed rows among all rows, filtered or not."""
        return self._failed

    @property
    def sort_column(self) -> str:
        return self._sort_column

    @property
    def sort_reverse(self) -> bool:
        return self._reverse

    def visible_keys(self) -> list[Key]:
        """The keys the filters let through, in display order."""
        return [entry.key for entry in self._order]

    # -- data -----------------------------------------------------------------------------------

    def set_rows(self, rows: Iterable[RepositoryRow]) -> None:
        """Replace every row."""
        old = self._entries.get(self._cursor_key) if self._cursor_key else None
        hint = self._rank(old) if old else None
        entries: dict[Key, _Entry] = {}
        version, failed, longest, sites = self._version, 0, 0, set()
        with _collector_paused():
            for row in rows:
                version += 1
                entry = _Entry(row, version)
                entries[entry.key] = entry
                failed += row.state is _F
                longest = max(longest, len(row.repository))
                sites.add(row.site)
            self._by_name = sorted(entries.values(), key=_NAME)
            self._sorted = sorted(self._by_name, key=self._primary)
        if len(entries) != version - self._version:  # a key given twice: the last one stands
            failed = sum(entry.row.state is _F for entry in entries.values())
        self._entries, self._version, self._failed = entries, version, failed
        self.marked.intersection_update(entries)
        self._site_width = min(_SITE_MAX, max([6, *map(len, sites)]))
        self._repository_width = min(_REPOSITORY_MAX, max(_REPOSITORY_MIN, longest))
        self._refilter(hint)

    def upsert_rows(self, rows: Iterable[RepositoryRow]) -> None:
        """Update or insert a batch by key; filters and sort are applied once for the batch."""
        batch = {row.key: row for row in rows}
        small, primary = len(batch) <= _INSORT_LIMIT, self._primary
        changed: list[_Entry] = []
        moved: list[_Entry] = []
        regroup = named = False
        for key, row in batch.items():
            entry = self._entries.get(key)
            if entry is not None and entry.row == row:
                continue
            self._version += 1
            if entry is None:
                entry = self._entries[key] = _Entry(row, self._version)
                entry.visible, named = False, True
                moved.append(entry)
                if small:
                    insort(self._by_name, entry, key=_NAME)
                else:
                    self._by_name.append(entry)
            else:
                self._failed -= entry.row.state is _F
                before = primary(entry)
                index = bisect_left(self._sorted, self._rank(entry), key=self._rank) if small else 0
                entry.update(row, self._version)
                if primary(entry) != before:
                    if small:  # out while the list is still in order; back in at its new place below
                        del self._sorted[index]
                    moved.append(entry)
            self._failed += row.state is _F
            was_visible = entry.visible
            self._apply_filters((entry,))
            regroup |= entry.visible != was_visible
            changed.append(entry)
        if not changed:
            return
        self._site_width = min(_SITE_MAX, max([self._site_width, *(len(e.key[0]) for e in changed)]))
        longest = max([self._repository_width, *(len(e.repository) for e in changed)])
        self._repository_width = min(_REPOSITORY_MAX, longest)
        if small:
            for entry in moved:
                insort(self._sorted, entry, key=self._rank)
        elif moved:
            with _collector_paused():
                if named:
                    self._by_name.sort(key=_NAME)
                self._sorted = sorted(self._by_name, key=primary)
        if regroup or moved:
            self._rebuild_order()
            self._restore_cursor(None)
            self._after_change()
            return
        for entry in changed:  # same places: redraw only their lines
            if entry.visible:
                self.refresh_line(self._position(self._rank(entry)) + 1)
        self._post_counts()

    def set_text_filter(self, pattern: str, *, regex: bool = False, invert: bool = False) -> None:
        """Show rows whose 'site/repository' or last error contains `pattern`, in any case; with `regex`,
        rows where it matches either (searched as two lines, so ^ and $ anchor each). `invert` shows the
        rest; an empty pattern shows everything. A bad regex raises ValueError and changes nothing."""
        compiled = None
        if regex and pattern:
            try:
                compiled = re.compile(pattern, re.IGNORECASE | re.MULTILINE)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
        self._needle, self._pattern, self._invert = pattern.lower(), compiled, invert
        self._refilter(None)

    def set_state_filter(self, states: frozenset[SyncState] | None) -> None:
        """Show only rows in these sync states (None: all)."""
        self._states = states
        self._refilter(None)

    def sort_by(self, column: str, reverse: bool = False) -> None:
        """Sort by one of `SORT_COLUMNS`; ties go by site, then repository."""
        if column not in SORT_COLUMNS:
            raise ValueError(f"no column {column!r} to sort by; one of: {', '.join(SORT_COLUMNS)}")
        if column != self._sort_column:
            self._sort_column, self._primary = column, attrgetter(SORT_COLUMNS[column])
            self._sorted = sorted(self._by_name, key=self._primary)
        self._reverse = reverse
        self._rebuild_order()
        self._restore_cursor(None)
        self._after_change()

    def clear_marks(self) -> None:
        self.marked.clear()
        self.refresh()
        self._post_counts()

    # -- filter and order -----------------------------------------------------------------------

    def _rank(self, entry: _Entry) -> tuple[Any, str]:
        """Where a row sorts: its value in the sort column, then (site, repository)."""
        return (self._primary(entry), entry.name_key)

    def _apply_filters(self, entries: Iterable[_Entry]) -> None:
        """Set `visible` on each entry: one tight loop, no call per row but the regex's own."""
        states, needle, invert = self._states, self._needle, self._invert
        search = self._pattern.search if self._pattern is not None else None
        for entry in entries:
            if states is not None and entry.row.state not in states:
                entry.visible = False
            elif not needle:
                entry.visible = True
            elif search is not None:
                entry.visible = (search(entry.haystack or entry.make_haystack()) is not None) is not invert
            else:
                entry.visible = (needle in (entry.haystack or entry.make_haystack())) is not invert

    def _refilter(self, hint: tuple[Any, str] | None) -> None:
        self._apply_filters(self._sorted)
        self._rebuild_order()
        self._restore_cursor(hint)
        self._after_change()

    def _rebuild_order(self) -> None:
        rows = reversed(self._sorted) if self._reverse else self._sorted
        self._order = [entry for entry in rows if entry.visible]

    def _position(self, rank: tuple[Any, str]) -> int:
        """Index in the display order of the first row not before `rank`: O(log n)."""
        order = self._order
        if not self._reverse:
            return bisect_left(order, rank, key=self._rank)
        low, high = 0, len(order)
        while low < high:
            middle = (low + high) // 2
            if self._rank(order[middle]) > rank:
                low = middle + 1
            else:
                high = middle
        return low

    def _restore_cursor(self, hint: tuple[Any, str] | None) -> None:
        """Back onto the same key if it is visible; else onto the row that now takes its place."""
        if not self._order:
            self._cursor = 0
            return
        entry = self._entries.get(self._cursor_key) if self._cursor_key else None
        rank = self._rank(entry) if entry else hint
        index = self._cursor if rank is None else self._position(rank)
        self._cursor = min(index, len(self._order) - 1)
        self._cursor_key = self._order[self._cursor].key

    def _after_change(self) -> None:
        self.virtual_size = Size(0, len(self._order) + 1)
        self._scroll_cursor_into_view()
        self.refresh()
        self._post_counts()

    def _post_counts(self) -> None:
        counts = (len(self._entries), len(self._order), self._failed, len(self.marked))
        if counts != self._last_counts:
            self._last_counts = counts
            self.post_message(self.CountsChanged(*counts))

    # -- cursor and keys ------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("select", "toggle_mark") and not self._order:
            return None
        return True

    def _page_height(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def move_cursor(self, index: int, *, scroll_by: int = 0) -> None:
        """Put the cursor on display row `index` (clamped); scroll with it."""
        if not self._order:
            return
        old = self._cursor
        self._cursor = max(0, min(index, len(self._order) - 1))
        self._cursor_key = self._order[self._cursor].key
        if scroll_by:
            self.scroll_to(y=self.scroll_y + scroll_by, animate=False, force=True)
        self.refresh_line(old + 1)
        self.refresh_line(self._cursor + 1)
        self._scroll_cursor_into_view()

    def _scroll_cursor_into_view(self) -> None:
        if not self.size:
            return
        rows, top = self._page_height(), round(self.scroll_y)
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False, force=True)
        elif self._cursor >= top + rows:
            self.scroll_to(y=self._cursor - rows + 1, animate=False, force=True)

    def action_cursor_up(self) -> None:
        self.move_cursor(self._cursor - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(self._cursor + 1)

    def action_page_up(self) -> None:
        self.move_cursor(self._cursor - self._page_height(), scroll_by=-self._page_height())

    def action_page_down(self) -> None:
        self.move_cursor(self._cursor + self._page_height(), scroll_by=self._page_height())

    def action_first(self) -> None:
        self.move_cursor(0)

    def action_last(self) -> None:
        self.move_cursor(len(self._order) - 1)

    def action_select(self) -> None:
        if (key := self.cursor_key) is not None:
            self.post_message(self.Selected(key))

    def action_toggle_mark(self) -> None:
        if (key := self.cursor_key) is None:
            return
        self.marked.symmetric_difference_update({key})
        self.refresh_line(self._cursor + 1)
        self._post_counts()

    def action_cycle_sort(self) -> None:
        names = list(SORT_COLUMNS)
        self.sort_by(names[(names.index(self._sort_column) + 1) % len(names)])

    def action_reverse_sort(self) -> None:
        self.sort_by(self._sort_column, not self._reverse)

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

    def _columns(self, width: int) -> list[tuple[_Column, int]]:
        """Which columns fit in `width`, and how wide: the least useful go first; the repository, its
        state and the sort column always show."""
        key = (width, self._site_width, self._repository_width, self._sort_column)
        if key == self._layout_key:
            return self._layout
        # The repository asks for its longest name up to _REPOSITORY_WANT before other columns may stay.
        wanted = max(_REPOSITORY_MIN, self._repository_width)
        fixed = {"site": self._site_width, "repository": min(wanted, _REPOSITORY_WANT), "error": _ERROR_MIN}
        columns = list(_COLUMNS)

        def needed() -> int:
            return sum(column.width or fixed[column.name] for column in columns) + len(columns) - 1

        for column in sorted((c for c in _COLUMNS if c.drop), key=attrgetter("drop")):
            if needed() <= width:
                break
            if column.name != self._sort_column:
                columns.remove(column)
        spare = width - needed()
        repository = fixed["repository"] + min(max(0, spare), wanted - fixed["repository"])
        if spare < 0 or all(column.name != "error" for column in columns):
            repository = max(1, fixed["repository"] + spare)  # it takes what is left, or gives up cells
        widths = {"repository": repository, "error": _ERROR_MIN + spare - (repository - fixed["repository"])}
        self._layout = [(c, c.width or widths.get(c.name, fixed[c.name])) for c in columns]
        self._layout_key = key
        return self._layout

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        self._columns(width)  # brings self._layout_key up to date for the cache keys below
        if y == 0:
            return self._header(width)
        index = round(self.scroll_y) + y - 1
        if index >= len(self._order):
            return Strip.blank(width, self._style())
        entry = self._order[index]
        now, row = self.now(), entry.row
        synced = ago(row.last_synced_at, now)
        cursor, marked = index == self._cursor, entry.key in self.marked
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
        key = ("header", width, self._layout_key, self._reverse)
        strip = self._strips.get(key)
        if strip is None:
            style = self._style() + self._style("header")
            cells = []
            for column, size in self._columns(width):
                title = column.title
                if column.name == self._sort_column:
                    title = f"{_fit(title, size - 2).rstrip()} {'▼' if self._reverse else '▲'}"
                cells.append(_fit(title, size, column.right))
            strip = self._strips[key] = Strip([Segment(_fit(" ".join(cells), width), style)], width)
        return strip

    def _verification_text(self, row: RepositoryRow, now: float | None = None) -> str:
        """'✓ deep 2d': state, the depth of the last check and its age, once a check with a depth finished."""
        text = _VERIFY_TEXT[row.verification_state]
        word = _DEPTH_WORD.get(row.verification_depth or "")
        if (
            word is None
            or row.verified_at is None
            or row.verification_state not in (_VS.SUCCEEDED, _VS.FAILED)
        ):
            return text
        return f"{text[0]} {word} {short_ago(row.verified_at, self.now() if now is None else now)}"

    def _row_strip(
        self, entry: _Entry, width: int, synced: str, cursor: bool, marked: bool, verified: str
    ) -> Strip:
        row, base = entry.row, self._style()
        overlay = self._style("cursor") if cursor else Style()
        failed = row.state is _F
        cells: dict[str, tuple[str, str | None]] = {
            "mark": ("●" if marked else " ", "mark"),
            "state": (_STATE_TEXT[row.state], _STATE_CLASS[row.state]),
            "site": (row.site, None),
            "repository": (row.repository, None),
            "tags": ("-" if row.tag_count is None else str(row.tag_count), None),
            "last_synced": (synced, "muted" if row.last_synced_at is None else None),
            "verification": (verified, _VERIFY_CLASS[row.verification_state]),
            "size": ("-" if row.bytes is None else size(row.bytes), None),
            "error": (entry.error or "", "error" if failed else "muted"),
        }
        segments: list[Segment] = []
        used = 0
        for column, span in self._columns(width):
            text, style_name = cells[column.name]
            if segments:
                segments.append(Segment(" ", base + overlay))
            style = base + self._style(style_name) if style_name else base
            segments.append(Segment(_fit(text, span, column.right), style + overlay))
            used += span + (1 if used else 0)
        if used < width:
            segments.append(Segment(" " * (width - used), base + overlay))
        return Strip(segments, width).crop(0, width)
