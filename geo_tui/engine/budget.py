"""Whose request this is: a push's copy (counted, never held back) or background work (paced).

Every registry client of the engine awaits `request_hook` before each request it sends. The work a
task does is named by a context variable set at the start of that task (child tasks inherit it), so
one hook counts the requests of a push event and paces the whole-repository work of a reconcile,
a deletion event or a verification against that site's `RequestBudget`. While pushes come, that
budget runs at a share of its rate (`RequestBudget.pace`), and a request that waited for its slot
asks the yield gates again: a push that arrived meanwhile still goes first (issue 17).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

__all__ = ["MIN_SHARE", "Gate", "RequestBudget", "Work", "for_a_push", "request_hook", "set_work"]

# The least share of its rate a budget keeps while pushes come: background work slows, never stops.
MIN_SHARE = 0.05


@dataclass
class Work:
    """The requests one piece of work sent; `background` work waits on the site's budget."""

    background: bool = False
    requests: int = 0


_WORK: contextvars.ContextVar[Work | None] = contextvars.ContextVar("geo_tui_work", default=None)


def set_work(work: Work) -> None:
    """Name the work of the calling task (and of the tasks it starts from now on)."""
    _WORK.set(work)


def for_a_push() -> bool:
    """Whether the calling task copies a push (its work is named and not background)."""
    work = _WORK.get()
    return work is not None and not work.background


class RequestBudget:
    """At most `rate` requests per second, spread out (a virtual schedule: each request takes the
    next free slot, with a burst of a tenth of a second's worth). A rate of 0 bounds nothing.

    `pace()`, asked at each request, is the share of `rate` allowed now (1.0 when nothing says
    otherwise; the engine lowers it while pushes come: pushes.PushCopier.background_share). It is
    never below MIN_SHARE, so background work always moves on. `take` returns whether it waited."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        pace: Callable[[], float] = lambda: 1.0,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._pace = pace
        self._next = 0.0

    def current_rate(self) -> float:
        """Requests per second allowed now (0: unbounded)."""
        return self.rate * max(MIN_SHARE, min(1.0, self._pace()))

    async def take(self) -> bool:
        rate = self.current_rate()
        if rate <= 0:
            return False
        now = self._clock()
        interval = 1.0 / rate
        burst = max(1.0, rate / 10)
        self._next = max(self._next, now - burst * interval)
        wait = self._next - now
        self._next += interval
        if wait > 0:
            await asyncio.sleep(wait)
        return wait > 0


Gate = Callable[[httpx.Request, bool], Awaitable[None]]


def request_hook(
    budget: RequestBudget | None, gates: Sequence[Gate] = (), yields: Sequence[Gate] = ()
) -> Callable[[httpx.Request], Awaitable[None]]:
    """The `on_request` of one site's client: count the request for the current work, and hold
    background work to the site's budget. Each of `yields`, then of `gates`, in order, sees every
    request as `gate(request, background)` and may hold background work (`yields`:
    pushes.PushCopier.yield_to_pushes; `gates`: the primary's notifications.PullBacklog.hold, which
    counts what passes, so it is asked once). A background request that waited for its budget's slot
    asks `yields` again: a push that arrived while it waited goes first."""

    async def hook(request: httpx.Request) -> None:
        work = _WORK.get()
        background = work is not None and work.background
        for gate in (*yields, *gates):
            await gate(request, background)
        if work is None:
            return
        work.requests += 1
        if background and budget is not None and await budget.take():
            for gate in yields:
                await gate(request, background)

    return hook
