"""EventLog: a capped, filterable, following log of engine records, driven with Pilot at 80x24."""

from __future__ import annotations

import time
from pathlib import Path

from textual.app import App, ComposeResult

from geo_tui.console.widgets.event_log import EventLog
from geo_tui.engine import LogRecord

NOW = 1_700_000_000.0
LEVELS = ("info", "warning", "error")


def records(start: int, count: int) -> list[LogRecord]:
    return [
        LogRecord(
            id=i,
            at=NOW + i,
            level=LEVELS[i % 3],
            site="eu" if i % 2 else None,
            repository="lib/nginx" if i % 4 == 1 else None,
            message=f"message {i}",
        )
        for i in range(start, start + count)
    ]


class LogApp(App[None]):
    CSS = "EventLog { height: 10; }"

    def __init__(self, max_lines: int = 5000) -> None:
        super().__init__()
        self.max_lines = max_lines
        self.saves = 0

    def compose(self) -> ComposeResult:
        yield EventLog(max_lines=self.max_lines, id="log")

    def on_mount(self) -> None:
        self.query_one(EventLog).focus()

    def action_save_log(self) -> None:
        self.saves += 1


def screen_lines(log: EventLog) -> list[str]:
    return [log.render_line(y).text.rstrip() for y in range(log.scrollable_content_region.height)]


async def test_lines_show_time_severity_glyph_and_where() -> None:
    app = LogApp()
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(EventLog)
        log.add(records(0, 3))
        await pilot.pause()
        stamp = time.strftime("%H:%M:%S", time.localtime(NOW + 1))
        assert screen_lines(log)[:3] == [
            f"{time.strftime('%H:%M:%S', time.localtime(NOW))} · message 0",
            f"{stamp} ! [eu/lib/nginx] message 1",
            f"{time.strftime('%H:%M:%S', time.localtime(NOW + 2))} ✗ message 2",
        ]
        info = next(seg for seg in log.render_line(0) if "message" in seg.text)
        error = next(seg for seg in log.render_line(2) if "message" in seg.text)
        # The message of an error is drawn differently from an info one (red, bold), not only its glyph.
        assert error.style != info.style


async def test_follows_new_lines_at_the_bottom() -> None:
    app = LogApp()
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(EventLog)
        for start in range(0, 100, 10):
            log.add(records(start, 10))
            await pilot.pause()
            assert log.following
            assert log.scroll_y == log.max_scroll_y
        assert screen_lines(log)[-1].endswith("message 99")


async def test_scrolling_up_stops_following_and_end_resumes() -> None:
    app = LogApp()
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(EventLog)
        log.add(records(0, 100))
        await pilot.pause()
        await pilot.press("up", "up", "up")
        await pilot.pause(0.3)
        assert not log.following
        top = log.scroll_y
        assert top < log.max_scroll_y
        shown = screen_lines(log)

        log.add(records(100, 50))
        await pilot.pause()
        assert log.scroll_y == top  # the lines being read stay where they are
        assert screen_lines(log) == shown
        assert not log.following

        await pilot.press("end")
        await pilot.pause()
        assert log.following and log.scroll_y == log.max_scroll_y
        assert screen_lines(log)[-1].endswith("message 149")
        log.add(records(150, 5))
        await pilot.pause()
        assert screen_lines(log)[-1].endswith("message 154")


async def test_scrolling_back_to_the_bottom_resumes_following() -> None:
    app = LogApp()
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(EventLog)
        log.add(records(0, 100))
        await pilot.pause()
        log.scroll_to(y=20, animate=False)
        await pilot.pause()
        assert not log.following
        log.scroll_to(y=log.max_scroll_y, animate=False)
        await pilot.pause()
        assert log.following
        log.add(records(100, 3))
        await pilot.pause()
        assert log.scroll_y == log.max_scroll_y


async def test_caps_at_max_lines_and_keeps_the_view_on_what_is_read() -> None:
    app = LogApp(max_lines=50)
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(EventLog)
        log.add(records(0, 120))
        await pilot.pause()
        assert log.total_count == 50
        assert log.lines()[0].endswith("message 70")
        assert log.virtual_size.height == 50

        log.scroll_to(y=20, animate=False)
        await pilot.pause()
        first = screen_lines(log)[0]
        log.add(records(120, 5))  # five leave the top
        await pilot.pause()
        assert log.total_count == 50
        assert screen_lines(log)[0] == first
        assert log.scroll_y == 15


async def test_filter_is_case_insensitive_and_empty_shows_all() -> None:
    app = LogApp()
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(EventLog)
        log.add(records(0, 40))
        log.set_filter("NGINX")
        await pilot.pause()
        assert log.line_count == 10
        assert all("[eu/lib/nginx]" in line for line in log.lines())
        assert all("nginx" in line for line in screen_lines(log) if line)

        log.add(records(40, 8))  # new lines are filtered as they come
        assert log.line_count == 12
        log.set_filter("")
        await pilot.pause()
        assert log.line_count == 48 and log.filter_text == ""


async def test_filter_with_a_cap_drops_filtered_lines_that_leave() -> None:
    app = LogApp(max_lines=10)
    async with app.run_test(size=(80, 24)):
        log = app.query_one(EventLog)
        log.add(records(0, 10))
        log.set_filter("✗")  # errors: 2, 5, 8
        assert log.line_count == 3
        log.add(records(10, 4))  # 0..3 leave; 2 was an error
        assert log.line_count == 3
        assert [line.rsplit(" ", 1)[1] for line in log.lines()] == ["5", "8", "11"]


async def test_save_writes_the_filtered_lines(tmp_path: Path) -> None:
    app = LogApp()
    async with app.run_test(size=(80, 24)):
        log = app.query_one(EventLog)
        log.add(records(0, 30))
        path = tmp_path / "all.log"
        assert log.save(path) == 30
        assert len(path.read_text(encoding="utf-8").splitlines()) == 30

        log.set_filter("error")
        path = tmp_path / "errors.log"
        assert log.save(path) == 10
        saved = path.read_text(encoding="utf-8").splitlines()
        assert len(saved) == 10
        day = time.strftime("%Y-%m-%d", time.localtime(NOW + 2))
        assert saved[0].startswith(day) and "error" in saved[0] and saved[0].endswith("message 2")


async def test_save_key_asks_the_app() -> None:
    app = LogApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("s")
        await pilot.pause()
        assert app.saves == 1
        ids = {binding.id for binding in EventLog.BINDINGS if not isinstance(binding, tuple | str)}
        assert {"log.save", "log.end"} <= ids


async def test_messages_are_one_line_without_control_codes() -> None:
    app = LogApp()
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(EventLog)
        log.add([LogRecord(1, NOW, "error", "eu", None, "first line\nsecond \x1b[31mline")])
        await pilot.pause()
        assert log.lines()[0].endswith("✗ [eu] first line second [31mline")


async def test_draws_only_the_lines_on_screen() -> None:
    app = LogApp()
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(EventLog)
        for start in range(0, 5000, 12):  # 50 lines a second in 4 batches a second
            log.add(records(start, 12))
        await pilot.pause()
        assert log.total_count == 5000
        assert len(log._strips) <= log.scrollable_content_region.height + 1
        assert screen_lines(log)[-1].endswith("message 5003")


async def test_long_lines_scroll_sideways() -> None:
    app = LogApp()
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(EventLog)
        log.add([LogRecord(1, NOW, "info", None, None, "x" * 200 + " tail")])
        await pilot.pause()
        assert log.max_scroll_x > 0
        log.scroll_to(x=log.max_scroll_x, animate=False)
        await pilot.pause()
        assert screen_lines(log)[0].endswith("tail")


class ShortLogApp(LogApp):
    CSS = "EventLog { height: 3; }"


async def test_newest_line_stays_in_view_when_a_long_line_brings_a_horizontal_scrollbar() -> None:
    # The scrollbar appears during layout, after the lines were added, and takes one of the three rows.
    app = ShortLogApp()
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(EventLog)
        batch = records(0, 4)
        batch[1] = LogRecord(1, NOW + 1, "info", None, None, "wide " + "x" * 120)
        with app.batch_update():  # as the console applies an engine batch: one repaint
            log.add(batch)
        for _ in range(5):
            await pilot.pause()
        assert log.show_horizontal_scrollbar and log.scrollable_content_region.height == 2
        assert log.following and log.scroll_y == log.max_scroll_y == 2
        assert screen_lines(log)[-1].endswith("message 3")


async def test_another_workers_line_says_whose_it_is_and_the_filter_finds_it() -> None:
    """Many workers on one database: each line names its worker (host/pid), a line of one engine none."""
    ours = LogRecord(1, NOW, "info", None, None, "engine started")
    theirs = LogRecord(2, NOW + 1, "warning", "eu", "lib/nginx", "replication paused", "geo-b/4242/1.5")
    async with LogApp().run_test(size=(80, 24)) as pilot:
        log = pilot.app.query_one(EventLog)
        log.add([ours, theirs])
        await pilot.pause()
        drawn = [line for line in screen_lines(log) if line]
        assert drawn[0].endswith("· engine started") and "@" not in drawn[0]
        assert "! @geo-b/4242 [eu/lib/nginx] replication paused" in drawn[1]
        log.set_filter("geo-b/4242")
        await pilot.pause()
        assert [line for line in screen_lines(log) if line] == [drawn[1]]
