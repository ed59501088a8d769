"""RepositoryTable: a line-API table of (site, repository) rows, driven with Pilot at 80x24."""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

import pytest
from rich.color import ColorSystem
from textual.app import App, ComposeResult

from geo_tui.console.widgets.repository_table import SORT_COLUMNS, RepositoryTable
from geo_tui.engine import RepositoryRow, SyncState, VerificationState

NOW = 1_700_000_000.0
FAILED, STARTED, PENDING, SYNCED = SyncState.FAILED, SyncState.STARTED, SyncState.PENDING, SyncState.SYNCED


def make_row(site: str, repository: str, state: SyncState = SYNCED, **changes: Any) -> RepositoryRow:
    fields: dict[str, Any] = {
        "site": site,
        "repository": repository,
        "state": state,
        "generation": 1,
        "retry_count": 0,
        "retry_at": None,
        "started_at": None,
        "last_synced_at": NOW - 180 if state is SYNCED else None,
        "last_sync_failure": "manifest unknown: tag v1 is gone" if state is FAILED else None,
        "tag_count": 3,
        "bytes": 12_900_000,
        "verification_state": VerificationState.SUCCEEDED if state is SYNCED else VerificationState.PENDING,
        "verification_checksum": None,
        "verified_at": None,
        "verification_failure": None,
        "on_primary": True,
        "oldest_unsynced_event_at": None,
    }
    fields.update(changes)
    return RepositoryRow(**fields)


def many_rows(count: int, sites: tuple[str, ...] = ("eu", "us")) -> list[RepositoryRow]:
    states = (SYNCED, SYNCED, SYNCED, PENDING, FAILED, STARTED)
    return [
        make_row(sites[(i // 6) % len(sites)], f"group{i % 97}/project-{i:06d}", states[i % len(states)])
        for i in range(count)
    ]


class TableApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.counts: list[RepositoryTable.CountsChanged] = []
        self.selected: list[tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        yield RepositoryTable(now=lambda: NOW, id="repositories")

    def on_mount(self) -> None:
        self.query_one(RepositoryTable).focus()

    def on_repository_table_counts_changed(self, message: RepositoryTable.CountsChanged) -> None:
        self.counts.append(message)

    def on_repository_table_selected(self, message: RepositoryTable.Selected) -> None:
        self.selected.append(message.key)


def line(table: RepositoryTable, y: int) -> str:
    return table.render_line(y).text


def cursor_on_screen(table: RepositoryTable) -> bool:
    index = table.visible_keys().index(table.cursor_key)  # type: ignore[arg-type]
    top = round(table.scroll_y)
    return top <= index < top + table.scrollable_content_region.height - 1


async def test_default_order_is_problems_first_then_site_then_repository() -> None:
    rows = [
        make_row("us", "b", SYNCED),
        make_row("eu", "z", PENDING),
        make_row("us", "a", FAILED),
        make_row("eu", "y", STARTED),
        make_row("eu", "x", FAILED),
        make_row("eu", "a", SYNCED),
    ]
    async with TableApp().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        table.set_rows(rows)
        assert table.visible_keys() == [
            ("eu", "x"),
            ("us", "a"),
            ("eu", "y"),
            ("eu", "z"),
            ("eu", "a"),
            ("us", "b"),
        ]
        assert table.cursor_key == ("eu", "x")
        assert (table.total_count, table.visible_count, table.failed_count) == (6, 6, 2)


async def test_cursor_keys_and_paging_keep_the_cursor_on_screen() -> None:
    async with TableApp().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        table.set_rows(many_rows(500))
        await pilot.pause()
        keys = table.visible_keys()
        page = table.scrollable_content_region.height - 1  # one line is the header
        assert page == 23
        await pilot.press("down", "j", "j")
        assert table.cursor_key == keys[3]
        await pilot.press("k", "up")
        assert table.cursor_key == keys[1]
        await pilot.press("pagedown")
        assert table.cursor_key == keys[1 + page]
        assert round(table.scroll_y) == page and cursor_on_screen(table)
        await pilot.press("pagedown", "pageup")
        assert table.cursor_key == keys[1 + page]
        await pilot.press("end")
        assert table.cursor_key == keys[-1] and cursor_on_screen(table)
        assert table.cursor_row is not None and table.cursor_row.key == keys[-1]
        await pilot.press("down")
        assert table.cursor_key == keys[-1]
        await pilot.press("home")
        assert table.cursor_key == keys[0] and round(table.scroll_y) == 0
        await pilot.press("up", "pageup")
        assert table.cursor_key == keys[0]


async def test_cursor_stays_on_its_key_when_an_upsert_resorts_it() -> None:
    async with TableApp().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        rows = many_rows(300)
        table.set_rows(rows)
        await pilot.press("end")
        key = table.cursor_key
        assert key is not None and table.cursor_row is not None
        assert table.cursor_row.state is SYNCED
        table.upsert_rows([make_row(*key, FAILED, last_sync_failure="blob upload unknown")])
        await pilot.pause()
        assert table.cursor_key == key
        assert table.visible_keys().index(key) < table.failed_count  # it moved up among the failed
        assert cursor_on_screen(table)
        assert table.failed_count == sum(r.state is FAILED for r in rows) + 1
        # a batch larger than the bisect limit takes the full re-sort path and still keeps the cursor
        changed = [dataclasses.replace(r, state=SYNCED, last_sync_failure=None) for r in rows[:400:1]]
        table.upsert_rows(changed)
        assert table.cursor_key == key
        fresh = RepositoryTable(now=lambda: NOW)
        fresh.set_rows({r.key: r for r in [*rows, *changed, table.cursor_row]}.values())  # type: ignore[list-item]
        assert table.visible_keys() == fresh.visible_keys()


async def test_upsert_inserts_new_rows_and_redraws_a_changed_row_in_place() -> None:
    async with TableApp().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        table.set_rows([make_row("eu", "alpha"), make_row("eu", "beta")])
        await pilot.pause()
        assert "3 min ago" in line(table, 1)
        table.upsert_rows([make_row("eu", "alpha", last_synced_at=NOW - 7200)])
        assert "2 h ago" in line(table, 1)
        table.upsert_rows([make_row("eu", "alpha", last_synced_at=NOW - 7200)])  # unchanged: nothing to do
        table.upsert_rows([make_row("us", "alpha", PENDING)])
        assert table.visible_keys() == [("us", "alpha"), ("eu", "alpha"), ("eu", "beta")]
        assert table.cursor_key == ("eu", "alpha")


async def test_filter_that_keeps_the_cursor_row_keeps_the_cursor_and_one_that_hides_it_moves_near() -> None:
    async with TableApp().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        table.set_rows(many_rows(600))
        await pilot.press(*["down"] * 12)
        key = table.cursor_key
        assert key is not None
        table.set_text_filter(key[1])
        assert table.cursor_key == key and table.visible_count >= 1
        table.set_text_filter("")
        assert table.cursor_key == key and table.visible_count == 600 and cursor_on_screen(table)
        table.set_text_filter(key[1], invert=True)
        assert table.cursor_key not in (None, key)
        assert table.visible_count == 599


async def test_space_marks_and_unmarks_the_cursor_row() -> None:
    async with TableApp().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        table.set_rows(many_rows(10))
        await pilot.press("space", "down", "space", "down")
        keys = table.visible_keys()
        assert table.marked == {keys[0], keys[1]}
        assert line(table, 1).startswith("●") and line(table, 3).startswith(" ")
        await pilot.press("up", "space")
        assert table.marked == {keys[0]}
        await pilot.pause()
        assert pilot.app.counts[-1].marked == 1
        table.clear_marks()
        assert table.marked == set()


async def test_text_filter_substring_regex_and_invert() -> None:
    rows = [
        make_row("eu", "team/api"),
        make_row("us", "team/API-gateway"),
        make_row("eu", "infra/db", FAILED, last_sync_failure="TLS handshake timeout"),
        make_row("us", "infra/cache"),
    ]
    async with TableApp().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        table.set_rows(rows)
        table.set_text_filter("api")
        assert set(table.visible_keys()) == {("eu", "team/api"), ("us", "team/API-gateway")}
        table.set_text_filter("eu/")  # matches "site/repository"
        assert set(table.visible_keys()) == {("eu", "team/api"), ("eu", "infra/db")}
        table.set_text_filter("handshake")  # matches the last error
        assert table.visible_keys() == [("eu", "infra/db")]
        table.set_text_filter(r"^us/.*gate", regex=True)
        assert table.visible_keys() == [("us", "team/API-gateway")]
        table.set_text_filter("team", invert=True)
        assert set(table.visible_keys()) == {("eu", "infra/db"), ("us", "infra/cache")}
        table.set_text_filter(r"ca|GATE", regex=True, invert=True)
        assert set(table.visible_keys()) == {("eu", "team/api"), ("eu", "infra/db")}
        with pytest.raises(ValueError, match=r"invalid regular expression '\(unclosed'"):
            table.set_text_filter("(unclosed", regex=True)
        assert set(table.visible_keys()) == {("eu", "team/api"), ("eu", "infra/db")}  # kept as it was


async def test_state_filter() -> None:
    async with TableApp().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        rows = many_rows(60)
        table.set_rows(rows)
        table.set_state_filter(frozenset({FAILED}))
        assert table.visible_count == table.failed_count == 10
        assert all(table.cursor_row is not None and table.cursor_row.state is FAILED for _ in (0,))
        table.set_state_filter(frozenset({PENDING, STARTED}))
        assert table.visible_count == 20
        table.set_text_filter("us/")
        assert table.visible_count == 10
        table.set_state_filter(None)
        assert table.visible_count == 30


async def test_o_cycles_the_sort_column_and_shift_o_reverses() -> None:
    async with TableApp().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        table.set_rows(many_rows(40))
        await pilot.pause()
        assert "state ▲" in line(table, 0)
        await pilot.press("o")
        assert table.sort_column == "site"
        assert "site ▲" in line(table, 0)
        ascending = table.visible_keys()
        assert ascending == sorted(ascending)
        await pilot.press("O")
        assert table.sort_reverse and "site ▼" in line(table, 0)
        assert table.visible_keys() == ascending[::-1]
        await pilot.press("o")
        assert table.sort_column == "repository" and not table.sort_reverse
        keys = table.visible_keys()
        assert keys == sorted(keys, key=lambda k: (k[1], k[0]))
        table.sort_by("size", reverse=True)  # dropped at 80 columns, so it is shown while it sorts
        assert "size ▼" in line(table, 0)
        with pytest.raises(ValueError, match="no column 'colour'"):
            table.sort_by("colour")


async def test_counts_changed_and_selected_are_posted() -> None:
    async with TableApp().run_test(size=(80, 24)) as pilot:
        app = pilot.app
        table = app.query_one(RepositoryTable)
        table.set_rows(many_rows(12))
        await pilot.pause()
        last = app.counts[-1]
        assert (last.total, last.visible, last.failed, last.marked) == (12, 12, 2, 0)
        table.set_state_filter(frozenset({FAILED}))
        await pilot.press("space", "enter")
        last = app.counts[-1]
        assert (last.total, last.visible, last.failed, last.marked) == (12, 2, 2, 1)
        assert app.selected == [table.cursor_key]
        posted = len(app.counts)
        table.set_state_filter(frozenset({FAILED}))  # same figures: no message
        await pilot.pause()
        assert len(app.counts) == posted


async def test_a_line_at_80_columns_shows_the_state_glyph_and_the_repository() -> None:
    rows = [
        make_row("eu", "team/api", FAILED, last_sync_failure="TLS handshake timeout\nsecond line"),
        make_row("eu", "team/web", PENDING),
        make_row("eu", "team/" + "very-long-name-" * 5),
    ]
    async with TableApp().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        table.set_rows(rows)
        await pilot.pause()
        width = table.scrollable_content_region.width
        header, failed, pending, synced = (line(table, y) for y in range(4))
        assert len(header) == len(failed) == width <= 80
        for title in ("state", "site", "repository", "synced", "last error"):
            assert title in header
        assert "✗ failed" in failed and "team/api" in failed and "TLS handshake" in failed
        assert "second line" not in failed and failed.rstrip().endswith("…")
        assert "… pending" in pending and "never" in pending
        assert "✓ synced" in synced and "3 min ago" in synced and "…" in synced  # long name cut
        assert line(table, 10).strip() == ""


async def test_columns_adapt_to_a_wide_terminal() -> None:
    async with TableApp().run_test(size=(160, 48)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        table.set_rows([make_row("eu", "team/api")])
        await pilot.pause()
        header, row = line(table, 0), line(table, 1)
        for title in ("tags", "size", "verified", "last error"):
            assert title in header
        assert "12.3 MiB" in row and "✓ ok" in row


async def test_incremental_updates_match_a_fresh_load_under_any_sort_and_filter() -> None:
    chance = random.Random(11)
    rows = {r.key: r for r in many_rows(400)}
    states = (FAILED, STARTED, PENDING, SYNCED)
    async with TableApp().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        table.set_rows(rows.values())
        text, invert, shown = "", False, None
        for step in range(120):
            if step % 10 == 0:
                table.sort_by(chance.choice(list(SORT_COLUMNS)), reverse=chance.random() < 0.3)
            if step % 15 == 0:
                text, invert = chance.choice(["", "group1", "eu/", "gone"]), chance.random() < 0.3
                table.set_text_filter(text, invert=invert)
            if step % 25 == 0:
                shown = chance.choice([None, frozenset({FAILED}), frozenset({PENDING, SYNCED})])
                table.set_state_filter(shown)
            batch = []
            for _ in range(300 if step % 40 == 39 else chance.randint(1, 6)):  # sometimes the big path
                site, number = chance.choice(("eu", "us", "ap")), chance.randrange(500)
                state = chance.choice(states)
                batch.append(
                    make_row(
                        site,
                        f"group{number % 97}/project-{number:06d}",
                        state,
                        tag_count=chance.choice([None, 1, 5]),
                        bytes=chance.choice([None, 10, 10_000]),
                        last_synced_at=chance.choice([None, NOW - 60, NOW - 9000]),
                    )
                )
            before = table.cursor_key
            table.upsert_rows(batch)
            rows.update((r.key, r) for r in batch)
            fresh = RepositoryTable(now=lambda: NOW)
            fresh.set_rows(rows.values())
            fresh.sort_by(table.sort_column, table.sort_reverse)
            fresh.set_text_filter(text, invert=invert)
            fresh.set_state_filter(shown)
            assert table.visible_keys() == fresh.visible_keys(), step
            assert table.failed_count == sum(r.state is FAILED for r in rows.values())
            if before in table.visible_keys():
                assert table.cursor_key == before


async def test_bindings_can_be_remapped_by_id_and_select_greys_out_when_empty() -> None:
    assert all(b.id and b.id.startswith("repositories.") for b in RepositoryTable.BINDINGS)  # type: ignore[union-attr]
    async with TableApp().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        assert table.check_action("select", ()) is None and table.check_action("toggle_mark", ()) is None
        table.set_rows(many_rows(5))
        assert table.check_action("select", ()) is True
        pilot.app.set_keymap({"repositories.cursor_down": "n"})
        await pilot.press("n")
        assert table.cursor_key == table.visible_keys()[1]


async def test_states_keep_distinct_colours_in_16_colour_terminals() -> None:
    async with TableApp().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        table.set_rows(
            [
                make_row("eu", name, state)
                for name, state in zip("abcd", (FAILED, STARTED, PENDING, SYNCED), strict=True)
            ]
        )
        await pilot.press("end")  # the cursor off the rows we look at
        colours = set()
        for y in (1, 2, 3):
            glyph = next(seg for seg in table.render_line(y) if seg.text.strip())
            assert glyph.text.strip()[0] in "✗⟳…"
            assert glyph.style is not None and glyph.style.color is not None
            colours.add(glyph.style.color.downgrade(ColorSystem.STANDARD).number)
        table.set_state_filter(frozenset({SYNCED}))
        table.set_state_filter(None)
        await pilot.press("home")
        glyph = next(seg for seg in table.render_line(4) if seg.text.strip())
        assert glyph.text.startswith("✓") and glyph.style is not None and glyph.style.color is not None
        colours.add(glyph.style.color.downgrade(ColorSystem.STANDARD).number)
        assert len(colours) == 4


@pytest.mark.parametrize(("age", "redrawn"), [(42, True), (180, False)])
async def test_ages_in_seconds_move_on_every_second(age: float, redrawn: bool) -> None:
    """'42 s ago' reads as it does in the detail screen and the CLI, and is kept true: the table redraws
    each second while a line shows an age under a minute, and only every 30 s otherwise."""
    async with TableApp().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        table.set_rows([make_row("eu", "alpha", last_synced_at=NOW - age)])
        await pilot.pause()
        assert ("42 s ago" if redrawn else "3 min ago") in line(table, 1)
        redraws = 0
        refresh = table.refresh

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal redraws
            redraws += 1
            return refresh(*args, **kwargs)

        table.refresh = counted  # type: ignore[method-assign]
        await pilot.pause(1.6)
        assert (redraws > 0) is redrawn


async def test_100k_rows_load_filter_and_sort_without_pathology() -> None:
    rows = many_rows(100_000)
    random.Random(7).shuffle(rows)
    # CPU seconds of this process, not wall time: on a busy machine the wall clock also counts the time
    # other processes held the cores, which says nothing about the table's work.
    async with TableApp().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(RepositoryTable)
        started = time.process_time()
        table.set_rows(rows)
        await pilot.pause()
        loaded = time.process_time() - started
        assert "✗ failed" in line(table, 1)

        started = time.process_time()
        table.set_text_filter("project-0001")
        await pilot.pause()
        filtered = time.process_time() - started
        assert table.visible_count == 100

        table.set_text_filter("")
        started = time.process_time()
        table.sort_by("repository")
        await pilot.pause()
        sorted_in = time.process_time() - started
        assert table.visible_count == 100_000

        started = time.process_time()
        await pilot.press("end", "pageup", "home")
        scrolled = time.process_time() - started
        # generous bounds that catch pathology (per-row widgets, O(n) per line); targets live in bench/
        assert loaded < 2 and filtered < 2 and sorted_in < 2 and scrolled < 2
