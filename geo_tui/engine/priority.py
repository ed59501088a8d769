"""Background work gives way to pushes, for a bounded share of the time (issue 17).

A push's copy is a few requests that someone waits for; a reconcile, a deletion run or a verification
of a large repository is thousands that nobody waits for. So while a push is on its way (from the
receiver taking its event until its copy ends), each background request waits before it goes out, and
the registries, the event loop and the database serve the push first.

Unbounded, that starves the background: on a registry pushed to all the time (`geo-tui demo` every
0.75 s, a busy CI), some copy is nearly always running, and under CPU load the backfill sent about one
request a second per repository (its requests waited 2,400 s in two minutes, summed). A backfill that
never ends is worse than a slower push. So the time background work is held comes out of a bucket of
`capacity` seconds: while background requests wait it drains at (1 - `share`) a second, and while none
waits it fills at `share` a second. A burst of pushes is served first for up to capacity / (1 - share)
seconds; under pushes that never stop, background work is held at most `share` of the time, and moves
at no less than (1 - `share`) of its pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

__all__ = ["ANNOUNCED_HOLD", "HOLD_CAPACITY", "HOLD_SHARE", "REQUEST_HOLD", "PushPriority"]

# A push event received and not yet being copied holds background work this long at most (its store,
# wake-up and claim ran beside a 20,000-tag reconcile's requests: issue 17's profile).
ANNOUNCED_HOLD = 1.0
# Each background request waits this long at most for the pushes ahead of it.
REQUEST_HOLD = 1.0
# Seconds of holding a burst of pushes may use at once, and the long-run share of time held.
HOLD_CAPACITY = 5.0
HOLD_SHARE = 0.5


class PushPriority:
    """Whether pushes are on their way (`copy_started`/`copy_ended`, `announce`), and the wait of each
    background request for them (`give_way`), bounded as the module says."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        capacity: float = HOLD_CAPACITY,
        share: float = HOLD_SHARE,
        announced_hold: float = ANNOUNCED_HOLD,
        request_hold: float = REQUEST_HOLD,
    ) -> None:
        if not 0.0 <= share < 1.0:
            raise ValueError(f"share must be in [0, 1), not {share}")
        self._clock = clock
        self.capacity = capacity
        self.share = share
        self._announced_hold = announced_hold
        self._request_hold = request_hold
        self._copies = 0
        self._announced_at: float | None = None
        self._clear = asyncio.Event()  # no push on its way: background goes on
        self._clear.set()
        self._tokens = capacity
        self._at = clock()
        self._waiting = 0  # background requests waiting now
        self.yielded_seconds = 0.0  # background requests' waits, summed, for /metrics
        self.held_seconds = 0.0  # wall time during which some background request waited

    # -- pushes --------------------------------------------------------------------------------------

    def announce(self) -> None:
        """The receiver took push events: hold background work from now until a copy starts (or
        announced_hold passes)."""
        self._announced_at = self._clock()
        self._clear.clear()
        with contextlib.suppress(RuntimeError):  # no loop: a test's plain call; nothing to expire
            asyncio.get_running_loop().call_later(self._announced_hold, self._settle_clear)

    def copy_started(self) -> None:
        self._copies += 1
        self._announced_at = None
        self._clear.clear()

    def copy_ended(self) -> None:
        self._copies = max(0, self._copies - 1)
        self._settle_clear()

    @property
    def pushes_on_their_way(self) -> bool:
        return not self._clear.is_set()

    def _settle_clear(self) -> None:
        announced = self._announced_at
        if announced is not None and self._clock() - announced >= self._announced_hold - 1e-6:
            self._announced_at = announced = None
        if not self._copies and announced is None:
            self._clear.set()

    # -- background work -----------------------------------------------------------------------------

    def allowance(self) -> float:
        """Seconds background work may still be held from now on, if it waits from now."""
        self._account()
        return self._tokens / (1.0 - self.share)

    async def give_way(self) -> None:
        """Wait while pushes are on their way: at most request_hold, and no longer than the bucket
        allows (a request that finds it empty goes at once)."""
        if self._clear.is_set():
            return
        limit = min(self._request_hold, self.allowance())
        if limit <= 0.0:
            return
        started = self._clock()
        self._waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limit):
                    await self._clear.wait()
        finally:
            self._account()
            self._waiting -= 1
            self.yielded_seconds += max(0.0, self._clock() - started)

    def _account(self) -> None:
        """Drain the bucket for the time background work was held since the last look, fill it for
        the time it was not."""
        now = self._clock()
        elapsed = max(0.0, now - self._at)
        self._at = now
        if self._waiting:
            self.held_seconds += elapsed
            self._tokens -= (1.0 - self.share) * elapsed
        else:
            self._tokens += self.share * elapsed
        self._tokens = min(self.capacity, max(0.0, self._tokens))
