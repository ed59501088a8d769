"""The console: composes the panes, routes keys to actions, and applies what the engine reports.

The engine lives behind an `EngineLink` (its own, in a child process, or one it attached to), reached
through the engine's API client. The app never waits on it: commands return at once, and a timer drains a
coalesced batch of changes a few times a second, so a slow SSH link is never flooded and the keyboard
stays responsive during a backfill.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Header

from geo_tui.config import Config
from geo_tui.link.link import Batch, EngineLink

from . import tuning
from .commands import GeoTuiCommands
from .engine_commands import EngineCommands
from .filtering import Filtering
from .screens.detail import RepositoryDetailScreen
from .screens.help import HelpScreen
from .screens.workers import WorkersScreen
from .widgets.event_log import EventLog
from .widgets.filter_bar import FilterBar
from .widgets.key_hints import key_hint_bar
from .widgets.repository_table import RepositoryTable
from .widgets.sites_pane import SitesPane

__all__ = ["GeoTuiApp", "make_app"]

REFRESH_INTERVAL = 0.25
# Actions that change something: hidden with --read-only.
MUTATING = frozenset({"resync", "verify", "resync_many", "verify_many", "resync_failed", "toggle_pause"})
DETAIL_SCREEN = "repository-detail"
WORKERS_SCREEN = "workers"
WORKERS_READ = "workers"  # its answers arrive in Batch.reads under this name
PANES = {"sites": "#sites", "repositories": "#repositories", "log": "#log"}


class GeoTuiApp(EngineCommands, Filtering):
    """geo-tui's console over one engine link: layout and refresh here; what the keys ask of the engine in
    `EngineCommands`, the filters in `Filtering`."""

    TITLE = "geo-tui"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {GeoTuiCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("slash", "filter", "Filter", id="app.filter"),
        Binding("exclamation_mark", "invert_filter", "Invert filter", show=False, id="app.invert_filter"),
        Binding("r", "resync", "Resync", id="app.resync"),
        Binding("v", "verify", "Verify", id="app.verify"),
        Binding("R", "resync_many", "Resync marked/filtered", show=False, id="app.resync_many"),
        Binding("V", "verify_many", "Verify marked/filtered", show=False, id="app.verify_many"),
        Binding("d", "verify('deep')", "Deep verify (every blob there)", show=False, id="app.verify_deep"),
        Binding(
            "D", "verify_many('deep')", "Deep verify marked/filtered", show=False, id="app.verify_deep_many"
        ),
        Binding(
            "c", "verify('content')", "Content verify (re-hash blobs)", show=False, id="app.verify_content"
        ),
        Binding(
            "C",
            "verify_many('content')",
            "Content verify marked/filtered",
            show=False,
            id="app.verify_content_many",
        ),
        Binding("p", "toggle_pause", "Pause", id="app.pause"),
        Binding("W", "workers", "Workers", id="app.workers"),
        Binding("f", "show_state('failed')", "Failed", show=False, id="app.show_failed"),
        Binding("w", "show_state('pending')", "Pending", show=False, id="app.show_pending"),
        Binding("y", "show_state('synced')", "Synced", show=False, id="app.show_synced"),
        Binding("a", "show_state('all')", "All", show=False, id="app.show_all"),
        Binding("1", "focus_pane('sites')", "Sites", show=False, id="app.focus_sites"),
        Binding("2", "focus_pane('repositories')", "Repositories", show=False, id="app.focus_repositories"),
        Binding("3", "focus_pane('log')", "Log", show=False, id="app.focus_log"),
    ]

    def __init__(
        self,
        link: EngineLink,
        *,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
        refresh_interval: float = REFRESH_INTERVAL,
        save_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.link = link
        self.read_only = read_only
        self.clock = clock
        self.refresh_interval = refresh_interval
        self.save_dir = save_dir or Path.cwd()
        self.paused = False
        self.running = False
        self.tasks_down: tuple[str, ...] = ()
        self.engine_failure: str | None = None
        self.crash: Exception | None = None  # the error the console stopped on (the CLI reports it)
        self.stale: str | None = None  # why the view is stale (a remote engine is unreachable)
        self._detail: RepositoryDetailScreen | None = None
        self._quitting = False
        self._bindings_state: tuple[object, ...] = ()

    def _handle_exception(self, error: Exception) -> None:
        """Keep the first unhandled error for the CLI (one line, and a crash log without locals), and let
        Textual stop the app with status 1, but not print its traceback: it shows every local variable.

        Textual 8.2 has no public hook for an unhandled exception (`App.return_code` says only that one
        happened); tests/console/test_textual_private.py fails when this private method changes."""
        if self.crash is None:
            self.crash = error
        self.error_console = Console(file=io.StringIO())  # where Textual prints its traceback on exit
        super()._handle_exception(error)

    # -- layout and refresh -----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield SitesPane(id="sites")
        with Vertical(id="repositories-pane"):
            yield RepositoryTable(now=self.clock, id="repositories")
        with Vertical(id="log-pane"):
            yield EventLog(id="log")
        yield FilterBar(id="filter")
        yield key_hint_bar()

    def on_mount(self) -> None:
        self.query_one("#repositories-pane").border_title = "Repositories"
        self.query_one("#log-pane").border_title = "Events"
        self._update_subtitle()
        self.query_one(RepositoryTable).focus()
        self.on_resize()
        self.link.start()
        self.set_interval(self.refresh_interval, self.apply_engine_changes)

    def on_resize(self) -> None:
        self.screen.set_class(self.size.height < 32, "-compact")

    def apply_engine_changes(self) -> None:
        """Drain what the engine reported since the last tick and show it, in one repaint."""
        batch = self.link.drain()
        if batch:
            with self.batch_update():
                self._apply(batch)

    def _apply(self, batch: Batch) -> None:
        now = self.clock()
        table = self.query_one(RepositoryTable)
        if batch.all_rows is not None:
            table.set_rows(batch.all_rows)
            if tuning.active("freeze"):
                self.call_after_refresh(tuning.freeze_loaded_heap)  # after the first paint of the rows
        if batch.rows:
            table.upsert_rows(batch.rows)
        if batch.logs:
            self.query_one(EventLog).add(batch.logs)
        if batch.snapshot is not None:
            self.query_one(SitesPane).update_snapshots(batch.snapshot.sites, now)
            self.paused, self.running = batch.snapshot.paused, batch.snapshot.running
            self.tasks_down = batch.snapshot.tasks_down
        if batch.status is not None:
            self.paused, self.running = batch.status.paused, batch.status.running
        for detail in batch.details:
            if self._detail is not None and self._detail.repository == detail.repository:
                self._detail.show(detail, now)
        if WORKERS_READ in batch.reads and self.is_screen_installed(WORKERS_SCREEN):
            screen = self.get_screen(WORKERS_SCREEN)
            assert isinstance(screen, WorkersScreen)
            screen.show(batch.reads[WORKERS_READ])
        for result in batch.results:
            self.notify(result.message, severity="information" if result.ok else "error")
        if batch.failure is not None:
            self.engine_failure = batch.failure
            self.notify(f"the engine stopped: {batch.failure}", severity="error", timeout=30)
        if batch.link is not None:
            self._link_changed(batch.link.connected, batch.link.message)
        self._update_subtitle()
        self._refresh_bindings_if_changed()

    def _refresh_bindings_if_changed(self) -> None:
        """Re-check which keys apply only when the answer can have changed: refreshing the bindings
        rebuilds the footer (a dozen widgets restyled), which took most of a drain during a backfill."""
        table = self.query_one(RepositoryTable)
        state = (table.visible_count > 0, bool(table.marked), self.paused, self.engine_failure)
        if state != self._bindings_state:
            self._bindings_state = state
            self.refresh_bindings()

    def _link_changed(self, connected: bool, message: str) -> None:
        was = self.stale
        self.stale = None if connected else message
        self.screen.set_class(not connected, "-stale")
        if connected and was is not None:
            self.notify(f"reattached: {message}")
        elif not connected and was is None:
            self.notify(f"STALE: {message}", severity="warning", timeout=10)

    def _update_subtitle(self) -> None:
        state = "stopped" if self.engine_failure else ("paused" if self.paused else "replicating")
        mode = "embedded engine" if self.link.mode == "embedded" else self.link.mode
        if self.stale is not None:
            state = f"STALE: {self.stale}"
        parts = [mode, state]
        if self.tasks_down:  # the engine's supervisor names what stopped working (issue 12)
            parts.append(f"TASK DOWN: {', '.join(self.tasks_down)}")
        if self.read_only:
            parts.append("read-only")
        self.sub_title = " · ".join(parts)

    # -- what applies when ------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MUTATING and self.read_only:
            return False
        if action in ("resync", "verify") and self.query_one(RepositoryTable).cursor_key is None:
            return None
        if action in ("resync_many", "verify_many"):
            table = self.query_one(RepositoryTable)
            return True if table.marked or table.visible_count else None  # O(1): checked per footer key
        return True

    # -- actions (the engine's: EngineCommands; the filters': Filtering) ----------------------------

    def action_focus_pane(self, pane: str) -> None:
        self.query_one(PANES[pane]).focus()

    def action_save_log(self) -> None:
        path = self.save_dir / time.strftime("geo-tui-events-%Y%m%d-%H%M%S.log", time.localtime(self.clock()))
        try:
            count = self.query_one(EventLog).save(path)
        except OSError as exc:
            self.notify(f"could not save the event log to {path}: {exc.strerror or exc}", severity="error")
            return
        self.notify(f"saved {count:,} event lines to {path}")

    def on_repository_table_selected(self, message: RepositoryTable.Selected) -> None:
        _, repository = message.key
        # One detail screen, installed once and reset: it keeps its widgets between visits.
        if not self.is_screen_installed(DETAIL_SCREEN):
            self.install_screen(RepositoryDetailScreen(repository), DETAIL_SCREEN)
        screen = self.get_screen(DETAIL_SCREEN)
        assert isinstance(screen, RepositoryDetailScreen)
        screen.reset(repository)
        self._detail = screen
        self.push_screen(screen, lambda _: setattr(self, "_detail", None))
        self.link.load_detail(repository)

    def action_workers(self) -> None:
        """The workers sharing the tracking database, refreshed while shown (one screen, kept)."""
        if not self.is_screen_installed(WORKERS_SCREEN):
            self.install_screen(WorkersScreen(self._read_workers, self.clock), WORKERS_SCREEN)
        if self.screen is not self.get_screen(WORKERS_SCREEN):
            self.push_screen(WORKERS_SCREEN)
        self._read_workers()

    def _read_workers(self) -> None:
        self.link.read(WORKERS_READ, lambda client: client.workers())

    def action_help(self) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for active in self.active_bindings.values():
            binding = active.binding
            if not binding.description or (binding.action.split("(")[0] in MUTATING and self.read_only):
                continue
            where = "Everywhere" if active.node is self else type(active.node).__name__
            key = self.get_key_display(binding)
            sections.setdefault(where, []).append((key, binding.description))
        ordered = [("Everywhere", sections.pop("Everywhere", [])), *sorted(sections.items())]
        ordered.append(("Command palette", [("ctrl+p", "every action by name")]))
        self.push_screen(HelpScreen(ordered))

    async def action_quit(self) -> None:
        """Stop the engine cleanly (off the UI thread), then leave."""
        if self._quitting:
            return
        self._quitting = True
        if self.link.owns_engine:
            self.notify("stopping the engine: copies in flight finish or stay pending…", timeout=15)
        else:
            self.notify("detaching: the engine keeps running", timeout=15)
        self.run_worker(self._stop_engine_and_exit, thread=True, exclusive=True)

    def _stop_engine_and_exit(self) -> None:
        self.link.stop()
        self.call_from_thread(self.exit)


def make_app(
    config: Config | None,
    *,
    read_only: bool = False,
    link: EngineLink | None = None,
    clock: Callable[[], float] = time.time,
) -> GeoTuiApp:
    """Build the console over its own engine, in a child process (or over the given link): for the CLI,
    tests and pictures."""
    if link is None:
        if config is None:
            raise ValueError("make_app needs a config to start an engine, or a link")
        from geo_tui.link.spawned import SpawnedEngine

        link = SpawnedEngine(config)
    return GeoTuiApp(link, read_only=read_only, clock=clock)
