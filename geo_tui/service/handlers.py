"""The engine API's command handlers: one per command of wire.py, each taking its typed command and
answering a `CommandAnswer`.

`wire.decode_command` has already checked every field's type and range and that each site is a
secondary; a handler checks what needs the tracking database (a key names a tracked row) and raises
`InvalidCommand` when it does not hold, before anything is queued.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from geo_tui.engine.engine import Engine
from geo_tui.engine.tracking import SyncState, VerificationState
from geo_tui.engine.verify import describe_results
from geo_tui.engine.wire import Command, CommandAnswer, InvalidCommand, Pause, Resume, Resync, RowKey, Verify

__all__ = ["CommandHandlers"]


class CommandHandlers:
    """Runs a decoded command on one engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._handlers: dict[type[Command], Callable[[Any], Awaitable[CommandAnswer]]] = {
            Resync: self.resync,
            Verify: self.verify,
            Pause: self.pause,
            Resume: self.resume,
        }

    async def handle(self, command: Command) -> CommandAnswer:
        return await self._handlers[type(command)](command)

    async def resync(self, command: Resync) -> CommandAnswer:
        engine = self._engine
        sites = list(command.sites) if command.sites is not None else None
        if command.keys is None:
            count = await engine.resync(sites=sites, failed_only=command.failed, recheck_blobs=command.blobs)
        else:
            count = 0
            for site, repositories in (await self._by_site(command.keys)).items():
                count += await engine.resync(
                    sites=[site], repositories=repositories, recheck_blobs=command.blobs
                )
        return CommandAnswer(
            True, f"resync queued for {count} repositor{'y' if count == 1 else 'ies'}", count
        )

    async def verify(self, command: Verify) -> CommandAnswer:
        engine = self._engine
        sites = list(command.sites) if command.sites is not None else None
        keys: Sequence[RowKey] | None = command.keys
        if keys is None and command.failed:
            rows = await engine.read(engine.tracking.rows, sites=sites or engine.secondary_names)
            keys = [
                r.key
                for r in rows
                if r.state is SyncState.FAILED or r.verification_state is VerificationState.FAILED
            ]
        depth, sample = command.depth, command.sample
        if keys is None:
            results = await engine.verify(sites=sites, depth=depth, sample=sample)
        else:
            results = []
            for site, repositories in (await self._by_site(keys)).items():
                results += await engine.verify(
                    sites=[site], repositories=repositories, depth=depth, sample=sample
                )
        return CommandAnswer(
            all(r.ok for r in results), describe_results(results, depth), len(results), str(depth)
        )

    async def pause(self, command: Pause) -> CommandAnswer:
        await self._engine.pause()
        return CommandAnswer(True, "replication paused")

    async def resume(self, command: Resume) -> CommandAnswer:
        await self._engine.resume()
        return CommandAnswer(True, "replication resumed")

    async def _by_site(self, keys: Sequence[RowKey]) -> dict[str, list[str]]:
        """The keys grouped by site, each a tracked row: a typo must not become a row (the CLI's resync
        checks the same)."""
        grouped: dict[str, list[str]] = {}
        for site, repository in keys:
            grouped.setdefault(site, []).append(repository)
        for site, repositories in grouped.items():
            tracked = set(await self._engine.read(self._engine.tracking.repository_names, site))
            for repository in repositories:
                if repository not in tracked:
                    raise InvalidCommand(f"keys: {repository!r} is not tracked on {site!r}")
        return grouped
