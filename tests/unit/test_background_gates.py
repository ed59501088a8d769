"""Background requests give way to pushes: they wait while their own pull notifications back up at the
primary (PullBacklog) and while push copies run (PushCopier.yield_to_pushes).

Distribution 2.8 sends a pull event for every manifest read and delivers an endpoint's events one at
a time; a push event queued behind thousands of geo-tui's own pulls waited for all of them.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from geo_tui.engine import budget as budget_module
from geo_tui.engine import pushes as pushes_module
from geo_tui.engine.budget import MIN_SHARE, RequestBudget, Work, request_hook, set_work
from geo_tui.engine.notifications import PullBacklog
from geo_tui.engine.pushes import PACE_WINDOW, PUSH_SHARE, PUSH_YIELD, PushCopier

HEAD = httpx.Request("HEAD", "http://primary/v2/group/app/manifests/v1")
BLOB = httpx.Request("GET", "http://primary/v2/group/app/blobs/sha256:" + "ab" * 32)
PUT = httpx.Request("PUT", "http://primary/v2/group/app/manifests/v1")


async def test_nothing_is_held_until_the_primary_has_notified_an_own_pull() -> None:
    backlog = PullBacklog(limit=2, stall=5.0)
    for _ in range(10):  # a primary that never notifies pulls: never waited on
        await asyncio.wait_for(backlog.hold(HEAD, True), 0.1)
    assert backlog.outstanding == 10


async def test_background_reads_wait_at_the_limit_until_their_events_come_back() -> None:
    backlog = PullBacklog(limit=3, stall=5.0)
    await backlog.hold(HEAD, False)
    backlog.seen()  # the primary notifies geo-tui's pulls
    for _ in range(3):
        await asyncio.wait_for(backlog.hold(HEAD, True), 0.1)
    assert backlog.outstanding == 3
    waiting = asyncio.ensure_future(backlog.hold(HEAD, True))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # three outstanding: the fourth read waits
    await asyncio.wait_for(backlog.hold(HEAD, False), 0.1)  # a push's read never waits, and counts
    assert backlog.outstanding == 4
    backlog.seen(2)
    await asyncio.wait_for(waiting, 0.5)
    assert backlog.outstanding == 3 and backlog.held_seconds > 0.04


async def test_other_requests_are_neither_counted_nor_held() -> None:
    backlog = PullBacklog(limit=1, stall=5.0)
    await backlog.hold(HEAD, True)
    backlog.seen()
    await backlog.hold(HEAD, True)
    for request in (BLOB, PUT):
        await asyncio.wait_for(backlog.hold(request, True), 0.1)
    assert backlog.outstanding == 1


async def test_a_wait_with_no_event_coming_back_lets_go_and_starts_counting_again() -> None:
    # A read that failed (no event) or an event dropped: never coming, so the count restarts.
    backlog = PullBacklog(limit=1, stall=0.2)
    await backlog.hold(HEAD, True)
    backlog.seen()
    await backlog.hold(HEAD, True)
    await asyncio.wait_for(backlog.hold(HEAD, True), 1.0)
    assert backlog.released == 1 and backlog.outstanding == 1
    # The primary may have stopped notifying: nothing is held until an own pull event comes back.
    for _ in range(5):
        await asyncio.wait_for(backlog.hold(HEAD, True), 0.1)
    assert backlog.released == 1 and backlog.outstanding == 6
    backlog.seen()
    waiting = asyncio.ensure_future(backlog.hold(HEAD, True))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # notified again: held at the limit once more
    backlog.seen(5)
    await asyncio.wait_for(waiting, 0.5)


@pytest.mark.parametrize("extra", [1, 5])
async def test_more_own_events_than_reads_never_go_below_zero(extra: int) -> None:
    # Another geo-tui reading the same primary sends own pulls this one did not count.
    backlog = PullBacklog(limit=2, stall=5.0)
    await backlog.hold(HEAD, True)
    backlog.seen(1 + extra)
    assert backlog.outstanding == 0
    await asyncio.wait_for(backlog.hold(HEAD, True), 0.1)
    await asyncio.wait_for(backlog.hold(HEAD, True), 0.1)
    assert backlog.outstanding == 2


class _Clocked:
    """What PushCopier reads of its engine here: the clock, and metrics for its wake-ups (none)."""

    _clock = staticmethod(time.monotonic)
    metrics = None


async def test_background_requests_yield_to_running_push_copies_for_a_bounded_time() -> None:
    copier = PushCopier(_Clocked())  # type: ignore[arg-type]
    await asyncio.wait_for(copier.yield_to_pushes(HEAD, True), 0.05)  # no copy running: no wait
    copier._idle.clear()  # a copy runs (run_forever clears it as it starts one)
    await asyncio.wait_for(copier.yield_to_pushes(HEAD, False), 0.05)  # a push's own request never waits
    waiting = asyncio.ensure_future(copier.yield_to_pushes(HEAD, True))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    copier._idle.set()  # the last copy ended
    await asyncio.wait_for(waiting, 0.1)
    copier._idle.clear()
    started = time.monotonic()
    await copier.yield_to_pushes(HEAD, True)  # pushes that never end slow background work, never stop it
    assert PUSH_YIELD - 0.02 <= time.monotonic() - started < PUSH_YIELD + 0.5
    assert copier.yielded_seconds >= PUSH_YIELD


async def test_while_pushes_come_one_own_pull_at_most_is_ahead_of_them() -> None:
    now = [100.0]
    backlog = PullBacklog(limit=4, stall=5.0, clock=lambda: now[0])
    await backlog.hold(HEAD, True)
    backlog.seen()
    for _ in range(2):
        await asyncio.wait_for(backlog.hold(HEAD, True), 0.1)  # no push: up to four ahead
    backlog.pushes_coming()
    waiting = asyncio.ensure_future(backlog.hold(HEAD, True))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # two outstanding, and a push copied just now: the limit is one
    backlog.seen()
    await asyncio.sleep(0.05)
    assert not waiting.done()  # still one outstanding
    now[0] += 11.0  # the pushes stopped: four again
    backlog.seen(0)
    await asyncio.wait_for(waiting, 0.5)
    assert backlog.current_limit == 4


class _Sleeps:
    """A budget's clock that only moves when the budget sleeps: the waits it asks for, without waiting."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 100.0
        self.waits: list[float] = []

        async def sleep(seconds: float) -> None:
            self.waits.append(seconds)
            self.now += seconds

        monkeypatch.setattr(budget_module.asyncio, "sleep", sleep)

    def clock(self) -> float:
        return self.now


async def test_while_pushes_come_the_budget_runs_at_its_share_and_never_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps = _Sleeps(monkeypatch)
    share = [1.0]
    budget = RequestBudget(100, clock=sleeps.clock, pace=lambda: share[0])
    for _ in range(20):  # a burst of 10, then one every 10 ms
        await budget.take()
    assert budget.current_rate() == 100 and sleeps.waits[-1] == pytest.approx(0.01)
    share[0] = 0.1  # pushes come: a tenth of the rate, every request 100 ms after the one before
    sleeps.waits.clear()
    for _ in range(5):
        await budget.take()
    assert budget.current_rate() == pytest.approx(10)
    assert sleeps.waits[1:] == pytest.approx([0.1] * 4)
    share[0] = 0.0  # a share of nothing still moves, at MIN_SHARE
    assert budget.current_rate() == pytest.approx(100 * MIN_SHARE)
    share[0] = 1.0  # the pushes stopped: the full rate again
    sleeps.waits.clear()
    for _ in range(3):
        await budget.take()
    assert sleeps.waits[-1] == pytest.approx(0.01)


async def test_a_background_request_that_waited_for_its_slot_yields_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps = _Sleeps(monkeypatch)
    asked: list[tuple[str, bool]] = []

    async def yielding(request: httpx.Request, background: bool) -> None:
        asked.append(("yield", background))

    async def gate(request: httpx.Request, background: bool) -> None:
        asked.append(("gate", background))

    hook = request_hook(RequestBudget(10, clock=sleeps.clock), [gate], yields=[yielding])
    set_work(Work(background=True))
    for _ in range(2):  # the burst's slots: no wait, asked once each (yields first)
        await hook(HEAD)
    assert asked == [("yield", True), ("gate", True)] * 2 and not sleeps.waits
    asked.clear()
    await hook(HEAD)  # waited 100 ms for its slot: a push may have come meanwhile
    assert sleeps.waits == [pytest.approx(0.1)]
    assert asked == [("yield", True), ("gate", True), ("yield", True)]  # the counting gate once
    asked.clear()
    push = Work()
    set_work(push)
    for _ in range(3):  # a push's copy never takes from the budget
        await hook(HEAD)
    assert len(sleeps.waits) == 1 and push.requests == 3
    assert asked == [("yield", False), ("gate", False)] * 3


class _Engine:
    """What PushCopier reads of its engine here: a clock the test moves, and metrics (none)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.metrics = None

    def _clock(self) -> float:
        return self.now


async def test_background_work_yields_from_the_moment_a_push_is_received(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pushes_module, "ANNOUNCED_HOLD", 0.2)
    engine = _Engine()
    copier = PushCopier(engine)  # type: ignore[arg-type]
    assert copier.background_share() == 1.0
    copier.announce()  # the receiver took a push event; its copy has not started
    assert copier.background_share() == PUSH_SHARE
    waiting = asyncio.ensure_future(copier.yield_to_pushes(HEAD, True))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # held before any copy runs
    await asyncio.wait_for(copier.yield_to_pushes(HEAD, False), 0.05)  # a push's request never waits
    # Nothing claimed it (its store failed, or the engine is paused): let go after ANNOUNCED_HOLD.
    engine.now += 0.2
    await asyncio.wait_for(waiting, 1.0)
    await asyncio.wait_for(copier.yield_to_pushes(HEAD, True), 0.05)
    assert copier.background_share() == PUSH_SHARE  # still within PACE_WINDOW of the push
    engine.now += PACE_WINDOW
    assert copier.background_share() == 1.0


async def test_a_copy_that_ends_before_the_announcement_expires_keeps_nothing_held() -> None:
    engine = _Engine()
    copier = PushCopier(engine)  # type: ignore[arg-type]
    copier.announce()
    # run_forever starts the copy: the announcement is its now, and its end lets background work go
    copier._announced_at = None
    copier._settle_idle()
    await asyncio.wait_for(copier.yield_to_pushes(HEAD, True), 0.05)
    copier.announce()  # another push while one is copied: held until both are done
    copier.running["group/app"] = asyncio.ensure_future(asyncio.sleep(0))
    copier._announced_at = None  # its copy started too
    copier._settle_idle()
    waiting = asyncio.ensure_future(copier.yield_to_pushes(HEAD, True))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # a copy still runs
    del copier.running["group/app"]
    copier._settle_idle()
    await asyncio.wait_for(waiting, 0.1)
