"""Consoles attached to a real `geo-tui serve` on real Distribution, driven from the keyboard with Pilot."""

from __future__ import annotations

import signal
from pathlib import Path

from geo_tui.config import Secret
from geo_tui.console.app import GeoTuiApp, make_app
from geo_tui.console.widgets.event_log import EventLog
from geo_tui.console.widgets.repository_table import RepositoryTable
from geo_tui.engine import SyncState, VerificationState
from geo_tui.link.remote import RemoteLink
from tests.support.distribution import Distribution, free_port
from tests.support.geo import tag_digests
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.pilot import filter_to, until
from tests.support.push import RawPusher
from tests.support.served import ServedEngine, write_served_config

TOKEN = "console-api-token-0123456789-abc"


def synced(app: GeoTuiApp, count: int) -> bool:
    table = app.query_one(RepositoryTable)
    rows = [table.row(k) for k in table.visible_keys()]
    return table.total_count == count and all(r is not None and r.state is SyncState.SYNCED for r in rows)


def serve(
    tmp_path: Path, primary: Distribution, eu: Distribution, key_pair: TestKeyPair, **api: str
) -> ServedEngine:
    port = free_port()
    config = write_served_config(tmp_path / "geo", primary, [eu], key_pair, port=port, api=dict(api))
    socket = api.get("listen")
    return ServedEngine(
        config,
        tmp_path / "serve.log",
        api_url=None if socket else f"http://127.0.0.1:{port}",
        api_socket=Path(socket) if socket else None,
    )


async def test_resync_and_verify_from_the_keyboard_act_on_the_served_engine(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    for name in ("shop/api", "shop/web"):
        primary_pusher.push_tree(name, oci_image(name), "v1")
    engine = serve(tmp_path, primary, secondary, key_pair, token=TOKEN).start(TOKEN)
    try:
        app = make_app(None, link=RemoteLink(engine.target, token=Secret(TOKEN)))
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: synced(app, 2))
            assert f"attached to {engine.api_url}" in app.sub_title and "STALE" not in app.sub_title
            table = app.query_one(RepositoryTable)
            log = app.query_one(EventLog)
            await filter_to(pilot, "shop/api")
            assert table.cursor_key == ("secondary", "shop/api")

            # resync: a push the engine was not told about reaches the secondary when `r` asks for it
            v2 = oci_image("api-v2")
            primary_pusher.push_tree("shop/api", v2, "v2")
            await pilot.press("r")
            await until(pilot, lambda: tag_digests(secondary_pusher, "shop/api").get("v2") == v2.digest)

            # verify: once the engine's own check of the copy is done, the secondary's v1 is tampered with;
            # nothing but `v` looks again, and the resync its mismatch queues repairs the secondary
            await until(
                pilot,
                lambda: (
                    (row := table.cursor_row) is not None
                    and row.tag_count == 2
                    and row.verification_state is VerificationState.SUCCEEDED
                ),
            )
            good = tag_digests(primary_pusher, "shop/api")["v1"]
            secondary_pusher.push_tree("shop/api", oci_image("tampered"), "v1")
            assert tag_digests(secondary_pusher, "shop/api")["v1"] != good
            await pilot.press("v")
            await until(pilot, lambda: tag_digests(secondary_pusher, "shop/api")["v1"] == good)
            await until(
                pilot,
                lambda: any("verification failed: different digest: v1" in line for line in log.lines()),
            )
            await pilot.press("q")
            await until(pilot, lambda: not app.is_running)
        assert engine.process is not None and engine.process.poll() is None  # detaching never stops serve
    finally:
        engine.stop(signal.SIGKILL)
    assert TOKEN not in engine.log_path.read_text()


async def test_the_engine_killed_and_restarted_the_console_goes_stale_then_recovers(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    primary_pusher.push_tree("kill/app", oci_image("kill"), "v1")
    engine = serve(tmp_path, primary, secondary, key_pair, listen=str(tmp_path / "api.sock")).start()
    try:
        app = make_app(None, link=RemoteLink(engine.target))
        async with app.run_test(size=(100, 30)) as pilot:
            table = app.query_one(RepositoryTable)
            await until(pilot, lambda: synced(app, 1))

            engine.stop(signal.SIGKILL)
            await until(pilot, lambda: app.stale is not None)
            assert "STALE" in app.sub_title and app.screen.has_class("-stale")
            assert table.total_count == 1  # the last view stays, marked stale
            await pilot.press("r")  # a command while away is refused, not lost in silence or a crash
            await pilot.pause(0.5)
            assert app.is_running

            engine.start()  # the OS freed the claim and the socket: the same config starts again
            await until(pilot, lambda: app.stale is None)
            assert "STALE" not in app.sub_title and not app.screen.has_class("-stale")
            v2 = oci_image("kill-v2")
            primary_pusher.push_tree("kill/app", v2, "v2")
            await pilot.press("r")
            await until(pilot, lambda: tag_digests(secondary_pusher, "kill/app").get("v2") == v2.digest)
            await pilot.press("q")
            await until(pilot, lambda: not app.is_running)
    finally:
        engine.stop(signal.SIGKILL)


async def test_two_consoles_see_each_others_actions(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    primary_pusher.push_tree("two/app", oci_image("two"), "v1")
    engine = serve(tmp_path, primary, secondary, key_pair, token=TOKEN).start(TOKEN)
    try:
        one = make_app(None, link=RemoteLink(engine.target, token=Secret(TOKEN)))
        two = make_app(None, link=RemoteLink(engine.target, token=Secret(TOKEN)))
        async with one.run_test(size=(100, 30)) as p1, two.run_test(size=(100, 30)) as p2:
            await until(p1, lambda: synced(one, 1) and synced(two, 1))
            key = ("secondary", "two/app")

            await p1.press("p")  # paused in one: the other shows it
            await until(p2, lambda: two.paused and "paused" in two.sub_title)

            await p2.press("r")  # resynced in two while paused: one sees the row waiting
            await until(p1, lambda: one.query_one(RepositoryTable).row(key).state is SyncState.PENDING)  # type: ignore[union-attr]

            await p2.press("p")  # resumed in two: one sees replication resume and the row synced again
            await until(p1, lambda: not one.paused and synced(one, 1))
            await p1.press("q")
            await p2.press("q")
            await until(p1, lambda: not one.is_running and not two.is_running)
    finally:
        engine.stop(signal.SIGKILL)
