"""The console's speed work (geo_tui.console.tuning): applied only by the entry point, undone after it,
switchable off piece by piece; without it the console runs on Textual's public API and the interpreter's
own collector."""

from __future__ import annotations

import gc

import pytest
from textual.widget import Widget
from textual.widgets import Footer, Header
from textual.widgets._footer import FooterKey

from geo_tui.console import tuning
from geo_tui.console.screens.detail import RepositoryDetailScreen
from geo_tui.console.widgets.key_hints import KeyHints
from tests.console.test_snapshots import pinned_app, settle


def alive(kind: type[Widget]) -> int:
    gc.collect()
    return sum(isinstance(o, kind) for o in gc.get_objects())


async def test_without_the_entry_point_the_console_leaves_the_collector_and_footer_alone() -> None:
    thresholds = gc.get_threshold()
    app = pinned_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == thresholds
        footer = app.query_one(Footer)
        assert not isinstance(footer, KeyHints)


async def test_applied_freezes_the_first_full_load_and_undoes_everything_after() -> None:
    thresholds = gc.get_threshold()
    with tuning.applied() as pieces:
        assert pieces == frozenset(tuning.WORKAROUNDS)
        assert gc.get_threshold()[0] == tuning.YOUNG_THRESHOLD
        app = pinned_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            assert gc.get_freeze_count() > 10_000  # Textual, the app and the rows
            assert isinstance(app.query_one(Footer), KeyHints)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds
    assert not tuning.active("footer")


@pytest.mark.parametrize(
    ("setting", "on"),
    [
        ("", set(tuning.WORKAROUNDS)),
        ("all", set(tuning.WORKAROUNDS)),
        ("none", set()),
        ("-footer", set(tuning.WORKAROUNDS) - {"footer"}),
        ("-freeze, -collector", set(tuning.WORKAROUNDS) - {"freeze", "collector"}),
    ],
)
def test_each_piece_can_be_switched_off(monkeypatch: pytest.MonkeyPatch, setting: str, on: set[str]) -> None:
    monkeypatch.setenv(tuning.ENV, setting)
    thresholds = gc.get_threshold()
    with tuning.applied() as pieces:
        assert pieces == on
        assert {name for name in tuning.WORKAROUNDS if tuning.active(name)} == on
        assert (gc.get_threshold()[0] == tuning.YOUNG_THRESHOLD) is ("collector" in on)
    assert gc.get_threshold() == thresholds


@pytest.mark.parametrize("setting", ["-turbo", "footer", "yes"])
def test_a_mistyped_switch_is_an_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    monkeypatch.setenv(tuning.ENV, setting)
    with pytest.raises(ValueError, match=tuning.ENV), tuning.applied():
        pass


async def test_detail_screens_and_footer_rebuilds_do_not_pile_up() -> None:
    with tuning.applied():
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
            assert len(screens) == 1  # one detail screen, reused
            assert alive(Header) <= headers_at_start + 1  # the detail screen's own
            assert alive(FooterKey) <= keys_at_start + 15  # at most one footer's keys besides the live one
