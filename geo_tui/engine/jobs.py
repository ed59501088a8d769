"""One repository job: read the primary once, copy into every secondary whose row is due, and hand
each secondary's outcome to the recorder. A job is bounded by ``max_job_duration``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from .budget import Work, set_work
from .describe import blame_primary, describe_error
from .failure import Failure, Side, failure_of
from .merge import READING_PRIMARY, open_primary_repository, replicate_merged
from .passes import Pass
from .repository import CopyStats, PrimaryRepository, RepositoryOutcome
from .tracking import RepositoryRow

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["RepositoryJobs"]

# A stop gives the write that puts a cancelled job's row back to pending this long.
SHUTDOWN_WRITE_TIMEOUT = 2.0


class RepositoryJobs:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def run(self, repository: str, rows: list[RepositoryRow], run: Pass) -> None:
        """Copy ``repository`` to the secondaries of ``rows``; every row ends recorded, synced or failed."""
        engine = self._engine
        unfinished = {row.site: READING_PRIMARY for row in rows}
        limit = engine.config.engine.max_job_duration
        if run.is_standing:
            set_work(Work(background=True))  # `serve`'s whole-repository work keeps to each site's budget
        engine._pushes.whole_run_started(repository)
        try:
            async with asyncio.timeout(limit):
                await self._everywhere(repository, rows, run, unfinished)
        except TimeoutError:
            # Every request has its own deadline; this bounds a job of many slow ones (issue 12, case 5).
            for site, doing in sorted(unfinished.items()):
                reason = f"over max_job_duration ({limit:.0f} s) while {doing}"
                side: Side = "primary" if doing == READING_PRIMARY else "secondary"
                await engine.recorder.failed(site, repository, Failure(side, "over_deadline", reason), run)
        except Exception as exc:  # a fault of the engine's own (a database error): said, and retried later
            for row in rows:
                with contextlib.suppress(Exception):
                    failure = Failure("geo-tui", "engine", f"engine: {describe_error(exc)}")
                    await engine.recorder.failed(row.site, repository, failure, run)
        finally:
            await engine._pushes.whole_run_ended(repository)

    async def _everywhere(
        self, repository: str, rows: list[RepositoryRow], run: Pass, unfinished: dict[str, str]
    ) -> None:
        """Copy one repository to every secondary in ``rows``; ``unfinished`` keeps, per site not done
        yet, what it waits for."""
        engine = self._engine
        tracking = engine.tracking
        generations: dict[str, int] = {}
        first: dict[str, bool] = {}
        for row in rows:
            run.started(row.key)
            claimed = engine.scheduler.first_run(row.key)  # claimed under a lease: started already
            if claimed is not None:
                first[row.site], generations[row.site] = claimed, row.generation
            else:
                first[row.site] = await engine.read(tracking.never_started, row.site, repository)
                generations[row.site] = await engine._db(tracking.mark_started, row.site, repository)
            engine.recorder.row_changed(row.site, repository)
        try:
            try:
                view = open_primary_repository(repository, readers=len(rows))
            except Exception as exc:  # the primary could not be read: every secondary's row fails
                failure = failure_of(exc, engine.config.primary.name, text=blame_primary(exc), side="primary")
                for row in rows:
                    unfinished.pop(row.site, None)
                    await engine.recorder.failed(row.site, repository, failure, run)
                return
            if not view.streamed:  # a streamed run says itself when it reads and when it copies
                for row in rows:
                    unfinished[row.site] = f"copying to {row.site}"
            # A streamed view (engine/merge.py) holds no tags: it is read chunk by chunk by each secondary's
            # run, and the tags it saw are not recorded as the whole list.
            if view.exists and not view.tag_errors and not view.streamed:
                await engine._db(
                    tracking.record_tags_seen,
                    engine.config.primary.name,
                    repository,
                    view.digests,
                    complete=True,
                )
            engine._pushes.whole_run_read(view)  # pushes copied while the tags were read stay
            await asyncio.gather(
                *(
                    self._one(row, view, generations[row.site], first[row.site], run, unfinished)
                    for row in rows
                )
            )
        except asyncio.CancelledError:
            for row in rows:
                # Bounded: a stop must not wait on a locked database. A row left started goes back to
                # pending at the next open (recover_started), or when its lease runs out. A lost lease
                # (another worker has the row) changes nothing: the marks check the owner.
                with contextlib.suppress(Exception):
                    await engine._db(
                        tracking.mark_pending,
                        row.site,
                        repository,
                        owner=engine.leases.owner,
                        timeout=SHUTDOWN_WRITE_TIMEOUT,
                    )
            raise

    async def _one(
        self,
        row: RepositoryRow,
        view: PrimaryRepository,
        generation: int,
        first_run: bool,
        run: Pass,
        unfinished: dict[str, str],
    ) -> None:
        engine, site_name = self._engine, row.site
        site = engine._sites[site_name]
        assert site.copier is not None
        repository = view.name
        primary_name, started = engine.config.primary.name, engine.tracking.now()

        # The tags last seen, a chunk at a time (engine/merge.py): what status and the detail screen show,
        # and what a push's copy takes as already there (engine/pushes.py). A chunk the run wrote to the
        # secondary is recorded at once; one it only read is held and written with the run's outcome (most
        # repositories have one chunk: a run that changes nothing ends in one write, instead of five).
        last: dict[str, dict[str, str]] = {}

        async def seen(on_primary: dict[str, str], on_secondary: dict[str, str], wrote: bool) -> None:
            chunk = {primary_name: on_primary, site_name: on_secondary}
            if last:
                await engine._db(engine.tracking.record_seen, repository, dict(last))
                last.clear()
            if wrote:
                await engine._db(engine.tracking.record_seen, repository, chunk)
            else:
                last.update(chunk)

        try:
            outcome = await replicate_merged(
                view,
                site.client,
                site.copier,
                engine._cache,
                site=site_name,
                blob_concurrency=engine.config.engine.blob_concurrency,
                replicate_deletions=engine.config.engine.replicate_deletions,
                first_run=first_run,
                recheck_blobs=row.recheck_blobs,
                seen=seen,
                phase=lambda doing: unfinished.__setitem__(site_name, doing),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = failure_of(exc, primary_name, text=describe_error(exc))
            outcome = RepositoryOutcome(site_name, repository, CopyStats(), [failure], [], len(view.tags))
        unfinished.pop(site_name, None)
        await engine.recorder.outcome(row, view, outcome, generation, run, started, last)
