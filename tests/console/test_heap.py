"""The console keeps its heap small for the cycle collector: loaded rows frozen, removed widgets let go."""

from __future__ import annotations

import gc

from textual.widget import Widget
from textual.widgets import Header
from textual.widgets._footer import FooterKey

from geo_tui.console.heap import YOUNG_THRESHOLD
from geo_tui.console.screens.detail import RepositoryDetailScreen
from tests.console.test_snapshots import pinned_app, settle


def alive(kind: type[Widget]) -> int:
    gc.collect()
    return sum(isinstance(o, kind) for o in gc.get_objects())


async def test_the_first_full_load_is_frozen_out_of_full_collections() -> None:
    gc.unfreeze()
    app = pinned_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert gc.get_freeze_count() > 10_000  # Textual, the app and the rows


async def test_the_console_collects_young_objects_less_often() -> None:
    app = pinned_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD


async def test_detail_screens_and_footer_rebuilds_do_not_pile_up() -> None:
    app = pinned_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        keys_at_start, headers_at_start = alive(FooterKey), alive(Header)
        screens: set[int] = set()
        for _ in range(12):  # each focus change changes the footer's keys; each enter opens the detail
            await pilot.press("slash", "e", "enter", "enter")
            await pilot.pause()
            assert isinstance(app.screen, RepositoryDetailScreen)
            screens.add(id(app.screen))
            await pilot.press("escape")
            await pilot.pause()
        app._prune_watchers()  # what the app's timer does every few seconds
        assert len(screens) == 1  # one detail screen, reused
        assert alive(Header) <= headers_at_start + 1  # the detail screen's own
        assert alive(FooterKey) <= keys_at_start + 15  # at most one footer's keys besides the live one
