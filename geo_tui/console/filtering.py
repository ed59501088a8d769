"""The console's filters: text (or a regex) over the repositories or the event log through the filter bar,
inverted with `!`, and by sync state; and the pane title that says what the filter shows.

A mixin of `GeoTuiApp` (its bindings, ids and `check_action` stay there).
"""

from __future__ import annotations

from textual.app import App

from geo_tui.engine import SyncState

from .widgets.event_log import EventLog
from .widgets.filter_bar import FilterBar
from .widgets.key_hints import focus_with_keys
from .widgets.repository_table import RepositoryTable

__all__ = ["STATE_FILTERS", "Filtering"]

STATE_FILTERS: dict[str, frozenset[SyncState] | None] = {
    "failed": frozenset({SyncState.FAILED}),
    "pending": frozenset({SyncState.PENDING, SyncState.STARTED}),
    "synced": frozenset({SyncState.SYNCED}),
    "all": None,
}


class Filtering(App[None]):
    _text_filter = ""
    _regex = False
    _invert = False
    _log_filter = ""

    def action_show_state(self, state: str) -> None:
        self.query_one(RepositoryTable).set_state_filter(STATE_FILTERS[state])

    def action_filter(self) -> None:
        target = "log" if self.focused is self.query_one(EventLog) else "repositories"
        table_filter = ("re:" if self._regex else "") + self._text_filter
        current = self._log_filter if target == "log" else table_filter
        self.query_one(FilterBar).open(target, current)

    def on_filter_bar_applied(self, message: FilterBar.Applied) -> None:
        bar = self.query_one(FilterBar)
        if message.target == "log":
            self._log_filter = message.text
            self.query_one(EventLog).set_filter(message.text)
            bar.close()
            focus_with_keys(self.query_one(EventLog))
            return
        table = self.query_one(RepositoryTable)
        try:
            table.set_text_filter(message.text, regex=message.regex, invert=self._invert)
        except ValueError as exc:
            self.notify(str(exc), severity="error")
            return
        self._text_filter, self._regex = message.text, message.regex
        bar.close()
        focus_with_keys(table)

    def on_filter_bar_cancelled(self, message: FilterBar.Cancelled) -> None:
        self.query_one(FilterBar).close()
        focus_with_keys(self.query_one(EventLog if message.target == "log" else RepositoryTable))

    def action_invert_filter(self) -> None:
        self._invert = not self._invert
        table = self.query_one(RepositoryTable)
        table.set_text_filter(self._text_filter, regex=self._regex, invert=self._invert)
        self.notify(
            "filter inverted: showing what does not match" if self._invert else "showing what matches"
        )

    def on_repository_table_counts_changed(self, message: RepositoryTable.CountsChanged) -> None:
        shown = f"{message.total:,}"
        if message.visible != message.total:
            shown = f"{message.visible:,} of {shown}"
        parts = [f"Repositories {shown}", f"{message.failed:,} failed"]
        if message.marked:
            parts.append(f"{message.marked:,} marked")
        if self._text_filter:
            parts.append(f"{'not ' if self._invert else ''}matching {self._text_filter!r}")
        self.query_one("#repositories-pane").border_title = " · ".join(parts)
