"""The private names of Textual the console relies on, each checked against the installed Textual.

pyproject.toml holds Textual to the minor version these were written for (8.2). A Textual that renames
or changes one of them fails here, by name, instead of breaking the console in a way no other test
sees. Each has no public equivalent in Textual 8.2. geo_tui/console/tuning.py is the only module that
touches the KeyHints ones, and the console uses them only when the entry point applies that tuning:

- `textual.widgets._footer.FooterKey` (KeyHints): the footer's key widget is not exported, and Footer
  has no API to edit its keys in place (it recomposes all of them on every focus change).
- `Footer._bindings_ready` (KeyHints): whether the screen's bindings reached the footer yet; Footer
  composes nothing before that, and exposes no public flag.
- `FooterKey._disabled` (KeyHints): FooterKey takes `disabled` only in its constructor; a disabled key
  rings the bell instead of pressing the key, and there is no setter.
- `App._handle_exception` (GeoTuiApp): the only hook for an error Textual caught; `App.return_code`
  says one happened, not which.
"""

from __future__ import annotations

import inspect

import pytest
import textual
from textual.app import App, ComposeResult
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from geo_tui.console.widgets.key_hints import KeyHints
from tests.console.test_snapshots import pinned_app, settle


def test_textual_is_the_tested_minor_version() -> None:
    major, minor = (int(part) for part in textual.__version__.split(".")[:2])
    assert (major, minor) == (8, 2), f"Textual {textual.__version__}: re-check the names in this file"


def test_footer_key_takes_what_key_hints_gives_it() -> None:
    parameters = inspect.signature(FooterKey.__init__).parameters
    assert list(parameters)[1:7] == ["key", "key_display", "description", "action", "disabled", "tooltip"]
    key = FooterKey("q", "q", "Quit", "quit", disabled=True)
    assert (key.key, key.key_display, key.description, key.action) == ("q", "q", "Quit", "quit")
    assert key._disabled is True and key.has_class("-disabled")
    assert "compact" in FooterKey._reactives  # what KeyHints binds to Footer.compact


class _Hints(App[None]):
    BINDINGS = [("x", "bell", "Ring")]

    def compose(self) -> ComposeResult:
        yield KeyHints()


async def test_a_footer_knows_when_the_bindings_are_ready() -> None:
    assert Footer()._bindings_ready is False  # Footer composes no keys until then
    app = _Hints()
    async with app.run_test(size=(60, 5)) as pilot:
        await pilot.pause()
        hints = app.query_one(KeyHints)
        assert hints._bindings_ready is True  # set by Footer.bindings_changed
        assert any(key.key == "x" for key in hints.query(FooterKey))


async def test_a_disabled_footer_key_rings_instead_of_pressing(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _Hints()
    async with app.run_test(size=(60, 5)) as pilot:
        await pilot.pause()
        key = next(k for k in app.query_one(KeyHints).query(FooterKey) if k.key == "x")
        rang: list[str] = []
        monkeypatch.setattr(app, "bell", lambda: rang.append("bell"))
        monkeypatch.setattr(app, "simulate_key", lambda k: rang.append(k))
        KeyHints._edit(key, ("x", "x", "Ring", "bell", True, ""))  # how KeyHints disables a key
        key.on_mouse_down()
        KeyHints._edit(key, ("x", "x", "Ring", "bell", False, ""))
        key.on_mouse_down()
        assert rang == ["bell", "x"]
        assert not key.has_class("-disabled")


class _Boom(Exception):
    pass


async def test_an_error_textual_catches_reaches_the_console() -> None:
    app = pinned_app()
    error = _Boom("a bug in a handler")

    def fail() -> None:
        raise error

    with pytest.raises(_Boom):  # Textual's test harness raises it again when the app ends
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            app.call_later(fail)
            await pilot.pause()
    assert app.crash is error
    assert app.return_code == 1
