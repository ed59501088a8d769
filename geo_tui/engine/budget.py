"""Whose request this is: a push's copy (counted, never held back) or background work (paced).

Every registry client of the engine awaits `request_hook` before each request it sends. The work a
task does is named by a context variable set at the start of that task (child tasks inherit it), so
one hook counts the requests of a push event and paces the whole-repository work of a reconcile,
a deletion event or a verification against that site's `RequestBudget`.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

__all__ = ["Gate", "RequestBudget", "Work", "for_a_push", "request_hook", "set_work"]


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
    next free slot, with a burst of a tenth of a second's worth). A rate of 0 bounds nothing."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._next = 0.0
        self._burst = max(1.0, rate / 10)

    async def take(self) -> None:
        if self.rate <= 0:
            return
        now = self._clock()
        interval = 1.0 / self.rate
        self._next = max(self._next, now - self._burst * interval)
        wait = self._next - now
        self._next += interval
        if wait > 0:
            await asyncio.sleep(wait)


Gate = Callable[[httpx.Request, bool], Awaitable[None]]


def request_hook(
    budget: RequestBudget | None, gates: Sequence[Gate] = ()
) -> Callable[[httpx.Request], Awaitable[None]]:
    """The `on_request` of one site's client: count the request for the current work, and hold
    background work to the site's budget. Each of `gates`, in order, sees every request as
    `gate(request, background)` and may hold background work (pushes.PushCopier.yield_to_pushes,
    and the primary's notifications.PullBacklog.hold)."""

    async def hook(request: httpx.Request) -> None:
        work = _WORK.get()
        for gate in gates:
            await gate(request, work is not None and work.background)
        if work is None:
            return
        work.requests += 1
        if work.background and budget is not None:
            await budget.take()

    return hook
