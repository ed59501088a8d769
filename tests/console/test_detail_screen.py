"""RepositoryDetailScreen: tags on every site side by side, each secondary's state and failures, at 80x24."""

from __future__ import annotations

from typing import Any

from textual.app import App
from textual.widgets import Static

from geo_tui.console.screens.detail import LOADING, RepositoryDetailScreen, tag_table
from geo_tui.engine import (
    LogRecord,
    RepositoryDetail,
    RepositoryRow,
    SiteTags,
    SyncState,
    VerificationState,
)

NOW = 1_700_000_000.0
A, B, C = ("sha256:" + ch * 64 for ch in "abc")
SYNC_ERROR = (
    "secondary PUT /v2/lib/nginx/blobs/uploads/3f1c: 500 Internal Server Error: "
    + " ".join(f"detail{i}" for i in range(30))
    + " END-OF-ERROR"
)
VERIFY_ERROR = "checksum mismatch: expected sha256:aaaa, the secondary computed sha256:bbbb"


def make_row(site: str, state: SyncState, **changes: Any) -> RepositoryRow:
    failed = state is SyncState.FAILED
    fields: dict[str, Any] = {
        "site": site,
        "repository": "lib/nginx",
        "state": state,
        "generation": 1,
        "retry_count": 3 if failed else 0,
        "retry_at": NOW + 80 if failed else None,
        "started_at": None,
        "last_synced_at": NOW - 180,
        "last_sync_failure": SYNC_ERROR if failed else None,
        "tag_count": 3,
        "bytes": 123_456_789,
        "verification_state": VerificationState.FAILED if failed else VerificationState.SUCCEEDED,
        "verification_checksum": None,
        "verified_at": NOW - 60,
        "verification_failure": VERIFY_ERROR if failed else None,
        "on_primary": True,
        "oldest_unsynced_event_at": None,
    }
    fields.update(changes)
    return RepositoryRow(**fields)


def make_detail(**changes: Any) -> RepositoryDetail:
    fields: dict[str, Any] = {
        "repository": "lib/nginx",
        "sites": (
            SiteTags("main", {"v1": A, "v2": B, "latest": B}),
            SiteTags("eu", {"v1": A, "v2": C}),
            SiteTags("us", None, "unreachable: connection refused"),
        ),
        "rows": (make_row("eu", SyncState.FAILED), make_row("us", SyncState.SYNCED)),
        "history": tuple(
            LogRecord(i, NOW - 100 + i, "error" if i % 2 else "info", "eu", "lib/nginx", f"event {i}")
            for i in range(3)
        ),
    }
    fields.update(changes)
    return RepositoryDetail(**fields)


class DetailApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.closed: list[object] = []
        self.detail_screen = RepositoryDetailScreen("lib/nginx")

    def on_mount(self) -> None:
        self.push_screen(self.detail_screen, self.closed.append)


def screen_text(app: App[Any]) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def plain(widget: Static) -> str:
    return str(widget.render())


def test_tag_table_puts_sites_side_by_side_and_marks_differences() -> None:
    lines = tag_table(make_detail()).plain.splitlines()
    assert lines[0].split() == ["tag", "main", "(primary)", "eu", "us"]
    # Differing tags first, each marked ✗; a missing tag shows —; an unreadable site says so.
    assert lines[1].split() == ["✗", "latest", "sha256:bbbbbbbb…", "—", "?", "unreadable"]
    assert lines[2].split() == ["✗", "v2", "sha256:bbbbbbbb…", "sha256:cccccccc…", "?", "unreadable"]
    assert lines[3].split() == ["✓", "v1", "sha256:aaaaaaaa…", "sha256:aaaaaaaa…", "?", "unreadable"]
    # Columns line up: each site's digest starts where its title does.
    assert lines[1].index("sha256") == lines[0].index("main")
    assert lines[2].index("sha256:cc") == lines[0].index("eu")


def test_differing_cells_are_styled_apart_from_matching_ones() -> None:
    content = tag_table(make_detail())
    text = content.plain

    def style_at(needle: str, line: int) -> str:
        start = sum(len(x) + 1 for x in text.splitlines()[:line]) + text.splitlines()[line].index(needle)
        return " ".join(str(s.style) for s in content.spans if s.start <= start < s.end)

    assert "$error" in style_at("sha256:cc", 2)
    assert "$error" not in style_at("sha256:aa", 3)
    assert "$warning" in style_at("—", 1)


async def test_shows_loading_until_the_detail_arrives() -> None:
    app = DetailApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert LOADING in screen_text(app)
        assert "sha256" not in screen_text(app)
        assert not app.detail_screen.loaded

        app.detail_screen.show(make_detail(), NOW)
        await pilot.pause()
        shown = screen_text(app)
        assert LOADING not in shown
        assert "✗ 2 of 3 tags differ across 3 sites" in shown
        assert "✗ latest" in shown and "✓ v1" in shown
        assert "✗ us: cannot read its tags: unreachable: connection refused" in shown
        assert "eu  ✗ failed · 3 retries · last synced 3 min ago · next retry in 1m 20s" in shown


async def test_failures_are_shown_in_full_and_wrapped() -> None:
    app = DetailApp()
    async with app.run_test(size=(80, 24)) as pilot:
        app.detail_screen.show(make_detail(), NOW)
        await pilot.pause()
        failures = list(app.screen.query(".failure").results(Static))
        assert [plain(f) for f in failures] == [SYNC_ERROR, VERIFY_ERROR]
        assert failures[0].size.height >= 3  # wrapped over lines, not cut at the edge
        assert failures[0].size.width <= 80

        app.screen.query_one("#detail-body").scroll_end(animate=False)
        await pilot.pause()
        await pilot.pause()
        shown = screen_text(app)
        assert "END-OF-ERROR" in shown
        assert "us  ✓ synced" in shown
        assert "✗ [eu/lib/nginx] event 1" in shown  # history, below


async def test_show_again_replaces_rather_than_appends() -> None:
    app = DetailApp()
    async with app.run_test(size=(80, 24)) as pilot:
        app.detail_screen.show(make_detail(), NOW)
        await pilot.pause()
        healed = make_detail(
            sites=(SiteTags("main", {"v1": A}), SiteTags("eu", {"v1": A}), SiteTags("us", {"v1": A})),
            rows=(make_row("eu", SyncState.SYNCED), make_row("us", SyncState.SYNCED)),
            history=(),
        )
        app.detail_screen.show(healed, NOW)
        await pilot.pause()
        assert not list(app.screen.query(".failure"))
        assert not list(app.screen.query(".site-error"))
        shown = screen_text(app)
        assert "✓ all 1 tags match on every readable site (3 sites)" in shown
        assert "✗" not in shown


async def test_a_repository_with_no_tags_and_no_rows() -> None:
    app = DetailApp()
    async with app.run_test(size=(80, 24)) as pilot:
        app.detail_screen.show(
            make_detail(sites=(SiteTags("main", {}), SiteTags("eu", {})), rows=(), history=()), NOW
        )
        await pilot.pause()
        shown = screen_text(app)
        assert "no tags on any readable site (2 sites)" in shown
        assert "not tracked on any secondary" in shown
        assert "no events recorded for this repository" in shown


async def test_show_before_the_screen_is_mounted() -> None:
    app = DetailApp()
    app.detail_screen.show(make_detail(), NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert "✗ latest" in screen_text(app)


async def test_escape_goes_back() -> None:
    app = DetailApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.screen is app.detail_screen
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is not app.detail_screen
        assert app.closed == [None]  # dismissed: the app's callback ran
        assert [b.id for b in RepositoryDetailScreen.BINDINGS if not isinstance(b, tuple | str)] == [
            "detail.back"
        ]


async def test_reset_starts_over_for_another_repository() -> None:
    app = DetailApp()
    async with app.run_test(size=(80, 24)) as pilot:
        app.detail_screen.show(make_detail(), NOW)
        await pilot.pause()
        app.screen.query_one("#detail-body").scroll_end(animate=False)
        await pilot.pause()
        app.detail_screen.reset("team/other")
        await pilot.pause()
        shown = screen_text(app)
        assert LOADING in shown and "sha256" not in shown and "✗" not in shown
        assert "team/other" in shown  # the header names the repository
        assert app.detail_screen.repository == "team/other" and not app.detail_screen.loaded
        assert app.screen.query_one("#detail-body").scroll_y == 0


async def test_says_when_the_engine_last_saw_each_site_s_tags() -> None:
    app = DetailApp()
    async with app.run_test(size=(80, 24)) as pilot:
        sites = (
            SiteTags("main", {"v1": A}, seen_at=NOW - 5),
            SiteTags("eu", {"v1": A}, seen_at=NOW - 120),
            SiteTags("us", None, "not seen yet: no sync or push copy of it has run"),
        )
        app.detail_screen.show(make_detail(sites=sites), NOW)
        await pilot.pause()
        shown = screen_text(app)
        assert "tags as last seen: main 5 s ago, eu 2 min ago" in shown
