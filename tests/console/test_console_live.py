"""The console on a real engine against real Distribution, driven from the keyboard with Pilot: its own
engine in a child process, as `geo-tui` runs it (`make_app`'s default)."""

from __future__ import annotations

from pathlib import Path

from geo_tui.config import load_config
from geo_tui.console.app import make_app
from geo_tui.console.screens.confirm import ConfirmScreen
from geo_tui.console.screens.detail import RepositoryDetailScreen
from geo_tui.console.widgets.event_log import EventLog
from geo_tui.console.widgets.repository_table import RepositoryTable
from geo_tui.console.widgets.sites_pane import SitesPane
from geo_tui.engine import Engine, SyncState, VerificationState
from tests.support.distribution import Distribution
from tests.support.geo import write_geo_config
from tests.support.inprocess import EngineInThread
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.pilot import filter_to, until
from tests.support.push import RawPusher


async def test_resync_verify_pause_and_detail_from_the_keyboard(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    for name in ("shop/api", "shop/web", "ops/tools"):
        primary_pusher.push_tree(name, oci_image(name), "v1")
    config = load_config(write_geo_config(tmp_path, primary, [secondary], key_pair))
    app = make_app(config)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(RepositoryTable)
        await until(
            pilot,
            lambda: (
                table.total_count == 3
                and all(table.row(k).state is SyncState.SYNCED for k in table.visible_keys())
            ),  # type: ignore[union-attr],
        )

        # pause: a push is not copied while paused, even when asked for
        await pilot.press("p")
        await until(pilot, lambda: app.paused)
        primary_pusher.push_tree("shop/api", oci_image("api-v2"), "v2")
        await filter_to(pilot, "shop/api")
        assert table.visible_keys() == [("secondary", "shop/api")]
        await pilot.press("r")
        await pilot.pause(1.5)
        assert "v2" not in secondary_pusher.list_tags("shop/api")

        # resume: the queued resync runs and the secondary really changes
        await pilot.press("p")
        await until(pilot, lambda: "v2" in secondary_pusher.list_tags("shop/api"))
        await until(
            pilot, lambda: table.cursor_row is not None and table.cursor_row.state is SyncState.SYNCED
        )

        # verify from the keyboard: the state shown becomes succeeded
        await pilot.press("v")
        await until(
            pilot,
            lambda: (
                table.cursor_row is not None
                and table.cursor_row.verification_state is VerificationState.SUCCEEDED
            ),
        )

        # detail: tags on both sites side by side, then back
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RepositoryDetailScreen) and app.screen.loaded)
        screen = app.screen
        assert isinstance(screen, RepositoryDetailScreen) and screen.detail is not None
        assert {s.site: set(s.tags or {}) for s in screen.detail.sites} == {
            "primary": {"v1", "v2"},
            "secondary": {"v1", "v2"},
        }
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, RepositoryDetailScreen)

        # bulk: clear the filter, resync everything shown after a confirmation that says how many
        await filter_to(pilot, "")
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and "3 all repositories" in app.screen.question
        await pilot.press("n")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)

        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, timeout=20)


async def test_read_only_hides_every_action_that_changes_something(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    primary_pusher.push_tree("ro/app", oci_image("ro"), "v1")
    app = make_app(load_config(write_geo_config(tmp_path, primary, [secondary], key_pair)), read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(RepositoryTable)
        await until(pilot, lambda: table.total_count == 1)
        for action in ("resync", "verify", "resync_many", "verify_many", "toggle_pause"):
            assert app.check_action(action, ()) is False
        await pilot.press("p")
        await pilot.pause(0.5)
        assert not app.paused
        shown = {
            b.binding.action
            for b in app.active_bindings.values()
            if app.check_action(b.binding.action.split("(")[0], ()) is not False
        }
        assert "resync" not in shown and "toggle_pause" not in shown
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)


async def test_a_site_going_down_shows_unhealthy_and_recovers(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    primary_pusher.push_tree("up/app", oci_image("up"), "v1")
    config = load_config(write_geo_config(tmp_path, primary, [secondary], key_pair))
    link = EngineInThread(config, lambda c: Engine(c, health_interval=0.3))
    app = make_app(config, link=link)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "secondary" in app.query_one(SitesPane).cards)
        card = app.query_one(SitesPane).cards["secondary"]
        await until(pilot, lambda: "healthy" in card.text and not card.has_class("-unhealthy"))
        secondary.stop()
        await until(pilot, lambda: card.has_class("-unhealthy") and "✗" in card.text)
        assert any("unreachable" in line for line in app.query_one(EventLog).lines())
        secondary.start()
        await until(pilot, lambda: not card.has_class("-unhealthy") and "● healthy" in card.text)
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)
