"""How the repositories pane's lines become strips: column layout, component styles, a cache of lines.

No widget state here beyond what drawing needs: the widget in `repository_table` asks for a line and
says when styles changed. The cache keys carry everything a line shows, so a changed row or age
draws again and an unchanged one is a dictionary hit.
"""

from __future__ import annotations

from collections.abc import Callable, Set

from rich.segment import Segment
from rich.style import Style
from textual.cache import LRUCache
from textual.strip import Strip

from geo_tui.engine import RepositoryRow
from geo_tui.figures import ago

from .repository_lines import Column, fit, fit_columns, row_cells, verification_text
from .repository_rows import Key, RepositoryRows, RowEntry

__all__ = ["RowPainter"]


class RowPainter:
    """Draws the header and the row lines of `rows`; `component(name)` is the widget's full style of
    `repository-table--<name>` (name '' for the widget's own), `now` its clock."""

    def __init__(self, rows: RepositoryRows, component: Callable[[str], Style], now: Callable[[], float]):
        self._rows = rows
        self._component = component
        self.now = now
        self._layout_key: tuple[object, ...] = ()
        self._layout: list[tuple[Column, int]] = []
        self._strips: LRUCache[tuple[object, ...], Strip] = LRUCache(256)  # ~5 screens
        self._styles: dict[str, Style] = {}
        self.seconds_shown = False  # a line drawn since the last redraw shows an age under a minute

    def styles_changed(self) -> None:
        self._styles.clear()
        self._strips.clear()

    def style(self, name: str = "") -> Style:
        """A component's style, to lay over the widget's own (name ''): cached until styles change."""
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self._component(name)
        return style

    def columns(self, width: int) -> list[tuple[Column, int]]:
        """The columns that fit in `width` and their widths, worked out again only when these change."""
        rows = self._rows
        key = (width, rows.site_width, rows.repository_width, rows.sort_column)
        if key != self._layout_key:
            self._layout = fit_columns(width, rows.site_width, rows.repository_width, rows.sort_column)
            self._layout_key = key
        return self._layout

    def line(self, y: int, top: int, width: int, marked: Set[Key]) -> Strip:
        """Line `y` of the pane (0: the header) when display row `top` is the first under the header."""
        self.columns(width)  # brings self._layout_key up to date for the cache keys below
        if y == 0:
            return self.header(width)
        index = top + y - 1
        if index >= len(self._rows.order):
            return Strip.blank(width, self.style())
        entry = self._rows.order[index]
        now, row = self.now(), entry.row
        synced = ago(row.last_synced_at, now)
        cursor, is_marked = index == self._rows.cursor, entry.key in marked
        verified = self.verification_text(row, now)
        for ts in (row.last_synced_at, row.verified_at):
            if ts is not None and now - ts < 60:
                self.seconds_shown = True
        key = (entry.version, width, self._layout_key, cursor, is_marked, synced, verified)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strips[key] = self._row_strip(entry, width, synced, cursor, is_marked, verified)
        return strip

    def header(self, width: int) -> Strip:
        reverse, sort_column = self._rows.reverse, self._rows.sort_column
        key = ("header", width, self._layout_key, reverse)
        strip = self._strips.get(key)
        if strip is None:
            style = self.style() + self.style("header")
            cells = []
            for column, span in self.columns(width):
                title = column.title
                if column.name == sort_column:
                    title = f"{fit(title, span - 2).rstrip()} {'▼' if reverse else '▲'}"
                cells.append(fit(title, span, column.right))
            strip = self._strips[key] = Strip([Segment(fit(" ".join(cells), width), style)], width)
        return strip

    def verification_text(self, row: RepositoryRow, now: float | None = None) -> str:
        """'✓ deep 2d': state, the depth of the last check and its age, once a check with a depth finished."""
        return verification_text(row, self.now() if now is None else now)

    def _row_strip(
        self, entry: RowEntry, width: int, synced: str, cursor: bool, marked: bool, verified: str
    ) -> Strip:
        base = self.style()
        overlay = self.style("cursor") if cursor else Style()
        cells = row_cells(entry, synced, marked, verified)
        segments: list[Segment] = []
        used = 0
        for column, span in self.columns(width):
            text, style_name = cells[column.name]
            if segments:
                segments.append(Segment(" ", base + overlay))
            style = base + self.style(style_name) if style_name else base
            segments.append(Segment(fit(text, span, column.right), style + overlay))
            used += span + (1 if used else 0)
        if used < width:
            segments.append(Segment(" " * (width - used), base + overlay))
        return Strip(segments, width).crop(0, width)
