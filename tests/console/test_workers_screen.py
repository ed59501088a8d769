"""The workers view (issue 16): `W` opens it from the main screen, it asks the engine again every second
while shown, shows each worker's heartbeat, state, work in flight and throughput, and a stale worker in
words; escape goes back. Pure UI over the fake link; the same read over a real engine is in
tests/console/test_console_workers_live.py."""

from __future__ import annotations

import asyncio

from textual.widgets import Static

from geo_tui.console.app import GeoTuiApp
from geo_tui.console.screens.workers import LOADING, WorkersScreen, workers_summary, workers_table
from geo_tui.engine.model import WorkerInfo, WorkersView
from geo_tui.link.link import ReadFailed
from tests.support.fake_link import FakeLink
from tests.support.pilot import until

NOW = 1_700_000_000.0


def worker(host: str, pid: int, age: float, **changes: object) -> WorkerInfo:
    fields: dict[str, object] = {
        "id": f"{host}/{pid}/{NOW - 3600:.3f}",
        "host": host,
        "pid": pid,
        "started_at": NOW - 3600,
        "heartbeat_age": age,
        "listen": ("127.0.0.1:5001",),
        "in_flight": 0,
        "throughput": 0.0,
        "stale": age > 30,
        "repositories": (),
    }
    fields.update(changes)
    return WorkerInfo(**fields)  # type: ignore[arg-type]


VIEW = WorkersView(
    (
        worker(
            "geo-a",
            4242,
            2.5,
            in_flight=2,
            throughput=3.5 * 1024 * 1024,
            repositories=(("eu", "shop/api"), ("us", "shop/api")),
        ),
        worker("geo-b", 777, 185.0, listen=("10.0.0.2:5001", "/run/geo.sock"), throughput=None),
    ),
    30.0,
)


def text_of(app: GeoTuiApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def test_the_table_names_each_worker_and_says_stale_in_words() -> None:
    lines = str(workers_table(VIEW)).splitlines()
    assert lines[0].split() == [
        "HOST",
        "PID",
        "HEARTBEAT",
        "STATE",
        "IN",
        "FLIGHT",
        "THROUGHPUT",
        "LISTEN",
        "ID",
    ]
    # the stale worker comes first, in words (a 16-colour terminal shows no red)
    assert lines[1].split()[:2] == ["geo-b", "777"]
    assert "3 min ago  ✗ stale" in lines[1] and "— " in lines[1] and "B/s" not in lines[1]
    assert "10.0.0.2:5001, /run/geo.sock" in lines[1] and lines[1].endswith(f"geo-b/777/{NOW - 3600:.3f}")
    assert lines[2].split()[:2] == ["geo-a", "4242"]
    assert "2 s ago" in lines[2] and "✓ live" in lines[2] and "3.5 MiB/s" in lines[2]
    assert lines[3].strip() == "copying eu/shop/api, us/shop/api"
    assert workers_summary(VIEW) == "2 workers · 1 stale · in flight 2 · stale after 30 s without a heartbeat"


def test_many_leased_repositories_are_counted_not_listed() -> None:
    held = tuple(("eu", f"app-{i:02d}") for i in range(9))
    table = str(workers_table(WorkersView((worker("geo-a", 1, 1.0, repositories=held),), 30.0)))
    assert "eu/app-05 and 3 more" in table and "app-06" not in table


def test_no_workers_says_so() -> None:
    assert (
        str(workers_table(WorkersView((), 30.0))) == "no worker has registered in this tracking database yet"
    )


async def test_w_opens_the_workers_view_which_refreshes_while_shown() -> None:
    link = FakeLink(answers={"workers": VIEW})
    app = GeoTuiApp(link, clock=lambda: NOW, refresh_interval=0.05)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("W")
        await until(pilot, lambda: isinstance(app.screen, WorkersScreen))
        await until(pilot, lambda: "geo-b" in text_of(app, "#workers-table"))
        assert text_of(app, "#workers-summary").startswith("2 workers · 1 stale")
        assert "3 min ago  ✗ stale" in text_of(app, "#workers-table")
        # live: it asks again about once a second while shown, and stops when it is not
        asked = link.reads["workers"]
        await until(pilot, lambda: link.reads["workers"] >= asked + 2, timeout=5)
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, WorkersScreen))
        asked = link.reads["workers"]
        await asyncio.sleep(1.5)
        assert link.reads["workers"] <= asked + 1  # at most a tick that was already due


async def test_a_failed_read_keeps_the_last_workers_and_says_why() -> None:
    link = FakeLink(answers={"workers": VIEW})
    app = GeoTuiApp(link, clock=lambda: NOW, refresh_interval=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("W")
        await until(pilot, lambda: "geo-a" in text_of(app, "#workers-table"))
        link.answers["workers"] = ReadFailed("the engine at http://127.0.0.1:1 is not reachable: refused")
        await until(pilot, lambda: "not reachable" in text_of(app, "#workers-status"))
        assert "what is shown is stale" in text_of(app, "#workers-status")
        assert "geo-a" in text_of(app, "#workers-table")


async def test_the_key_is_in_the_footer_and_the_help() -> None:
    app = GeoTuiApp(FakeLink(), clock=lambda: NOW, refresh_interval=0.05)
    async with app.run_test(size=(120, 30)) as pilot:
        bindings = {b.binding.action: b.binding for b in app.active_bindings.values()}
        assert bindings["workers"].key == "W" and bindings["workers"].show
        await pilot.press("question_mark")
        await pilot.pause()
        assert "Workers" in str(app.screen.query_one(Static).render())
        await pilot.press("escape")
        await pilot.press("W")
        await until(pilot, lambda: isinstance(app.screen, WorkersScreen))
        assert text_of(app, "#workers-summary") == LOADING  # the fake engine never answers this one


async def test_a_long_line_scrolls_sideways_from_the_keyboard_not_wrapped() -> None:
    listen = tuple(f"10.0.{i}.2:5001" for i in range(8))
    view = WorkersView((worker("geo-a", 1, 1.0, listen=listen),), 30.0)
    app = GeoTuiApp(FakeLink(answers={"workers": view}), clock=lambda: NOW, refresh_interval=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("W")
        await until(pilot, lambda: "geo-a" in text_of(app, "#workers-table"))
        scroll = app.screen.query_one("#workers-scroll")
        assert len(text_of(app, "#workers-table").splitlines()) == 2  # the header and one worker
        assert scroll.max_scroll_x > 0 and scroll.scroll_x == 0
        await pilot.press(*["right"] * 3)  # as fast as keys come: none is lost to an animation
        await until(pilot, lambda: scroll.scroll_x == min(36, scroll.max_scroll_x))
        await pilot.press("left")
        await until(pilot, lambda: scroll.scroll_x == min(24, scroll.max_scroll_x))
