"""The repositories pane's rows, without Textual: held by key, filtered, sorted, with a cursor.

Every (site, repository) row is worked out once into an entry (filter haystack, sort values, version),
kept in (site, repository) order and in sort order, so a filter or an update costs a pass or a bisect,
not a sort. The cursor is held by key, so it stays on the same repository when rows update, re-sort or
re-filter (Dolphie's processlist). The widget in `repository_table` draws what this holds.
"""

from __future__ import annotations

import gc
import re
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from operator import attrgetter
from typing import Any

from geo_tui.engine import RepositoryRow, SyncState, VerificationState

__all__ = ["SORT_COLUMNS", "Key", "RepositoryRows", "RowEntry"]

Key = tuple[str, str]

_F = SyncState.FAILED
_STATE_RANK = {_F: 0, SyncState.STARTED: 1, SyncState.PENDING: 2, SyncState.SYNCED: 3}  # problems first
_VS = VerificationState
_VERIFY_RANK = {_VS.FAILED: 0, _VS.STARTED: 1, _VS.PENDING: 2, _VS.SUCCEEDED: 3}
# Above this many changed rows one sort of the whole list beats a bisect-and-insert per row.
_INSORT_LIMIT = 256
# The widths the site and repository columns ask for, from their longest names.
REPOSITORY_MIN, REPOSITORY_MAX, SITE_MAX = 20, 60, 16


class RowEntry:
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


class RepositoryRows:
    """Every row by key; the visible ones in display order (`order`); the cursor's place in it."""

    def __init__(self) -> None:
        self.entries: dict[Key, RowEntry] = {}
        self._by_name: list[RowEntry] = []  # every row, by (site, repository)
        self._sorted: list[RowEntry] = []  # every row, by the sort column, then (site, repository)
        self.order: list[RowEntry] = []  # the visible rows, in display order
        self.cursor = 0
        self.cursor_key: Key | None = None  # remembered even while filtered away
        self.sort_column = "state"
        self._primary: Callable[[RowEntry], Any] = attrgetter(SORT_COLUMNS["state"])
        self.reverse = False
        self._needle = ""
        self._pattern: re.Pattern[str] | None = None
        self._invert = False
        self._states: frozenset[SyncState] | None = None
        self.failed = 0
        self.version = 0
        self.site_width = 6  # "site ▲"
        self.repository_width = REPOSITORY_MIN

    def set_rows(self, rows: Iterable[RepositoryRow]) -> None:
        """Replace every row."""
        old = self.entries.get(self.cursor_key) if self.cursor_key else None
        hint = self.rank(old) if old else None
        entries: dict[Key, RowEntry] = {}
        version, failed, longest, sites = self.version, 0, 0, set()
        with _collector_paused():
            for row in rows:
                version += 1
                entry = RowEntry(row, version)
                entries[entry.key] = entry
                failed += row.state is _F
                longest = max(longest, len(row.repository))
                sites.add(row.site)
            self._by_name = sorted(entries.values(), key=_NAME)
            self._sorted = sorted(self._by_name, key=self._primary)
        if len(entries) != version - self.version:  # a key given twice: the last one stands
            failed = sum(entry.row.state is _F for entry in entries.values())
        self.entries, self.version, self.failed = entries, version, failed
        self.site_width = min(SITE_MAX, max([6, *map(len, sites)]))
        self.repository_width = min(REPOSITORY_MAX, max(REPOSITORY_MIN, longest))
        self._refilter(hint)

    def upsert_rows(self, rows: Iterable[RepositoryRow]) -> list[RowEntry] | None:
        """Update or insert a batch by key; filters and sort are applied once for the batch. Returns the
        changed rows when each kept its place (only their lines need drawing; none when nothing changed),
        or None when the display order was rebuilt."""
        batch = {row.key: row for row in rows}
        small, primary = len(batch) <= _INSORT_LIMIT, self._primary
        changed: list[RowEntry] = []
        moved: list[RowEntry] = []
        regroup = named = False
        for key, row in batch.items():
            entry = self.entries.get(key)
            if entry is not None and entry.row == row:
                continue
            self.version += 1
            if entry is None:
                entry = self.entries[key] = RowEntry(row, self.version)
                entry.visible, named = False, True
                moved.append(entry)
                if small:
                    insort(self._by_name, entry, key=_NAME)
                else:
                    self._by_name.append(entry)
            else:
                self.failed -= entry.row.state is _F
                before = primary(entry)
                index = bisect_left(self._sorted, self.rank(entry), key=self.rank) if small else 0
                entry.update(row, self.version)
                if primary(entry) != before:
                    if small:  # out while the list is still in order; back in at its new place below
                        del self._sorted[index]
                    moved.append(entry)
            self.failed += row.state is _F
            was_visible = entry.visible
            self._apply_filters((entry,))
            regroup |= entry.visible != was_visible
            changed.append(entry)
        if not changed:
            return changed
        self.site_width = min(SITE_MAX, max([self.site_width, *(len(e.key[0]) for e in changed)]))
        longest = max([self.repository_width, *(len(e.repository) for e in changed)])
        self.repository_width = min(REPOSITORY_MAX, longest)
        if small:
            for entry in moved:
                insort(self._sorted, entry, key=self.rank)
        elif moved:
            with _collector_paused():
                if named:
                    self._by_name.sort(key=_NAME)
                self._sorted = sorted(self._by_name, key=primary)
        if regroup or moved:
            self._rebuild_order()
            self._restore_cursor(None)
            return None
        return changed

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
        if column != self.sort_column:
            self.sort_column, self._primary = column, attrgetter(SORT_COLUMNS[column])
            self._sorted = sorted(self._by_name, key=self._primary)
        self.reverse = reverse
        self._rebuild_order()
        self._restore_cursor(None)

    def move_cursor(self, index: int) -> None:
        """Put the cursor on display row `index`, clamped; there must be a visible row."""
        self.cursor = max(0, min(index, len(self.order) - 1))
        self.cursor_key = self.order[self.cursor].key

    def rank(self, entry: RowEntry) -> tuple[Any, str]:
        """Where a row sorts: its value in the sort column, then (site, repository)."""
        return (self._primary(entry), entry.name_key)

    def position(self, rank: tuple[Any, str]) -> int:
        """Index in the display order of the first row not before `rank`: O(log n)."""
        order = self.order
        if not self.reverse:
            return bisect_left(order, rank, key=self.rank)
        low, high = 0, len(order)
        while low < high:
            middle = (low + high) // 2
            if self.rank(order[middle]) > rank:
                low = middle + 1
            else:
                high = middle
        return low

    def _apply_filters(self, entries: Iterable[RowEntry]) -> None:
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

    def _rebuild_order(self) -> None:
        rows = reversed(self._sorted) if self.reverse else self._sorted
        self.order = [entry for entry in rows if entry.visible]

    def _restore_cursor(self, hint: tuple[Any, str] | None) -> None:
        """Back onto the same key if it is visible; else onto the row that now takes its place."""
        if not self.order:
            self.cursor = 0
            return
        entry = self.entries.get(self.cursor_key) if self.cursor_key else None
        rank = self.rank(entry) if entry else hint
        index = self.cursor if rank is None else self.position(rank)
        self.cursor = min(index, len(self.order) - 1)
        self.cursor_key = self.order[self.cursor].key
