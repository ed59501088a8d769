"""A scroll view with a row cursor over `RepositoryRows`: moving it by key, page and click, and keeping it
on screen. What the rows are, and how a line is drawn, is `repository_table`'s business.

The key bindings themselves are declared on `RepositoryTable` (their ids and order are the footer's);
the actions they name live here.
"""

from __future__ import annotations

from textual import events
from textual.scroll_view import ScrollView

from geo_tui.engine import RepositoryRow

from .repository_rows import Key, RepositoryRows

__all__ = ["RowCursorView"]


class RowCursorView(ScrollView):
    """Line 0 is a header; display row i is line i + 1."""

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None):
        super().__init__(name=name, id=id, classes=classes)
        self._rows = RepositoryRows()

    @property
    def cursor_key(self) -> Key | None:
        rows = self._rows
        return rows.order[rows.cursor].key if rows.order else None

    @property
    def cursor_row(self) -> RepositoryRow | None:
        rows = self._rows
        return rows.order[rows.cursor].row if rows.order else None

    @property
    def visible_count(self) -> int:
        return len(self._rows.order)

    def visible_keys(self) -> list[Key]:
        """The keys the filters let through, in display order."""
        return [entry.key for entry in self._rows.order]

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

    def _page_height(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

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

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is not None and offset.y > 0:
            self.move_cursor(round(self.scroll_y) + offset.y - 1)

    def on_resize(self) -> None:
        self._scroll_cursor_into_view()
