"""The one-line filter prompt that `/` opens at the bottom of the screen."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label

from .key_hints import focus_with_keys


class FilterBar(Horizontal):
    """Type a substring (or `re:` and a regular expression); enter applies, esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="filter.cancel")]

    DEFAULT_CSS = """
    FilterBar { dock: bottom; height: 1; display: none; background: $boost; }
    FilterBar.-open { display: block; }
    FilterBar Label { width: auto; padding: 0 1; color: $accent; }
    FilterBar Input { border: none; height: 1; padding: 0; width: 1fr; background: $boost; }
    """

    @dataclass
    class Applied(Message):
        target: str
        text: str
        regex: bool

    @dataclass
    class Cancelled(Message):
        target: str

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.target = "repositories"

    def compose(self) -> ComposeResult:
        yield Label(f"filter {self.target}")
        yield Input(placeholder="substring, or re:<regex>; enter applies, esc cancels")

    def open(self, target: str, current: str) -> None:
        if target != self.target:  # a label update lays the screen out again: only when it changes
            self.target = target
            self.query_one(Label).update(f"filter {target}")
        field = self.query_one(Input)
        field.value = current
        self.add_class("-open")
        focus_with_keys(field)

    def close(self) -> None:
        self.remove_class("-open")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value
        regex = text.startswith("re:")
        self.post_message(self.Applied(self.target, text[3:] if regex else text, regex))

    def action_cancel(self) -> None:
        self.post_message(self.Cancelled(self.target))
