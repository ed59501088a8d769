"""`serve`'s verification: the checksum verifications that are due, and the scheduled deep ones (each
row's slot spread over ``deep_interval``), never of a repository still copying."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .budget import Work, set_work
from .verify import VerificationDepth

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["VerificationLoop"]

# Scheduled deep verifications started per round of the verification loop (a round is ~2 s when idle):
# each row's slot is spread over the interval already; this caps a backlog (an engine that was down).
DEEP_PER_TICK = 2


class VerificationLoop:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def run_forever(self) -> None:
        engine = self._engine
        set_work(Work(background=True))  # it reads whole repositories: each site's budget holds it
        while True:
            engine._supervisor.beat("verification")
            # A leader that lost its lock (frozen, and taken over from) verifies no more: NotLeader.
            await engine.leadership.confirm("verification")
            if not engine.paused:
                rows = await engine.read(
                    engine.tracking.verification_due, sites=engine.secondary_names, limit=50
                )
                by_repo: dict[str, list[str]] = {}
                for row in rows:
                    by_repo.setdefault(row.repository, []).append(row.site)
                verified = False
                for repository, sites in by_repo.items():
                    if repository not in engine.scheduler.jobs:
                        with engine._supervisor.cycle("verification"):  # stuck in one counts as down
                            await engine._verifier.verify_repository(repository, sites)
                        verified = True
                verified = await self._deep_due() or verified
                # Only go round at once if something was verified: due rows whose repository is still
                # copying to another site would otherwise spin here without an await, and starve the loop.
                if verified:
                    engine._poke()
                    continue
            await asyncio.sleep(2.0)

    async def _deep_due(self) -> bool:
        """The scheduled deep verifications that are due, at most DEEP_PER_TICK repositories a round."""
        engine = self._engine
        interval = engine.config.verification.deep_interval
        if not interval:
            return False
        copying = engine.scheduler.jobs
        # rows of repositories still copying wait; they must not hold up the others due
        limit = DEEP_PER_TICK + len(copying)
        # deep_due plans slots, a write: on the database thread, so a locked database never holds the loop
        rows = await engine._db(
            engine.tracking.deep_due, engine._clock(), interval, sites=engine.secondary_names, limit=limit
        )
        by_repo: dict[str, list[str]] = {}
        for row in rows:
            if row.repository not in copying and (row.repository in by_repo or len(by_repo) < DEEP_PER_TICK):
                by_repo.setdefault(row.repository, []).append(row.site)
        for repository, sites in by_repo.items():
            with engine._supervisor.cycle("verification"):  # each one is a round of the heartbeat
                await engine._verifier.verify_repository(repository, sites, depth=VerificationDepth.DEEP)
        return bool(by_repo)
