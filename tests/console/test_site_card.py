"""SiteCard, SitesPane and the glyphs they draw (geo_tui.console.glyphs), at 80x24."""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from textual.app import App, ComposeResult

from geo_tui.console.glyphs import percent_bar, short_digest, sparkline
from geo_tui.console.widgets.site_card import TEXT_WIDTH, SiteCard, card_lines
from geo_tui.console.widgets.sites_pane import SitesPane
from geo_tui.engine import SiteCounts, SiteHealth, SiteSnapshot

NOW = 1_700_000_000.0
MIB = 2**20


def counts(**changes: Any) -> SiteCounts:
    fields: dict[str, Any] = {
        "site": "eu",
        "total": 12_345,
        "pending": 200,
        "started": 3,
        "synced": 12_080,
        "failed": 62,
        "verified": 12_000,
        "verification_failed": 5,
        "verification_pending": 340,
        "bytes": 10**10,
        "oldest_unsynced_event_at": NOW - 4,
    }
    fields.update(changes)
    return SiteCounts(**fields)


def secondary(name: str = "eu", **changes: Any) -> SiteSnapshot:
    fields: dict[str, Any] = {
        "name": name,
        "role": "secondary",
        "registry": f"https://{name}.example",
        "health": SiteHealth(name, True, 0.012, None, NOW),
        "counts": counts(site=name),
        "throughput": 12.4 * MIB,
        "throughput_history": tuple(float(i * MIB) for i in range(12)),
        "eta": 250.0,
        "lag": 4.2,
        "repository_count": None,
    }
    fields.update(changes)
    return SiteSnapshot(**fields)


def primary(**changes: Any) -> SiteSnapshot:
    fields: dict[str, Any] = {
        "name": "main",
        "role": "primary",
        "registry": "https://registry.example.com:5000",
        "health": SiteHealth("main", True, 0.0123, None, NOW),
        "counts": None,
        "throughput": 0.0,
        "throughput_history": (),
        "eta": None,
        "lag": None,
        "repository_count": 12_345,
    }
    fields.update(changes)
    return SiteSnapshot(**fields)


def text(snapshot: SiteSnapshot) -> str:
    return "\n".join(line.plain for line in card_lines(snapshot))


# -- glyphs.py ------------------------------------------------------------------------------------


def test_format_sparkline_scales_to_the_maximum_and_pads_on_the_left() -> None:
    assert sparkline([0, 1, 2, 4, 8], 5) == "▁▂▃▅█"
    assert sparkline([8, 8], 4) == "  ██"
    assert sparkline([], 3) == "   "
    assert sparkline([0, 0, 0], 3) == "▁▁▁"
    assert sparkline(list(range(100)), 8)[-1] == "█"
    assert len(sparkline(list(range(100)), 8)) == 8
    # A trickle is not drawn like a stall.
    assert sparkline([0, 1, 1000], 3)[:2] == "▁▂"


def test_format_percent_bar_is_full_only_at_one() -> None:
    assert percent_bar(1.0, 8) == "████████"
    assert percent_bar(0.0, 8) == "░░░░░░░░"
    assert percent_bar(0.5, 8) == "████░░░░"
    assert percent_bar(0.9999, 8) != "████████"
    assert len(percent_bar(0.9785, 20)) == 20
    assert percent_bar(0.5625, 4) == "██▎░"


def test_format_short_digest() -> None:
    assert short_digest("sha256:" + "ab" * 32) == "sha256:abababab…"
    assert short_digest(None) == "—"


# -- SiteCard ---------------------------------------------------------------------------------------


def test_secondary_card_shows_percent_with_two_decimals_and_a_bar() -> None:
    shown = text(secondary())
    assert "97.85%" in shown  # 12,080 of 12,345 = 97.853...
    bar = shown.splitlines()[1].split()[0]
    assert bar.startswith("█") and not set(bar) <= {"█"}  # 97.85% never draws a full bar


def test_percent_reads_100_only_when_everything_is_synced() -> None:
    almost = secondary(counts=counts(total=100_000, synced=99_999, pending=1, failed=0, started=0))
    assert "99.99%" in text(almost)
    done = secondary(counts=counts(total=10, synced=10, pending=0, failed=0, started=0))
    assert "100.00%" in text(done)


def test_secondary_card_shows_sync_and_verification_counts() -> None:
    lines = text(secondary()).splitlines()
    sync = next(line for line in lines if line.startswith("sync"))
    verify = next(line for line in lines if line.startswith("verify"))
    assert "✓ 12,080" in sync and "✗ 62" in sync and "… 200" in sync and "⟳ 3" in sync
    assert "✓ 12,000" in verify and "✗ 5" in verify and "… 340" in verify


def test_card_shows_throughput_sparkline_eta_and_lag() -> None:
    shown = text(secondary())
    assert "12.4 MiB/s" in shown
    assert "▇█" in shown  # the newest minutes were the busiest
    assert "ETA 4m 10s" in shown
    assert "lag 4s" in shown


def test_eta_only_while_a_backfill_runs() -> None:
    idle = counts(pending=0, failed=0, started=0, synced=12_345)
    assert "ETA" not in text(secondary(counts=idle, eta=30.0))
    assert "ETA" not in text(secondary(eta=None))


def test_lag_dash_when_nothing_is_waiting() -> None:
    assert "lag —" in text(secondary(lag=None))
    assert "lag 4m 10s" in text(secondary(lag=250.0))


def test_health_states() -> None:
    assert "● healthy 12 ms" in text(secondary())
    assert "checking…" in text(secondary(health=None))
    down = SiteHealth("eu", False, None, "connection refused", NOW)
    first = text(secondary(health=down)).splitlines()[0]
    assert first.startswith("✗ connection refused")
    assert first.endswith("lag 4s")  # a long error never pushes the lag off the card


def test_long_error_is_cut_to_the_card_and_kept_in_the_tooltip() -> None:
    error = "cannot reach https://eu.example/v2/: connection refused after 3 attempts, giving up"
    snapshot = secondary(health=SiteHealth("eu", False, None, error, NOW))
    first = text(snapshot).splitlines()[0]
    assert "…" in first and "lag 4s" in first
    assert all(cell_len(line) <= TEXT_WIDTH for line in text(snapshot).splitlines())


def test_counts_not_known_yet() -> None:
    assert "counting repositories…" in text(secondary(counts=None, eta=None))


def test_primary_card() -> None:
    shown = text(primary())
    assert "● healthy 12 ms" in shown
    assert "https://registry.example.com:5000" in shown
    assert "repositories 12,345" in shown
    assert "sync" not in shown and "lag" not in shown


def test_every_card_line_fits_a_38_column_card() -> None:
    big = counts(total=999_999, synced=123_456, failed=99_999, pending=777_777, started=16)
    for snapshot in (secondary(), secondary(counts=big), primary(), secondary(health=None, counts=None)):
        lines = text(snapshot).splitlines()
        assert len(lines) <= 5
        assert all(cell_len(line) <= TEXT_WIDTH for line in lines), lines


# -- in an app --------------------------------------------------------------------------------------


class SitesApp(App[None]):
    def compose(self) -> ComposeResult:
        yield SitesPane(id="sites")


async def test_sites_pane_puts_the_primary_first_and_updates_cards_in_place() -> None:
    app = SitesApp()
    async with app.run_test(size=(80, 24)) as pilot:
        pane = app.query_one(SitesPane)
        pane.update_snapshots([secondary("eu"), primary(), secondary("us")], NOW)
        await pilot.pause()
        cards = list(app.query(SiteCard))
        assert [card.site for card in cards] == ["main", "eu", "us"]
        assert cards[0].has_class("-primary")

        down = SiteHealth("eu", False, None, "connection refused", NOW)
        pane.update_snapshots([primary(), secondary("eu", health=down), secondary("us")], NOW + 1)
        await pilot.pause()
        assert list(app.query(SiteCard)) == cards  # the same widgets: nothing remounted
        eu = pane.cards["eu"]
        assert eu.has_class("-unhealthy")
        assert "✗ connection refused" in eu.text
        assert eu.outer_size.width == 38 and eu.outer_size.height == 7

        pane.update_snapshots([primary(), secondary("eu")], NOW + 2)
        await pilot.pause()
        assert [card.site for card in app.query(SiteCard)] == ["main", "eu"]


async def test_sites_pane_scrolls_sideways_when_cards_do_not_fit() -> None:
    app = SitesApp()
    async with app.run_test(size=(80, 24)) as pilot:
        pane = app.query_one(SitesPane)
        pane.update_snapshots([primary(), secondary("eu"), secondary("us"), secondary("ap")], NOW)
        await pilot.pause()
        assert pane.max_scroll_x > 0
        pane.focus()
        await pilot.press("end")
        await pilot.pause(0.2)
        assert pane.scroll_x == pane.max_scroll_x
        await pilot.press("home")
        await pilot.pause(0.2)
        assert pane.scroll_x == 0


async def test_card_renders_in_an_app() -> None:
    app = SitesApp()
    async with app.run_test(size=(80, 24)) as pilot:
        app.query_one(SitesPane).update_snapshots([secondary()], NOW)
        await pilot.pause()
        card = app.query_one(SiteCard)
        rendered = card.render()
        assert "97.85%" in str(rendered)
        assert card.border_title == "eu" and card.border_subtitle == "secondary"
        assert card.tooltip is not None and "62 failed" in str(card.tooltip)
