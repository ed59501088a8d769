"""Discovery: read the primary's catalog and track every repository each secondary wants; in `serve`,
again every ``reconcile_interval``, with a reconcile of every row."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from geo_tui.registry import RegistryError, is_valid_repository_name

if TYPE_CHECKING:
    from .engine import Engine
    from .tracking.leadership import LeaderFence

__all__ = ["Discovery"]

# Discovery gives a write this long, then fails and is restarted: the failure shows, and is counted.
BACKGROUND_WRITE_TIMEOUT = 5.0


class Discovery:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.primary_repositories: int | None = None  # valid names in the last catalog read
        # Repositories named (by a resync or an event) while a catalog is read: that catalog may predate
        # them, so it must not mark them absent from the primary.
        self._named_during_catalog: set[str] | None = None

    def named(self, repositories: Sequence[str]) -> None:
        """Repositories just named by a resync or an event: a catalog being read must not mark them absent."""
        if self._named_during_catalog is not None:
            self._named_during_catalog.update(repositories)

    async def discover(
        self, *, write_timeout: float | None = None, fence: LeaderFence | None = None
    ) -> list[str]:
        """`fence`: the leader's discovery, whose writes go in only while it still leads: a catalog read
        before this worker froze must not mark absent a repository the next leader has found since."""
        engine = self._engine
        named: set[str] = set()
        self._named_during_catalog = named
        try:
            names = await engine.primary.catalog()
        finally:
            self._named_during_catalog = None
        valid = [n for n in names if is_valid_repository_name(n)]
        for bad in sorted(set(names) - set(valid))[:10]:
            engine.log("warning", f"primary catalog lists an invalid repository name {bad!r}; skipped")
        self.primary_repositories = len(valid)
        secondaries = engine.config.secondaries
        wanted = {site.name: [n for n in valid if site.wants(n)] for site in secondaries}
        tracking = engine.tracking

        def track() -> dict[str, tuple[int, list[str]]]:
            # One turn of the database thread for every site, right after the catalog was read: no other
            # write (a notification's row) can land between a site's two steps and be marked absent.
            return {
                name: (
                    tracking.ensure_rows(name, names, fence=fence),
                    tracking.mark_absent_from_primary(name, set(names) | named, fence=fence),
                )
                for name, names in wanted.items()
            }

        tracked = await engine._db(track, timeout=write_timeout)
        for site in secondaries:
            added, gone = tracked[site.name]
            if added:
                engine.log("info", f"tracking {added} new repositories", site=site.name)
            for repository in gone[:10]:
                engine.log(
                    "warning",
                    "no longer on the primary (or filtered out); the secondary keeps its copy",
                    site=site.name,
                    repository=repository,
                )
        return valid

    async def run_forever(self) -> None:
        engine = self._engine
        interval = engine.config.engine.reconcile_interval
        while True:
            # Any other failure (the tracking database refusing writes, a bug) goes to the supervisor,
            # which logs it and starts this again: the reconcile never ends in silence (issue 12).
            # A leader that lost its lock (frozen, and taken over from) stops here: NotLeader.
            fence = await engine.leadership.confirm("discovery")
            with engine._supervisor.cycle("discovery"):
                try:
                    await self.discover(write_timeout=BACKGROUND_WRITE_TIMEOUT, fence=fence)
                    await engine._db(
                        engine.tracking.request_reconcile,
                        sites=engine.secondary_names,
                        timeout=BACKGROUND_WRITE_TIMEOUT,
                        fence=fence,
                    )
                    engine._poke()
                except RegistryError as exc:
                    engine.log("error", f"cannot read the primary's catalog: {exc}")
                    failed = True
                else:
                    failed = False
            await asyncio.sleep(min(30.0, interval) if failed else interval)
