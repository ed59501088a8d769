"""A console attached to one of two `geo-tui serve` workers on one PostgreSQL database (issue 16), on real
Distribution, driven with Pilot: what the other worker is told to do (pause, resync, resume) shows on
this console's screen: the header, the row's state, and the other worker's log lines, saying whose."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from geo_tui.config import Secret
from geo_tui.console.app import GeoTuiApp, make_app
from geo_tui.console.widgets.event_log import EventLog
from geo_tui.console.widgets.repository_table import RepositoryTable
from geo_tui.engine import SyncState
from geo_tui.engine.tracking.postgres import PostgresDatabase
from geo_tui.link.remote import RemoteLink
from tests.support.distribution import Distribution
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.pilot import filter_to, until
from tests.support.postgres import database_option
from tests.support.push import RawPusher
from tests.support.served import ServedEngine, start_workers

TOKEN = "console-cluster-token-0123456789-ab"
KEY = ("secondary", "shop/api")


@pytest.fixture
def tracking_backend() -> str:
    return "postgresql"


@pytest.fixture
def workers(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    tracking_target: Path | PostgresDatabase,
) -> Iterator[list[tuple[ServedEngine, Path]]]:
    for name in ("shop/api", "shop/web"):
        primary_pusher.push_tree(name, oci_image(name), "v1")
    started = start_workers(
        ("a", "b"), tmp_path, primary, [secondary], key_pair, database_option(tracking_target), token=TOKEN
    )
    try:
        yield started
    finally:
        for engine, _ in started:
            engine.stop(signal.SIGKILL)


def post(engine: ServedEngine, name: str, body: dict[str, object] | None = None) -> None:
    with engine.client(TOKEN) as client:
        response = client.post(f"/api/v1/commands/{name}", json=body or {})
    assert response.status_code == 200, response.text


def on_screen(app: GeoTuiApp, state: SyncState) -> bool:
    """The cursor's row (filtered to shop/api) is in `state`, in the table and drawn so."""
    table = app.query_one(RepositoryTable)
    row = table.row(KEY)
    words = {SyncState.PENDING: "… pending", SyncState.SYNCED: "✓ synced"}[state]
    drawn = [table.render_line(y).text for y in range(1, 3)]
    return row is not None and row.state is state and any(words in d and "shop/api" in d for d in drawn)


async def test_what_another_worker_is_told_shows_on_this_console(
    workers: list[tuple[ServedEngine, Path]],
) -> None:
    (a, _), (b, _) = workers
    assert a.process is not None
    link = RemoteLink(b.target, token=Secret(TOKEN))
    app = make_app(None, link=link)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await until(pilot, lambda: link.connected, timeout=60)
            await filter_to(pilot, "shop/api")
            await until(pilot, lambda: on_screen(app, SyncState.SYNCED), timeout=60)
            generation = app.query_one(RepositoryTable).row(KEY).generation  # type: ignore[union-attr]

            await asyncio.to_thread(post, a, "pause")
            await until(pilot, lambda: app.paused and "paused" in app.sub_title)
            sent = time.monotonic()
            await asyncio.to_thread(post, a, "resync", {"keys": [list(KEY)]})
            answered = time.monotonic()
            # the row A queued (B's engine did not touch it) turns pending on B's console
            while not on_screen(app, SyncState.PENDING):
                assert time.monotonic() - sent < 30, "A's resync never reached B's screen"
                await pilot.pause(0.01)
            shown = time.monotonic()
            print(
                f"\nA's resync sent: answered in {answered - sent:.3f} s, on B's screen {shown - sent:.3f} s"
            )
            row = app.query_one(RepositoryTable).row(KEY)
            assert row is not None and row.generation > generation
            # A's lines, saying they are A's
            log = app.query_one(EventLog)
            mark = f"/{a.process.pid}"

            def a_said(words: str) -> bool:
                return any(words in line and mark in line for line in log.lines())

            await until(pilot, lambda: a_said("replication paused") and a_said("resync requested"))

            await asyncio.to_thread(post, a, "resume")
            await until(pilot, lambda: not app.paused and "replicating" in app.sub_title)
            await until(pilot, lambda: on_screen(app, SyncState.SYNCED), timeout=60)
    finally:
        link.stop()
