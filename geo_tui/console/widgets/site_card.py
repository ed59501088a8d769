"""One site's card: health, and for a secondary how far it is in step with the primary.

Five short lines fit a card ~38 columns wide. Every state has a glyph (● ✗ ✓ … ⟳) as well as a colour,
so the card reads the same on a 16-colour terminal (TEXTUAL_COLOR_SYSTEM=standard).
"""

from __future__ import annotations

from rich.cells import cell_len
from textual.content import Content
from textual.widgets import Static

from geo_tui.console.glyphs import percent_bar, sparkline
from geo_tui.engine import SiteCounts, SiteHealth, SiteSnapshot
from geo_tui.figures import count, duration, rate

__all__ = ["SiteCard", "card_lines"]

TEXT_WIDTH = 34  # 38 columns less the border and padding
SPARK_WIDTH = 8
_LABEL = 7  # "verify "

Part = tuple[str, str]  # text and style


def _line(*parts: Part | str | Content) -> Content:
    return Content.assemble(*parts)


def _health(health: SiteHealth | None) -> list[Part]:
    if health is None:
        return [("… checking…", "$text-muted")]
    if health.healthy:
        latency = "" if health.latency is None else f" {health.latency * 1000:.0f} ms"
        return [("● healthy" + latency, "$success")]
    return [(f"✗ {health.error or 'unreachable'}", "bold $error")]


def _health_line(snapshot: SiteSnapshot, width: int) -> Content:
    """Health on the left; a secondary's lag on the right, never pushed off by a long error."""
    left = _line(*_health(snapshot.health))
    if snapshot.role == "primary":
        return left.truncate(width, ellipsis=True)
    lag = "lag —" if snapshot.lag is None else f"lag {duration(snapshot.lag)}"
    room = width - cell_len(lag) - 1
    if left.cell_length > room:
        left = left.truncate(max(1, room), ellipsis=True)
    gap = max(1, width - left.cell_length - cell_len(lag))
    return _line(left, " " * gap, (lag, "$text-muted" if snapshot.lag is None else ""))


def percent_text(counts: SiteCounts) -> str:
    """Percent synced to 2 decimals, rounded down: 100.00% only when every repository is synced."""
    return f"{counts.percent_synced:.2f}%"


def _tally(label: str, done: int, failed: int, pending: int, running: int | None, width: int) -> Content:
    parts: list[Part | str] = [(label.ljust(_LABEL), "$text-muted"), (f"✓ {count(done)}", "$success")]
    parts += [" ", (f"✗ {count(failed)}", "bold $error" if failed else "$text-muted")]
    parts += [" ", (f"… {count(pending)}", "$warning" if pending else "$text-muted")]
    if running is not None:
        parts += [" ", (f"⟳ {count(running)}", "$accent" if running else "$text-muted")]
    line = _line(*parts)
    if line.cell_length > width:  # big numbers: the label goes first
        line = _line(*parts[1:])
    return line.truncate(width, ellipsis=True)


def _secondary_lines(snapshot: SiteSnapshot, width: int) -> list[Content]:
    counts = snapshot.counts
    lines = [_health_line(snapshot, width)]
    if counts is None:
        lines.append(_line(("counting repositories…", "$text-muted")))
    else:
        percent = percent_text(counts)
        fraction = counts.synced / counts.total if counts.total else 1.0
        complete = counts.total == counts.synced
        bar = percent_bar(fraction, max(1, width - len(percent) - 1))
        lines.append(_line((bar, "$success" if complete else "$accent"), " ", (percent, "bold")))
        lines.append(_tally("sync", counts.synced, counts.failed, counts.pending, counts.started, width))
        lines.append(
            _tally(
                "verify",
                counts.verified,
                counts.verification_failed,
                counts.verification_pending,
                None,
                width,
            )
        )
    spark = sparkline(snapshot.throughput_history, SPARK_WIDTH)
    parts: list[Part | str] = [(spark, "$accent"), " ", rate(snapshot.throughput)]
    backlog = counts is not None and counts.pending + counts.failed + counts.started > 0
    if backlog and snapshot.eta is not None:
        parts += [" ", (f"ETA {duration(snapshot.eta)}", "bold")]
    lines.append(_line(*parts).truncate(width, ellipsis=True))
    return lines


def _primary_lines(snapshot: SiteSnapshot, width: int) -> list[Content]:
    repositories = "…" if snapshot.repository_count is None else count(snapshot.repository_count)
    return [
        _health_line(snapshot, width),
        _line((snapshot.registry, "$text-muted")).truncate(width, ellipsis=True),
        _line(("repositories ", "$text-muted"), (repositories, "bold")),
    ]


def card_lines(snapshot: SiteSnapshot, width: int = TEXT_WIDTH) -> list[Content]:
    """The card's lines for one snapshot, each at most `width` cells."""
    if snapshot.role == "primary":
        return _primary_lines(snapshot, width)
    return _secondary_lines(snapshot, width)


def _tooltip(snapshot: SiteSnapshot) -> str:
    lines = [f"{snapshot.name} ({snapshot.role}) {snapshot.registry}"]
    health = snapshot.health
    if health is not None and not health.healthy:
        lines.append(f"unreachable: {health.error}")
    counts = snapshot.counts
    if counts is not None:
        lines.append(
            f"{count(counts.synced)} synced, {count(counts.failed)} failed, {count(counts.pending)} pending, "
            f"{count(counts.started)} running of {count(counts.total)}"
        )
        lines.append(
            f"verification: {count(counts.verified)} ok, {count(counts.verification_failed)} failed, "
            f"{count(counts.verification_pending)} pending"
        )
    return "\n".join(lines)


class SiteCard(Static):
    """A site's card; the app calls `update_snapshot` with each new snapshot."""

    DEFAULT_CSS = """
    SiteCard {
        width: 38;
        height: 7;
        padding: 0 1;
        border: round $primary;
        border-title-color: $text;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        &.-primary { border: round $secondary; }
        &.-unhealthy { border: heavy $error; }
    }
    """

    def __init__(self, site: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("", id=id, classes=classes)
        self.site = site
        self.snapshot: SiteSnapshot | None = None
        self.border_title = site

    def update_snapshot(self, snapshot: SiteSnapshot, now: float) -> None:
        """Show `snapshot` (now is the console's clock, for figures that age)."""
        self.snapshot = snapshot
        self.border_subtitle = snapshot.role
        self.set_class(snapshot.role == "primary", "-primary")
        self.set_class(snapshot.health is not None and not snapshot.health.healthy, "-unhealthy")
        self.tooltip = _tooltip(snapshot)
        self._draw()

    def _draw(self) -> None:
        if self.snapshot is None:
            return
        width = self.content_region.width if self.is_mounted and self.content_region.width else TEXT_WIDTH
        self.update(Content("\n").join(card_lines(self.snapshot, width)), layout=False)

    def on_resize(self) -> None:
        self._draw()

    @property
    def text(self) -> str:
        """The card's text without styles (what a screen reader or a test sees)."""
        return self.visual.plain if isinstance(self.visual, Content) else str(self.visual)
