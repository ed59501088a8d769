"""The console's actions that ask the engine to do something: resync, verify (at a depth), the same for
marked or filtered rows after a confirmation, resync every failed one, and pause.

A mixin of `GeoTuiApp` (its bindings, ids and `check_action` stay there); each action sends one typed
command from `geo_tui.engine.wire` through the app's engine link and says what it queued.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.app import App

from geo_tui.engine import VerificationDepth
from geo_tui.engine.wire import Resync, Verify
from geo_tui.link.link import EngineLink, RowKey

from .screens.confirm import ConfirmScreen
from .widgets.repository_table import RepositoryTable

__all__ = ["DEPTH_WORDS", "EngineCommands"]

DEPTH_WORDS = {
    "checksum": "checksum: tags and digests",
    "deep": "deep: every blob there, with its size",
    "content": "content: every blob re-hashed",
}


class EngineCommands(App[None]):
    link: EngineLink
    paused: bool

    def _update_subtitle(self) -> None:
        raise NotImplementedError  # GeoTuiApp's: the subtitle says whether replication is paused

    def action_resync(self) -> None:
        key = self.query_one(RepositoryTable).cursor_key
        if key is not None:
            self.link.command(lambda engine: engine.resync(Resync(keys=(key,))))
            self.notify(f"resync queued: {key[1]} on {key[0]}")

    def action_verify(self, depth: str = "checksum") -> None:
        key = self.query_one(RepositoryTable).cursor_key
        if key is not None:
            self._verify([key], depth)
            self.notify(f"verifying {key[1]} on {key[0]} ({DEPTH_WORDS[depth]})…")

    def _bulk_keys(self) -> tuple[list[RowKey], str]:
        table = self.query_one(RepositoryTable)
        if table.marked:
            return sorted(table.marked), "marked"
        return table.visible_keys(), "filtered" if table.visible_count != table.total_count else "all"

    def _confirm_bulk(self, verb: str, run: Callable[[list[RowKey]], None]) -> None:
        keys, which = self._bulk_keys()
        if not keys:
            return
        sites = sorted({site for site, _ in keys})
        noun = "repository" if len(keys) == 1 else "repositories"
        question = f"{verb} {len(keys):,} {which} {noun} on {', '.join(sites)}?"

        def answered(yes: bool | None) -> None:
            if yes:
                run(keys)
                self.query_one(RepositoryTable).clear_marks()

        self.push_screen(ConfirmScreen(question), answered)

    def _verify(self, keys: list[RowKey], depth: str) -> None:
        command = Verify(keys=tuple(keys), depth=VerificationDepth(depth))
        self.link.command(lambda engine: engine.verify(command))

    def action_resync_many(self) -> None:
        def resync(keys: list[RowKey]) -> None:
            command = Resync(keys=tuple(keys))
            self.link.command(lambda engine: engine.resync(command))

        self._confirm_bulk("Resync", resync)

    def action_verify_many(self, depth: str = "checksum") -> None:
        verb = "Verify" if depth == "checksum" else f"{depth.capitalize()}-verify"
        self._confirm_bulk(verb, lambda keys: self._verify(keys, depth))

    def action_resync_failed(self) -> None:
        failed = self.query_one(RepositoryTable).failed_count

        def answered(yes: bool | None) -> None:
            if yes:
                self.link.command(lambda engine: engine.resync(Resync(failed=True)))

        self.push_screen(ConfirmScreen(f"Resync every failed repository ({failed:,})?"), answered)

    def action_toggle_pause(self) -> None:
        if self.paused:
            self.link.command(lambda engine: engine.resume())
            self.notify("replication resumed")
        else:
            self.link.command(lambda engine: engine.pause())
            self.notify("replication paused: copies in flight finish, nothing new starts")
        self.paused = not self.paused
        self._update_subtitle()
