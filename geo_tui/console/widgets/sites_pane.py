"""The sites pane: a row of site cards, primary first, that scrolls sideways when the sites do not fit.

Cards are created once per site and updated in place; a refresh never remounts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.containers import HorizontalScroll

from geo_tui.console.widgets.site_card import SiteCard
from geo_tui.engine import SiteSnapshot

__all__ = ["SitesPane"]


class SitesPane(HorizontalScroll):
    """Every site's card side by side; `update_snapshots` keeps them current."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "first", "First site", show=False, id="sites.first"),
        Binding("end", "last", "Last site", show=False, id="sites.last"),
    ]

    DEFAULT_CSS = """
    SitesPane {
        height: auto;
        scrollbar-size-horizontal: 1;
        & > SiteCard { margin-right: 1; }
        &:focus > SiteCard { border-title-color: $accent; }
    }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._cards: dict[str, SiteCard] = {}

    @property
    def cards(self) -> dict[str, SiteCard]:
        """The cards by site name."""
        return dict(self._cards)

    def update_snapshots(self, snapshots: Sequence[SiteSnapshot], now: float) -> None:
        """Show each site's snapshot: new sites get a card, gone ones lose theirs, the rest update."""
        ordered = sorted(snapshots, key=lambda s: s.role != "primary")  # stable: config order otherwise
        names = {s.name for s in ordered}
        for gone in [name for name in self._cards if name not in names]:
            self._cards.pop(gone).remove()
        for snapshot in ordered:
            card = self._cards.get(snapshot.name)
            if card is None:
                card = self._cards[snapshot.name] = SiteCard(snapshot.name)
                if snapshot.role == "primary" and len(self._cards) > 1:
                    self.mount(card, before=0)
                else:
                    self.mount(card)
            card.update_snapshot(snapshot, now)

    def action_first(self) -> None:
        self.scroll_to(x=0, animate=False)

    def action_last(self) -> None:
        self.scroll_to(x=self.max_scroll_x, animate=False)
