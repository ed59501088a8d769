"""The key-hint bar at the bottom of every screen: Textual's footer, updated in place.

Textual's `Footer` removes and mounts all its keys whenever the screen's bindings are refreshed, which
happens on every focus change: opening the filter prompt spent ~80 ms of a keypress there during a
backfill (bench/console_latency.py). `KeyHints` looks the same and is still generated from the live
bindings (so `?` help and remapped keys stay true), but it changes only what differs: the text and state
of the keys it already has, hiding the ones not needed and mounting more only when it has too few.
It needs three private names of Textual, reached through geo_tui.console.tuning; the console shows it
only when the entry point applied that tuning (`key_hint_bar`), and Textual's own Footer otherwise.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer

from geo_tui.console.tuning import FooterKey, active, bindings_ready, set_bindings_ready, set_key_disabled

__all__ = ["KeyHints", "focus_with_keys", "key_hint_bar"]

# What one key shows: key, key as displayed, description, action, disabled, tooltip.
Hint = tuple[str, str, str, str, bool, str]


def focus_with_keys(widget: Widget) -> None:
    """Focus `widget` and show its keys in the same frame: after a focus change Textual refreshes the
    bindings only once the next frame is drawn, so the key-hint bar changed in a second frame, with a
    layout of its own. Both calls are queued, in this order, on the app."""
    widget.focus()
    widget.app.call_later(widget.screen.refresh_bindings)


def key_hint_bar() -> Footer:
    """The bar at the bottom of a screen: KeyHints when the footer tuning is on, else Textual's Footer."""
    return KeyHints() if active("footer") else Footer()


class KeyHints(Footer):
    """A footer that shows the focused context's key bindings and edits its keys in place."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: list[Hint] | None = None
        self._recompose_pending = False

    def compose(self) -> ComposeResult:
        self._shown = self._hints() if bindings_ready(self) else None
        yield from super().compose()

    def bindings_changed(self, screen: Screen[object]) -> None:
        set_bindings_ready(self)
        if not screen.app.app_focus:
            return
        if self.is_attached and screen is self.screen:
            # At once, not after the next refresh as Footer does: the keys change in the same frame as
            # the focus that changed them, which saves a whole layout and repaint per focus change.
            self._update_keys()

    def _hints(self) -> list[Hint] | None:
        """The keys to show, or None if some are grouped (then Textual's own layout is used)."""
        hints: list[Hint] = []
        seen: set[str] = set()
        for _, binding, enabled, tooltip in self.screen.active_bindings.values():
            if not binding.show or binding.action in seen:
                continue  # as Footer.compose: the first binding of each action
            if binding.group is not None:
                return None
            seen.add(binding.action)
            hints.append(self._hint(binding, enabled, tooltip))
        return hints

    def _hint(self, binding: Binding, enabled: bool, tooltip: str) -> Hint:
        display = self.app.get_key_display(binding)
        return (binding.key, display, binding.description, binding.action, not enabled, tooltip)

    def _update_keys(self) -> None:
        if not self.is_attached or not bindings_ready(self):
            return
        wanted = self._hints()
        if wanted is not None and wanted == self._shown:
            return
        if wanted is None or self._shown is None:
            if not self._recompose_pending:  # two recomposes at once would mount the keys twice
                self._recompose_pending = True
                self.call_after_refresh(self._recompose_once)
            return
        # Keys beyond those wanted are hidden, not removed: mounting a key styles it from scratch.
        keys = [key for key in self.query_children(FooterKey) if not key.has_class("-command-palette")]
        with self.app.batch_update():
            for key, hint in zip(keys, wanted, strict=False):
                self._edit(key, hint)
                key.display = True
            for key in keys[len(wanted) :]:
                key.display = False
            if len(wanted) > len(keys):
                self.mount_all(
                    [self._new_key(hint) for hint in wanted[len(keys) :]],
                    before=self._palette_key(),
                )
        self._shown = wanted

    async def _recompose_once(self) -> None:
        try:
            await self.recompose()
        finally:
            self._recompose_pending = False

    def _palette_key(self) -> FooterKey | None:
        palette = self.query_children(".-command-palette")
        return palette.first(FooterKey) if palette else None

    def _new_key(self, hint: Hint) -> FooterKey:
        key, display, description, action, disabled, tooltip = hint
        widget = FooterKey(key, display, description, action, disabled=disabled, tooltip=tooltip)
        return widget.data_bind(compact=Footer.compact)

    @staticmethod
    def _edit(widget: FooterKey, hint: Hint) -> None:
        disabled, tooltip = hint[4], hint[5]
        if (widget.key, widget.key_display, widget.description, widget.action) != hint[:4]:
            widget.key, widget.key_display, widget.description, widget.action = hint[:4]
            widget.clear_cached_dimensions()
            widget.refresh(layout=True)
        set_key_disabled(widget, disabled)
        widget.tooltip = tooltip or None
