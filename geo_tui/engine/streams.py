"""One stream of a blob into a secondary across every worker on one PostgreSQL database (issue 16).

`BlobCopier` keeps one stream of a digest per secondary within its process; with many workers, two
whose repositories share a base layer would each stream it. Before a stream, the worker takes the
(site, digest) row of ``blob_streams`` in one statement (`Tracking.take_blob_stream`). A worker that
finds it held waits for the row to go (polling a read, 0.1 s doubling to 2 s: a stream lasts seconds to
minutes), then mounts the blob from where it landed; if the holder died, its lease runs out and the
waiter takes the row and streams. The holder renews its rows on its heartbeat and removes each when the
stream ends, recording where the blob landed in the same transaction. These calls run on a thread, on a
connection of their own (tracking/streams.py), never queued behind the engine's other writes.

The row is an optimisation, never what makes a copy correct: a take that cannot reach the database
streams without a row (the repository's own lease still says whether to copy at all).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol

from .budget import for_a_push
from .describe import describe_error

log = logging.getLogger("geo_tui.engine")

__all__ = ["POLL_FIRST", "POLL_MOST", "ClusterStreams", "StreamRecords"]

POLL_FIRST = 0.1  # seconds before a waiter first looks again: a small blob's stream takes about that
POLL_MOST = 2.0  # at most this between looks at a long stream's row

Key = tuple[str, str]  # (site, digest)


class StreamRecords(Protocol):
    """The tracking database's ``blob_streams`` rows (`tracking.streams.BlobStreamRecords`)."""

    def take_blob_stream(
        self, site: str, digest: str, owner: str, repository: str, now: float, lease_seconds: float
    ) -> str | None: ...

    def blob_stream_holder(self, site: str, digest: str, now: float) -> str | None: ...

    def finish_blob_stream(self, site: str, digest: str, owner: str, landed: str | None) -> None: ...

    def renew_blob_streams(
        self, owner: str, now: float, lease_seconds: float, keys: Iterable[Key]
    ) -> set[Key]: ...


class ClusterStreams:
    """This worker's turns at streaming blobs, shared with every worker of the database."""

    def __init__(
        self,
        records: StreamRecords,
        owner: str,
        lease_seconds: float,
        *,
        clock: Callable[[], float],
    ) -> None:
        self._records = records
        self.owner = owner
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._held: dict[Key, str] = {}  # the rows this worker holds: (site, digest) -> repository
        self._finishing: set[asyncio.Future[None]] = set()  # a push's finishes, not waited for

    def holds(self, site: str, digest: str) -> bool:
        return (site, digest) in self._held

    async def take(self, site: str, digest: str, repository: str) -> str | None:
        """Take the stream of `digest` into `site`: None to go ahead and stream (the row is this
        worker's, or the database could not be asked), else the worker that streams it now."""
        # A thread, not the engine's queue of writes (see tracking/streams.py); bounded: a database away
        # for a whole lease would stop this worker's jobs anyway.
        take = self._records.take_blob_stream
        now = self._clock()
        call = asyncio.ensure_future(
            asyncio.to_thread(take, site, digest, self.owner, repository, now, self.lease_seconds)
        )
        try:
            holder = await asyncio.wait_for(asyncio.shield(call), self.lease_seconds)
        except BaseException as exc:
            # Given up while the statement ran: a row it takes must not sit there until its lease ends.
            call.add_done_callback(lambda done: self._give_back(site, digest, done))
            if not isinstance(exc, Exception):
                raise
            # the row only saves a second upload: never let it stop the copy
            log.warning("%s: streaming %s without a cluster-wide turn: %s", site, digest, describe_error(exc))
            return None
        if holder is None:
            self._held[(site, digest)] = repository
        return holder

    def _give_back(self, site: str, digest: str, call: asyncio.Future[str | None]) -> None:
        if not call.cancelled() and call.exception() is None and call.result() is None:
            self._settle(asyncio.to_thread(self._records.finish_blob_stream, site, digest, self.owner, None))

    async def wait(self, site: str, digest: str) -> None:
        """Until no other worker streams `digest` into `site` under a lease still running."""
        delay = POLL_FIRST
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MOST)
            try:
                # a thread: a read of PostgreSQL is a round trip the event loop must not wait for
                holder = await asyncio.to_thread(
                    self._records.blob_stream_holder, site, digest, self._clock()
                )
            except Exception as exc:  # a passing fault: look again (the job's own lease bounds this)
                log.warning("%s: could not look at the stream of %s: %s", site, digest, describe_error(exc))
                continue
            if holder is None or holder == self.owner:
                return

    async def finish(self, site: str, digest: str, landed: str | None) -> None:
        """The stream ended: the row goes, with where the blob landed (None: it did not). A push's copy
        does not wait for it (a waiter polls anyway); a finish that fails leaves the row to run out."""
        if self._held.pop((site, digest), None) is None:
            return
        write = asyncio.to_thread(self._records.finish_blob_stream, site, digest, self.owner, landed)
        if not for_a_push():
            try:
                await write
            except Exception as exc:
                log.warning("%s: the stream of %s was not cleared: %s", site, digest, describe_error(exc))
            return
        self._settle(write)

    def _settle(self, write: Coroutine[Any, Any, None]) -> None:
        """Run `write` without waiting for it; a failure is logged."""
        task = asyncio.ensure_future(write)
        self._finishing.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Future[None]) -> None:
        self._finishing.discard(task)
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            log.warning("the stream of a blob was not cleared: %s", describe_error(failure))

    async def renew(self) -> list[Key]:
        """On the worker's heartbeat: extend the rows held, and clear any worker's that ran out. Returns
        the rows this worker lost (they ran out: another worker may be streaming the blob too)."""
        keys = list(self._held)
        renew = self._records.renew_blob_streams
        try:
            held = await asyncio.to_thread(renew, self.owner, self._clock(), self.lease_seconds, keys)
        except Exception as exc:  # the rows run out as a dead worker's: a second upload at worst
            log.warning("the blob streams' heartbeat failed: %s", describe_error(exc))
            return []
        return [key for key in keys if key not in held and key in self._held]
