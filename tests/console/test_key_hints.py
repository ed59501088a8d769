"""KeyHints: the footer follows the focused context's bindings, editing its keys, not rebuilding them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from textual.pilot import Pilot
from textual.widgets._footer import FooterKey

from geo_tui.console.app import GeoTuiApp
from geo_tui.console.screens.detail import RepositoryDetailScreen
from geo_tui.console.tuning import applied
from geo_tui.console.widgets.key_hints import KeyHints
from geo_tui.console.widgets.repository_table import RepositoryTable
from tests.console.test_snapshots import pinned_app, settle

MAIN_KEYS = [
    "⏎ Details", "space Mark", "o Sort", "q Quit", "? Help", "/ Filter", "r Resync", "v Verify", "p Pause",
    "W Workers",
]  # fmt: skip
# What Textual's own Footer shows in each place (the prompt's Input takes the printable keys).
PROMPT_KEYS = ["esc Cancel", "/ Filter"]
DETAIL_KEYS = ["esc Back", "q Quit", "? Help", "/ Filter", "r Resync", "v Verify", "p Pause", "W Workers"]


@pytest.fixture(autouse=True)
def key_hints_on() -> Iterator[None]:
    """KeyHints is the footer only where the entry point applies the console's tuning, as `geo-tui` does."""
    with applied():
        yield


def shown(app: GeoTuiApp) -> list[str]:
    """The footer's keys left to right as drawn (the command palette key is docked apart)."""
    keys = [
        k
        for k in app.screen.query_one(KeyHints).query(FooterKey)
        if k.display and not k.has_class("-command-palette")
    ]
    return [f"{k.key_display} {k.description}" for k in sorted(keys, key=lambda k: k.region.x)]


def disabled(app: GeoTuiApp) -> set[str]:
    return {k.description for k in app.screen.query(FooterKey) if k.has_class("-disabled")}


async def until(pilot: Pilot[None], condition: Callable[[], bool]) -> None:
    for _ in range(100):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError("condition not met in 2 s")


async def test_the_footer_follows_focus_and_keeps_its_key_widgets() -> None:
    app = pinned_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await until(pilot, lambda: shown(app) == MAIN_KEYS)
        first = list(app.screen.query(FooterKey))

        await pilot.press("slash")  # the prompt has its own escape; the table's keys go
        await until(pilot, lambda: shown(app) == PROMPT_KEYS)
        await pilot.press("enter")
        await until(pilot, lambda: shown(app) == MAIN_KEYS)
        assert all(key in first for key in app.screen.query(FooterKey))  # edited, not rebuilt
        assert all(key.region.width > 0 for key in app.screen.query(FooterKey) if key.display)


async def test_keys_that_do_not_apply_are_dimmed_and_come_back() -> None:
    app = pinned_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"no-such-repository", "enter")
        await until(pilot, lambda: app.query_one(RepositoryTable).visible_count == 0)
        await until(pilot, lambda: disabled(app) == {"Details", "Mark", "Resync", "Verify"})
        await pilot.press("slash", *["backspace"] * len("no-such-repository"), "enter")
        await until(pilot, lambda: not disabled(app) and shown(app) == MAIN_KEYS)


async def test_the_detail_screen_is_reused_and_starts_over_for_each_repository() -> None:
    app = pinned_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        table = app.query_one(RepositoryTable)
        first_key = table.cursor_key
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RepositoryDetailScreen))
        screen = app.screen
        assert isinstance(screen, RepositoryDetailScreen) and first_key is not None
        assert screen.repository == first_key[1] and not screen.loaded
        await until(pilot, lambda: shown(app) == DETAIL_KEYS)
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, RepositoryDetailScreen))

        await pilot.press("down", "down", "enter")
        await until(pilot, lambda: isinstance(app.screen, RepositoryDetailScreen))
        second_key = table.cursor_key
        assert app.screen is screen and second_key is not None and second_key != first_key
        assert screen.repository == second_key[1] and screen.title == second_key[1]
