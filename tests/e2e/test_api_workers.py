"""The workers read (issue 16) on a real `geo-tui serve` on real Distribution, on SQLite and PostgreSQL:
workers registered in its tracking database through `LeaseClaims` come back from ``GET
/api/v1/workers``, from `EngineClient.workers`, through the console's link, and on the console's workers
screen pressed open with `W`."""

from __future__ import annotations

import asyncio
import signal
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
from textual.widgets import Static

from geo_tui.config import Secret, load_config
from geo_tui.console.app import make_app
from geo_tui.console.screens.workers import WorkersScreen
from geo_tui.engine import Tracking
from geo_tui.engine.model import WorkerInfo, WorkersView
from geo_tui.engine.tracking import tracking_database
from geo_tui.engine.tracking.postgres import PostgresDatabase
from geo_tui.engine.wire import decode_workers
from geo_tui.link.client import EngineClient
from geo_tui.link.link import ReadFailed
from geo_tui.link.remote import RemoteLink
from tests.support.distribution import Distribution, free_port
from tests.support.geo import write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.pilot import until
from tests.support.postgres import BACKENDS, database_option
from tests.support.push import RawPusher
from tests.support.served import ServedEngine, wait_until, write_served_config

TOKEN = "workers-api-token-0123456789-abcd"
READ_TOKEN = "workers-read-token-0123456789-ef"
LIVE, DEAD = "geo-live/4242/1.000", "geo-dead/77/2.000"


@pytest.fixture(params=BACKENDS)
def tracking_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def served(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    tracking_target: Path | PostgresDatabase,
) -> Iterator[ServedEngine]:
    """serve with its API beside the receiver, and two workers in its database: one live, copying
    ``shop/api`` under a lease, and one whose heartbeat stopped ten minutes ago."""
    primary_pusher.push_tree("shop/api", oci_image("shop/api"), "v1")
    port = free_port()
    config = write_served_config(
        tmp_path / "geo",
        primary,
        [secondary],
        key_pair,
        port=port,
        api={"token": TOKEN, "read_token": READ_TOKEN},
    )
    data = tomllib.loads(config.read_text())
    data["engine"].update(database_option(tracking_target))
    config.write_text(tomli_w.dumps(data))
    engine = ServedEngine(config, tmp_path / "serve.log", api_url=f"http://127.0.0.1:{port}").start(TOKEN)
    try:
        tracking = Tracking(tracking_database(load_config(config).engine))
        try:
            now = time.time()
            tracking.register_worker(LIVE, now, "127.0.0.1:7001")
            tracking.register_worker(DEAD, now - 900, "127.0.0.1:7002")
            tracking.worker_heartbeat(DEAD, now - 600, 0)
            tracking.ensure_rows("elsewhere", ["team/lib"])  # a row serve's own scheduler does not claim
            claimed = tracking.claim_due(LIVE, now, limit=1, lease_seconds=3600)
            assert [(r.site, r.repository) for r in claimed] == [("elsewhere", "team/lib")]
        finally:
            tracking.close()
        yield engine
    finally:
        engine.stop(signal.SIGKILL)


def ours(view: WorkersView) -> dict[str, WorkerInfo]:
    """Our two workers of the view by id (serve registers itself too once it takes part, issue 16)."""
    return {w.id: w for w in view.workers if w.id in (LIVE, DEAD)}


def test_the_api_reads_the_workers_to_a_read_token(served: ServedEngine) -> None:
    with served.client(READ_TOKEN) as reader:
        response = reader.get("/api/v1/workers")
    assert response.status_code == 200, response.text
    view = decode_workers(response.json())
    workers = ours(view)
    assert set(workers) == {LIVE, DEAD}
    live, dead = workers[LIVE], workers[DEAD]
    assert (live.host, live.pid, live.listen, live.stale) == ("geo-live", 4242, ("127.0.0.1:7001",), False)
    assert live.repositories == (("elsewhere", "team/lib"),) and live.in_flight == 1
    assert live.heartbeat_age < 30
    assert (dead.host, dead.pid, dead.stale) == ("geo-dead", 77, True)
    assert 600 <= dead.heartbeat_age < 700 and dead.state == "stale: no heartbeat for 10 min"
    with served.client(None) as stranger:
        assert stranger.get("/api/v1/workers").status_code == 401


def test_the_client_and_the_link_read_the_workers(served: ServedEngine) -> None:
    async def read() -> WorkersView:
        async with EngineClient(served.target, token=Secret(READ_TOKEN)) as client:
            return await client.workers()

    assert set(ours(asyncio.run(read()))) == {LIVE, DEAD}
    link = RemoteLink(served.target, token=Secret(READ_TOKEN))
    link.start()
    try:
        assert link.wait_connected()
        link.read("workers", lambda client: client.workers())
        answers: list[object] = []
        wait_until(lambda: bool(answers.extend(link.drain().reads.values()) or answers), what="the read")
        assert isinstance(answers[0], WorkersView) and set(ours(answers[0])) == {LIVE, DEAD}
    finally:
        link.stop()
    # a read the engine refuses arrives as a ReadFailed naming why, never as an exception
    wrong = RemoteLink(served.target, token=Secret("not-the-token-0123456789-abcdefgh"))
    wrong.start()
    try:
        wait_until(lambda: wrong._loop is not None and wrong._client is not None, what="the link's loop")
        wrong.read("workers", lambda client: client.workers())
        failed: list[object] = []
        wait_until(lambda: bool(failed.extend(wrong.drain().reads.values()) or failed), what="the refusal")
        assert isinstance(failed[0], ReadFailed) and "401" in failed[0].message
    finally:
        wrong.stop()


async def test_the_console_shows_the_workers_of_a_real_engine(served: ServedEngine) -> None:
    link = RemoteLink(served.target, token=Secret(TOKEN))
    app = make_app(None, link=link)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: link.connected)
            await pilot.press("W")
            await until(pilot, lambda: isinstance(app.screen, WorkersScreen))

            def table() -> str:
                return str(app.screen.query_one("#workers-table", Static).render())

            await until(pilot, lambda: "geo-dead" in table())
            lines = {line.split()[0]: line for line in table().splitlines()[1:] if line.split()}
            assert "10 min ago  ✗ stale" in lines["geo-dead"]
            assert "✓ live" in lines["geo-live"] and "127.0.0.1:7001" in lines["geo-live"]
            assert "copying elsewhere/team/lib" in table()
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, WorkersScreen))
    finally:
        link.stop()


async def test_the_console_with_its_own_engine_shows_workers_and_goes_back_with_w(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    """As `geo-tui` runs: the console's own engine in a child process (`SpawnedEngine`), its database
    shared with a worker registered beside it."""
    primary_pusher.push_tree("shop/api", oci_image("shop/api"), "v1")
    config = load_config(write_geo_config(tmp_path, primary, [secondary], key_pair))
    app = make_app(config)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.link.connected)  # type: ignore[attr-defined]
        tracking = Tracking(config.engine.database)
        try:
            tracking.register_worker(LIVE, time.time(), "127.0.0.1:7001")
        finally:
            tracking.close()
        await pilot.press("W")
        await until(pilot, lambda: isinstance(app.screen, WorkersScreen))
        screen = app.screen
        assert isinstance(screen, WorkersScreen)
        await until(pilot, lambda: screen.view is not None and LIVE in {w.id for w in screen.view.workers})
        assert screen.failure is None
        await pilot.press("W")  # the same key goes back
        await until(pilot, lambda: not isinstance(app.screen, WorkersScreen))
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, timeout=30)
