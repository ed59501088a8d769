"""The events pane: the engine's log records, newest at the bottom, drawn with Textual's line API.

Only the lines on screen are turned into strips, and each record's strip is cached, so 5,000 lines
arriving at 50 a second cost a few lines of drawing per refresh. The pane follows new lines while the
view is at the bottom; scrolling up stops it there (the lines you read stay put), and scrolling back to
the end or pressing `end` makes it follow again.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from geo_tui.engine import LogRecord

__all__ = ["DEFAULT_MAX_LINES", "EventLog", "level_glyph", "record_where", "worker_label"]

DEFAULT_MAX_LINES = 5000
_GLYPHS = {"error": "✗", "critical": "✗", "warning": "!", "info": "·", "debug": " "}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # registry error bodies may carry escape codes
_SEQUENCE = itertools.count()


def level_glyph(level: str) -> str:
    """The glyph that says a record's severity without colour: ✗ error, ! warning, · info."""
    return _GLYPHS.get(level.lower(), "·")


def record_where(record: LogRecord) -> str:
    """'[site/repository]', '[site]', or '' for an engine-wide record."""
    where = "/".join(p for p in (record.site, record.repository) if p)
    return f"[{where}]" if where else ""


def worker_label(record: LogRecord) -> str:
    """'@host/pid' of the worker that logged the record (many workers on one database), else ''."""
    if not record.worker:
        return ""
    host, _, rest = record.worker.partition("/")
    pid = rest.partition("/")[0]
    return f"@{host}/{pid}" if pid else f"@{host}"


def _one_line(message: str) -> str:
    return _CONTROL.sub("", " ".join(message.split()))


class _Line:
    """One record and its text, measured once."""

    __slots__ = ("haystack", "level", "message", "record", "seq", "stamp", "where", "width")

    def __init__(self, record: LogRecord) -> None:
        self.seq = next(_SEQUENCE)  # the strip cache's key: record ids need not be unique
        self.record = record
        self.level = record.level.lower()
        self.stamp = time.strftime("%H:%M:%S", time.localtime(record.at))
        # whose line it is (another worker's, on a console attached to one of many), then where
        where = " ".join(p for p in (worker_label(record), record_where(record)) if p)
        self.where = _CONTROL.sub("", where)
        self.message = _one_line(record.message)
        text = self.text
        self.width = cell_len(text)
        self.haystack = f"{self.level} {text}".lower()  # "error" finds errors, not only "✗"

    @property
    def text(self) -> str:
        parts = [self.stamp, level_glyph(self.level), self.where, self.message]
        return " ".join(p for p in parts if p)

    def saved(self) -> str:
        day = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.record.at))
        return " ".join(p for p in (day, f"{self.level:<7}", self.where, self.message) if p)


class EventLog(ScrollView, can_focus=True):
    """A capped, filterable log of engine records that follows the newest while at the bottom."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("end", "end", "Follow", show=False, id="log.end"),
        # The app owns where logs are saved (and says so); this key only asks it.
        Binding("s", "app.save_log", "Save log", id="log.save"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "event-log--time",
        "event-log--where",
        "event-log--error",
        "event-log--warning",
        "event-log--info",
        "event-log--debug",
    }

    DEFAULT_CSS = """
    EventLog {
        background: $surface;
        color: $foreground;
        height: 1fr;
        overflow-x: auto;
        overflow-y: auto;
        scrollbar-size-horizontal: 1;
        & > .event-log--time { color: $text-muted; }
        & > .event-log--where { color: $text-secondary; }
        & > .event-log--error { color: $text-error; text-style: bold; }
        & > .event-log--warning { color: $text-warning; }
        & > .event-log--info { }
        & > .event-log--debug { color: $text-muted; }
    }
    """

    def __init__(
        self,
        *,
        max_lines: int = DEFAULT_MAX_LINES,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.max_lines = max_lines
        self._lines: deque[_Line] = deque(maxlen=max_lines)
        self._shown: deque[_Line] = self._lines  # the filtered lines; the same deque when unfiltered
        self._needle = ""
        self._widest = 0
        self._following = True
        self._strips: LRUCache[int, Strip] = LRUCache(1024)
        self._styles: dict[str, Style] = {}

    # -- reading ----------------------------------------------------------------------------------

    @property
    def following(self) -> bool:
        """True while new lines scroll into view."""
        return self._following

    @property
    def filter_text(self) -> str:
        return self._needle

    @property
    def total_count(self) -> int:
        """Lines held (at most `max_lines`), filtered or not."""
        return len(self._lines)

    @property
    def line_count(self) -> int:
        """Lines that pass the filter."""
        return len(self._shown)

    def lines(self) -> list[str]:
        """The text of the lines that pass the filter, oldest first, as drawn."""
        return [line.text for line in self._shown]

    # -- changing ---------------------------------------------------------------------------------

    def add(self, records: Iterable[LogRecord]) -> None:
        """Append a batch of records; the oldest go once `max_lines` are held."""
        filtered = self._shown is not self._lines
        evicted = 0  # shown lines that left the top
        for record in records:
            line = _Line(record)
            if len(self._lines) == self.max_lines:
                oldest = self._lines[0]
                if not filtered or (self._shown and self._shown[0] is oldest):
                    evicted += 1
                    if filtered:
                        self._shown.popleft()
                self._strips.discard(oldest.seq)
            self._lines.append(line)
            if filtered and self._needle in line.haystack:
                self._shown.append(line)
            self._widest = max(self._widest, line.width)
        self._resized(evicted)

    def set_filter(self, text: str) -> None:
        """Show only lines containing `text` (any case); '' shows every line. The view follows again."""
        self._needle = text.lower()
        if self._needle:
            self._shown = deque((ln for ln in self._lines if self._needle in ln.haystack), self.max_lines)
        else:
            self._shown = self._lines
        self._widest = max((line.width for line in self._shown), default=0)
        self._following = True
        self._resized(0)
        self.refresh()

    def clear(self) -> None:
        self._lines.clear()
        self._shown = self._lines if not self._needle else deque(maxlen=self.max_lines)
        self._widest = 0
        self._strips.clear()
        self._following = True
        self._resized(0)
        self.refresh()

    def save(self, path: Path) -> int:
        """Write the lines that pass the filter to `path` as plain text; returns how many."""
        text = "".join(line.saved() + "\n" for line in self._shown)
        path.write_text(text, encoding="utf-8")
        return len(self._shown)

    # -- following --------------------------------------------------------------------------------

    def _resized(self, evicted: int) -> None:
        self.virtual_size = Size(self._widest, len(self._shown))
        if self._following:
            self._scroll_to_end()
        elif evicted:
            # Lines left the top: move up with them, so the lines being read stay on screen.
            self.scroll_to(y=max(0, self.scroll_y - evicted), animate=False, force=True)
            self.refresh()
        else:
            self.refresh()

    def _scroll_to_end(self) -> None:
        self.scroll_to(y=self.max_scroll_y, animate=False, force=True)
        self.refresh()

    def _stick(self) -> None:
        if self._following and self.scroll_y != self.max_scroll_y:
            self._scroll_to_end()

    # A scrollbar that appears during layout takes a line (or column) after the lines were added,
    # which moves the end: follow it then, or the newest line stays hidden under the scrollbar.
    def watch_show_horizontal_scrollbar(self) -> None:
        self._stick()

    def watch_show_vertical_scrollbar(self) -> None:
        self._stick()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._following = round(new_value) >= self.max_scroll_y

    def on_resize(self) -> None:
        if self._following:
            self._scroll_to_end()

    def action_end(self) -> None:
        """Jump to the newest line and follow again."""
        self._following = True
        self._scroll_to_end()

    # -- drawing ----------------------------------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._strips.clear()

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(f"event-log--{name}", partial=True)
        return style

    def _strip(self, line: _Line) -> Strip:
        strip = self._strips.get(line.seq)
        if strip is None:
            base = self.rich_style
            level = line.level if line.level in ("error", "warning", "debug") else "info"
            if line.level == "critical":
                level = "error"
            tone = base + self._style(level)
            space = Segment(" ", base)
            segments = [Segment(line.stamp, base + self._style("time")), space]
            segments.append(Segment(level_glyph(line.level), tone))
            if line.where:
                segments += [space, Segment(line.where, base + self._style("where"))]
            if line.message:
                segments += [space, Segment(line.message, tone)]
            strip = self._strips[line.seq] = Strip(segments, line.width)
        return strip

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        index = round(self.scroll_y) + y
        if index >= len(self._shown):
            return Strip.blank(width, self.rich_style)
        scroll_x = round(self.scroll_x)
        strip = self._strip(self._shown[index])
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)
