"""Help generated from the live key bindings, so it never drifts from what the keys do."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 72; max-width: 100%; height: auto; max-height: 90%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    """

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        lines: list[str] = []
        for title, rows in self.sections:
            if not rows:
                continue
            lines.append(f"[b]{title}[/b]")
            lines.extend(f"  [b]{key:<12}[/b] {description}" for key, description in rows)
            lines.append("")
        lines.append("[dim]esc closes this help[/dim]")
        with VerticalScroll():
            yield Static("\n".join(lines), markup=True)
