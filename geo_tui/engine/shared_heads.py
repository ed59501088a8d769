"""A whole-repository job's HEADs of the primary's tags, sent once for every secondary it compares.

One job copies a repository into every due secondary, each secondary's run merging the primary's
listing with its own in chunks (merge.py). Each run HEADed every tag of the primary on its own: at
20,000 tags and two secondaries, 40,000 HEADs of the primary for 20,000 answers, all drawn from the
primary's one request budget. Now the runs share them: the first run to need a tag's answer sends
the HEAD, the others take it (in flight or done). The runs go through the same listing at nearly the
same pace, so an answer is taken within moments; one run far behind the other (copying, say) asks on
its own once an answer is older than SHARED_HEAD_AGE or the job holds SHARED_HEADS answers already,
so memory stays bounded whatever the tag count, and no run compares against an old answer. A failed
HEAD is not shared: each run asks again on its own and reports its own failure.

An answer taken from another run is no older than one a run would have had if it had asked at that
moment: a tag pushed since is copied by its push, and pushes copied beside a whole run are copied again
after it (pushes.py), as with a HEAD of the run's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from geo_tui.registry import ManifestInfo

__all__ = ["SHARED_HEADS", "SHARED_HEAD_AGE", "SharedHeads"]

SHARED_HEADS = 2_000  # answers one job holds at most (four chunks of merge.py): past it, runs ask alone
SHARED_HEAD_AGE = 10.0  # seconds an answer is taken by another run at most


@dataclass
class _Answer:
    future: asyncio.Future[ManifestInfo | None]
    at: float  # time.monotonic() it was asked
    taken: int = 0  # runs that took it (the asker included)


class SharedHeads:
    """The primary's HEAD of each tag for `readers` runs of one job (a single run asks on its own)."""

    def __init__(self, readers: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._readers = readers
        self._clock = clock
        self._answers: dict[str, _Answer] = {}
        self.asked = 0  # HEADs sent through here
        self.shared = 0  # answers taken from another run's HEAD

    def __len__(self) -> int:
        return len(self._answers)

    async def head(self, tag: str, ask: Callable[[], Awaitable[ManifestInfo | None]]) -> ManifestInfo | None:
        """The primary's answer for `tag`: another run's if it is fresh, else `ask()`'s (shared)."""
        if self._readers < 2:
            return await ask()
        now = self._clock()
        answer = self._answers.get(tag)
        if answer is not None and not self._usable(answer, now):
            del self._answers[tag]
            answer = None
        if answer is None:
            if len(self._answers) >= SHARED_HEADS:
                self._expire(now)
            self.asked += 1
            if len(self._answers) >= SHARED_HEADS:
                return await ask()  # a run far ahead of the other: not held for it
            answer = _Answer(asyncio.ensure_future(ask()), now)
            answer.future.add_done_callback(_retrieved)
            self._answers[tag] = answer
            mine = True
        else:
            self.shared += 1
            mine = False
        answer.taken += 1
        if answer.taken >= self._readers and self._answers.get(tag) is answer:
            del self._answers[tag]  # every run has it
        try:
            return await asyncio.shield(answer.future)  # one run cancelled must not cancel the others' HEAD
        except asyncio.CancelledError:
            raise
        except Exception:
            if self._answers.get(tag) is answer:
                del self._answers[tag]
            if mine:
                raise
        self.asked += 1
        return await ask()  # another run's HEAD failed: this run asks, and reports its own failure

    def _usable(self, answer: _Answer, now: float) -> bool:
        if now - answer.at > SHARED_HEAD_AGE:
            return False
        future = answer.future
        return not (future.done() and (future.cancelled() or future.exception() is not None))

    def _expire(self, now: float) -> None:
        for tag in [t for t, a in self._answers.items() if not self._usable(a, now)]:
            del self._answers[tag]


def _retrieved(future: asyncio.Future[ManifestInfo | None]) -> None:
    if not future.cancelled():
        future.exception()  # told to each run that awaited it; none left means nobody needs it
