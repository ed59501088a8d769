"""Snapshot tests of the console at 80x24 and 160x48, with the clock and every figure pinned.

The engine is replaced by a static link that serves fixed rows, cards and log lines: these tests
are about what the screen looks like. Behaviour on a real engine is in test_console_live.py.
Update the pictures after a deliberate change with `pytest tests/console/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from textual.pilot import Pilot

from geo_tui.console.app import GeoTuiApp
from geo_tui.console.screens.confirm import ConfirmScreen
from geo_tui.console.widgets.event_log import EventLog
from geo_tui.console.widgets.repository_table import RepositoryTable
from geo_tui.console.widgets.site_card import SiteCard
from geo_tui.engine import (
    EngineSnapshot,
    LogRecord,
    RepositoryRow,
    SiteCounts,
    SiteHealth,
    SiteSnapshot,
    SyncState,
    VerificationState,
)
from geo_tui.link.link import Batch
from tests.support.fake_link import FakeLink

NOW = 1_790_000_000.0


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The event times are local times: pin the zone, or a machine outside UTC draws other pictures."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def row(
    site: str,
    repository: str,
    state: SyncState,
    *,
    failure: str | None = None,
    age: float = 180,
    tags: int = 3,
    size: int = 48 << 20,
    verified: VerificationState = VerificationState.SUCCEEDED,
) -> RepositoryRow:
    return RepositoryRow(
        site=site,
        repository=repository,
        state=state,
        generation=1,
        retry_count=2 if failure else 0,
        retry_at=NOW + 60 if failure else None,
        started_at=None,
        last_synced_at=None if state is not SyncState.SYNCED else NOW - age,
        last_sync_failure=failure,
        tag_count=tags,
        bytes=size,
        verification_state=verified,
        verification_checksum=None,
        verified_at=None,
        verification_failure=None,
        on_primary=True,
        oldest_unsynced_event_at=None,
    )


ROWS = [
    row(
        "eu",
        "legacy/app",
        SyncState.FAILED,
        verified=VerificationState.PENDING,
        failure="tag v1: eu: PUT manifest legacy/app: 500 UNKNOWN; is schema 1 enabled there?",
    ),
    row("us", "team-a/api", SyncState.STARTED, verified=VerificationState.PENDING),
    row("us", "team-a/web", SyncState.PENDING, verified=VerificationState.PENDING),
    *[
        row(site, f"team-{t}/service-{i}", SyncState.SYNCED, age=60 * i)
        for site in ("eu", "us")
        for t, i in (("a", 1), ("a", 2), ("b", 3), ("b", 4), ("c", 5))
    ],
]


def counts(site: str, synced: int, failed: int, pending: int, started: int) -> SiteCounts:
    total = synced + failed + pending + started
    return SiteCounts(
        site,
        total,
        pending,
        started,
        synced,
        failed,
        synced - 1,
        0,
        1 + failed,
        640 << 20,
        NOW - 4 if pending else None,
    )


SNAPSHOT = EngineSnapshot(
    sites=(
        SiteSnapshot(
            "primary",
            "primary",
            "https://registry.example.com",
            SiteHealth("primary", True, 0.008, None, NOW),
            None,
            0.0,
            (),
            None,
            None,
            6,
        ),
        SiteSnapshot(
            "eu",
            "secondary",
            "https://eu.example.com",
            SiteHealth("eu", True, 0.021, None, NOW),
            counts("eu", 5, 1, 0, 0),
            0.0,
            tuple(float(x << 20) for x in (0, 1, 3, 8, 12, 6, 2, 0)),
            None,
            None,
            None,
        ),
        SiteSnapshot(
            "us",
            "secondary",
            "https://us.example.com",
            SiteHealth("us", False, None, "us: ping: ConnectError: connection refused", NOW),
            counts("us", 5, 0, 1, 1),
            12.5 * (1 << 20),
            tuple(float(x << 20) for x in (4, 9, 12, 14, 11)),
            95.0,
            4.0,
            None,
        ),
    ),
    running=True,
    paused=False,
    in_flight=1,
)

LOGS = [
    LogRecord(1, NOW - 30, "info", None, "team-a/api", "notification: push team-a/api:v2"),
    LogRecord(
        2,
        NOW - 20,
        "info",
        "eu",
        "team-a/api",
        "synced: 1 tags, 3 blobs copied, 0 mounted, 2 present, 12.0 MiB",
    ),
    LogRecord(3, NOW - 10, "error", "us", None, "unreachable: us: ping: ConnectError: connection refused"),
    LogRecord(
        4,
        NOW - 5,
        "error",
        "eu",
        "legacy/app",
        "failed (attempt 2): tag v1: eu: PUT manifest legacy/app: 500",
    ),
]


class StaticLink(FakeLink):
    """An EngineLink that reports one fixed state and records the commands it is given."""

    def __init__(self) -> None:
        super().__init__(Batch(all_rows=list(ROWS), logs=list(LOGS), snapshot=SNAPSHOT))


def pinned_app() -> GeoTuiApp:
    return GeoTuiApp(StaticLink(), clock=lambda: NOW, refresh_interval=0.05)


async def settle(pilot: Pilot[None]) -> None:
    """Wait for the pinned data to be on screen (not for a fixed time: a loaded machine is slower)."""
    table = pilot.app.query_one(RepositoryTable)
    log = pilot.app.query_one(EventLog)
    for _ in range(200):
        # The log follows its newest line: it is settled once it shows the end under its scrollbars.
        log_settled = log.line_count == len(LOGS) and log.scroll_y == log.max_scroll_y
        if table.total_count == len(ROWS) and pilot.app.query(SiteCard) and log_settled:
            break
        await pilot.pause(0.05)
    await pilot.pause()
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_main_screen(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    assert snap_compare(pinned_app(), terminal_size=size, run_before=settle)


async def test_failed_filter_at_80x24() -> None:
    # Asserted on what is shown rather than as a picture: after a filter the table's line cache can
    # split identical text into different segments, which changes the snapshot's hash, not the screen.
    app = pinned_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("f")
        await pilot.pause()
        table = app.query_one(RepositoryTable)
        assert table.visible_keys() == [("eu", "legacy/app")]
        assert str(app.query_one("#repositories-pane").border_title).startswith(
            "Repositories 1 of 13 · 1 failed"
        )
        screen = app.export_screenshot()
        assert "legacy/app" in screen and "team-a/web" not in screen


def test_bulk_confirmation_states_what_and_how_many(snap_compare: Callable[..., bool]) -> None:
    async def mark_two(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("space", "down", "space", "R")
        for _ in range(100):  # the modal screen arrives a frame later, later still on a loaded machine
            if isinstance(pilot.app.screen, ConfirmScreen):
                break
            await pilot.pause(0.05)
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(pinned_app(), terminal_size=(80, 24), run_before=mark_two)


async def test_events_pane_shows_the_newest_line_at_80x24() -> None:
    # At 80x24 the long lines bring a horizontal scrollbar during layout, after the lines arrived; the
    # pane must still end on the newest line (it used to stay one line short when the machine was idle).
    app = pinned_app()
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(EventLog)
        for _ in range(200):
            if log.line_count == len(LOGS) and log.show_horizontal_scrollbar:
                break
            await pilot.pause(0.05)
        for _ in range(5):
            await pilot.pause()
        assert log.following and log.scroll_y == log.max_scroll_y
        last_row = log.render_line(log.scrollable_content_region.height - 1).text
        assert "failed (attempt 2)" in last_row
