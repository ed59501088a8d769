"""One repository on every site: its tags side by side, each secondary's state, failures in full, history.

The app pushes the screen at once (it says "loading…"), reads the detail off the UI thread, and calls
`show` with it; `show` may be called again with fresher detail.
"""

from __future__ import annotations

import time
from typing import ClassVar

from rich.cells import cell_len
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import HorizontalScroll, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Header, Static

from geo_tui.console.glyphs import short_digest
from geo_tui.console.widgets.event_log import level_glyph, record_where
from geo_tui.console.widgets.key_hints import key_hint_bar
from geo_tui.engine import LogRecord, RepositoryDetail, RepositoryRow, SyncState, VerificationState
from geo_tui.figures import ago, duration, size

__all__ = ["LOADING", "RepositoryDetailScreen", "tag_table"]

LOADING = "loading tags from every site…"
_DIGEST_WIDTH = len("sha256:abcd1234…")
_SYNC = {
    SyncState.FAILED: ("✗ failed", "bold $error"),
    SyncState.STARTED: ("⟳ running", "$accent"),
    SyncState.PENDING: ("… pending", "$warning"),
    SyncState.SYNCED: ("✓ synced", "$success"),
}
_VERIFY = {
    VerificationState.FAILED: ("✗ failed", "bold $error"),
    VerificationState.STARTED: ("⟳ running", "$accent"),
    VerificationState.PENDING: ("… pending", "$warning"),
    VerificationState.SUCCEEDED: ("✓ succeeded", "$success"),
}
_LEVEL_STYLE = {"error": "bold $text-error", "critical": "bold $text-error", "warning": "$text-warning"}


def _primary_name(detail: RepositoryDetail) -> str | None:
    """The primary has no tracked row; the engine lists it first."""
    tracked = {row.site for row in detail.rows}
    if detail.sites and detail.sites[0].site not in tracked:
        return detail.sites[0].site
    return None


def _plain(text: str) -> Content:
    """Text from a registry or the network, as is: no markup, no control codes."""
    return Content.assemble(text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - cell_len(text))


def tag_table(detail: RepositoryDetail) -> Content:
    """One line per tag (differing tags first): ✗ or ✓, the tag, then each site's short digest or —."""
    differing = detail.differing_tags()
    tags = sorted(set().union(*(s.tags for s in detail.sites if s.tags is not None)))
    tags.sort(key=lambda t: t not in differing)  # stable: alphabetical within each group
    primary = _primary_name(detail)
    titles = [f"{s.site} (primary)" if s.site == primary else s.site for s in detail.sites]
    widths = [max(_DIGEST_WIDTH, cell_len(title)) for title in titles]
    tag_width = max([cell_len("tag"), *(cell_len(t) for t in tags)])
    header: list[str | tuple[str, str]] = [("  " + _pad("tag", tag_width), "bold")]
    for title, width in zip(titles, widths, strict=True):
        header += ["  ", (_pad(title, width), "bold")]
    lines = [Content.assemble(*header)]
    for tag in tags:
        differs = tag in differing
        readable = [s.tags[tag] for s in detail.sites if s.tags is not None and tag in s.tags]
        reference = readable[0] if readable else None
        parts: list[str | tuple[str, str]] = [
            ("✗ " if differs else "✓ ", "bold $error" if differs else "$success"),
            (_pad(tag, tag_width), "bold $error" if differs else ""),
        ]
        for site, width in zip(detail.sites, widths, strict=True):
            if site.tags is None:
                cell, style = "? unreadable", "$text-muted"
            elif tag not in site.tags:
                cell, style = "—", "bold $warning"
            else:
                digest = site.tags[tag]
                cell, style = short_digest(digest), ("bold $error" if digest != reference else "")
            parts += ["  ", (_pad(cell, width), style)]
        lines.append(Content.assemble(*parts))
    return Content("\n").join(lines)


def _summary(detail: RepositoryDetail) -> Content:
    readable = [s for s in detail.sites if s.tags is not None]
    every = set().union(*(s.tags for s in readable if s.tags is not None))
    differing = detail.differing_tags()
    sites = f"{len(detail.sites)} site{'s' if len(detail.sites) != 1 else ''}"
    if not every:
        return Content.assemble((f"no tags on any readable site ({sites})", "$text-muted"))
    if differing:
        return Content.assemble(
            (f"✗ {len(differing)} of {len(every)} tags differ", "bold $error"), f" across {sites}"
        )
    return Content.assemble(
        ("✓ ", "$success"), f"all {len(every)} tags match on every readable site ({sites})"
    )


def _row_summary(row: RepositoryRow, now: float) -> Content:
    state, style = _SYNC[row.state]
    retries = f"{row.retry_count} retr{'y' if row.retry_count == 1 else 'ies'}"
    parts: list[str | tuple[str, str]] = [(row.site, "bold"), "  ", (state, style), f" · {retries}"]
    parts.append(f" · last synced {ago(row.last_synced_at, now)}")
    if row.state is SyncState.FAILED and row.retry_at is not None:
        parts.append(
            f" · next retry in {duration(row.retry_at - now)}" if row.retry_at > now else " · retry due"
        )
    if row.state is SyncState.STARTED and row.started_at is not None:
        parts.append(f" · running for {duration(now - row.started_at)}")
    if row.tag_count is not None:
        parts.append(f" · {row.tag_count} tag{'s' if row.tag_count != 1 else ''}")
    if row.bytes is not None:
        parts.append(f" · {size(row.bytes)}")
    if not row.on_primary:
        parts += [" · ", ("gone from the primary", "bold $warning")]
    return Content.assemble(*parts)


def _verification(row: RepositoryRow, now: float) -> Content:
    state, style = _VERIFY[row.verification_state]
    parts: list[str | tuple[str, str]] = [("verification ", "$text-muted"), (state, style)]
    if row.verified_at is not None:
        depth = f" ({row.verification_depth})" if row.verification_depth else ""
        parts.append(f" · verified{depth} {ago(row.verified_at, now)}")
    if row.deep_verified_at is not None and row.verification_depth not in ("deep", "content"):
        parts.append(f" · last deep check {ago(row.deep_verified_at, now)}")
    elif row.deep_verified_at is None and row.verified_at is not None:
        parts.append(" · blobs never checked (d: deep verify)")
    if row.verification_checksum:
        parts.append(f" · checksum {short_digest(row.verification_checksum)}")
    return Content.assemble(*parts)


def _history_line(record: LogRecord) -> Content:
    level = record.level.lower()
    style = _LEVEL_STYLE.get(level, "")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.at))
    parts: list[str | tuple[str, str]] = [(stamp, "$text-muted"), " ", (level_glyph(level), style), " "]
    where = record_where(record)
    if where:
        parts += [(where, "$text-secondary"), " "]
    parts.append((record.message, style))
    return Content.assemble(*parts)


class RepositoryDetailScreen(Screen[None]):
    """The repository's tags on every site side by side, each secondary's state and failures, history."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back", id="detail.back")]

    DEFAULT_CSS = """
    RepositoryDetailScreen > VerticalScroll { padding: 0 1; }
    RepositoryDetailScreen #detail-tags-scroll { height: auto; scrollbar-size-horizontal: 1; }
    RepositoryDetailScreen .heading { text-style: bold; margin-top: 1; color: $text-primary; }
    RepositoryDetailScreen #detail-tags { width: auto; text-wrap: nowrap; }
    RepositoryDetailScreen #detail-loading { color: $text-muted; }
    RepositoryDetailScreen .site-error { color: $text-error; }
    RepositoryDetailScreen .secondary { height: auto; }
    RepositoryDetailScreen .row-title { margin-top: 1; }
    RepositoryDetailScreen .failure-title { padding-left: 2; color: $text-muted; }
    RepositoryDetailScreen .failure { padding-left: 4; color: $text-error; }
    """

    def __init__(self, repository: str) -> None:
        super().__init__()
        self.repository = repository
        self.detail: RepositoryDetail | None = None
        self._now = 0.0
        self.title = repository  # the Header shows it
        self.sub_title = "repository on every site"

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="detail-body"):
            yield Static(LOADING, id="detail-loading")
            yield Static(id="detail-summary", markup=False)
            with HorizontalScroll(id="detail-tags-scroll"):  # many sites: the table scrolls sideways
                yield Static(id="detail-tags", markup=False)
            yield Vertical(id="detail-site-errors", classes="secondary")
            yield Static("Secondaries", classes="heading", id="detail-secondaries-heading")
            yield Vertical(id="detail-secondaries", classes="secondary")
            yield Static("History", classes="heading", id="detail-history-heading")
            yield Static(id="detail-history", markup=False)
        yield key_hint_bar()

    def on_mount(self) -> None:
        self.query_one("#detail-body").focus()
        if self.detail is not None:
            self._draw()
        else:
            self._show_loading()

    def reset(self, repository: str) -> None:
        """Show `repository` as "loading…": the console keeps one detail screen and reuses it, because
        composing a new one took ~90 ms of a keypress during a backfill."""
        self.repository, self.detail = repository, None
        self.title = repository
        if self.is_mounted:
            self._show_loading()

    def _show_loading(self) -> None:
        body = self.query_one("#detail-body", VerticalScroll)
        for node in body.children:
            node.display = node.id == "detail-loading"
        body.scroll_home(animate=False)

    @property
    def loaded(self) -> bool:
        return self.detail is not None

    def show(self, detail: RepositoryDetail, now: float) -> None:
        """Replace "loading…" (or older detail) with `detail`; `now` is the console's clock."""
        self.detail, self._now = detail, now
        if self.is_mounted:
            self._draw()

    def _draw(self) -> None:
        detail, now = self.detail, self._now
        assert detail is not None
        with self.app.batch_update():
            for node in self.query_one("#detail-body").children:
                node.display = node.id != "detail-loading"
            self.query_one("#detail-summary", Static).update(_summary(detail))
            self.query_one("#detail-tags", Static).update(tag_table(detail))
            self.query_one("#detail-tags-scroll").display = any(s.tags for s in detail.sites)
            errors: list[Widget] = [
                Static(
                    _plain(f"✗ {s.site}: cannot read its tags: {s.error or 'no answer'}"),
                    classes="site-error",
                )
                for s in detail.sites
                if s.tags is None
            ]
            seen = [f"{s.site} {ago(s.seen_at, now)}" for s in detail.sites if s.seen_at is not None]
            if seen:  # the engine's last look, from its database: opening this screen asks no registry
                errors.insert(0, Static(_plain("tags as last seen: " + ", ".join(seen)), classes="seen"))
            self._replace("#detail-site-errors", errors)
            self._replace("#detail-secondaries", self._secondary_widgets(detail, now))
            history = self.query_one("#detail-history", Static)
            if detail.history:
                history.update(Content("\n").join(_history_line(r) for r in detail.history))
            else:
                history.update(Content.assemble(("no events recorded for this repository", "$text-muted")))

    def _replace(self, selector: str, widgets: list[Widget]) -> None:
        container = self.query_one(selector, Vertical)
        container.remove_children()
        if widgets:
            container.mount_all(widgets)
        container.display = bool(widgets)

    @staticmethod
    def _secondary_widgets(detail: RepositoryDetail, now: float) -> list[Widget]:
        if not detail.rows:
            return [Static(Content.assemble(("not tracked on any secondary", "$text-muted")))]
        widgets: list[Widget] = []
        for row in detail.rows:
            widgets += [Static(_row_summary(row, now), classes="row-title"), Static(_verification(row, now))]
            # Failures are shown whole and wrapped: the reason is what the operator came here for.
            if row.last_sync_failure:
                widgets += [
                    Static("last sync failure:", classes="failure-title", markup=False),
                    Static(_plain(row.last_sync_failure), classes="failure"),
                ]
            if row.verification_failure:
                widgets += [
                    Static("last verification failure:", classes="failure-title", markup=False),
                    Static(_plain(row.verification_failure), classes="failure"),
                ]
        return widgets

    def action_back(self) -> None:
        self.dismiss(None)
