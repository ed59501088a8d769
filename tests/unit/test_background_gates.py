"""Background requests give way to pushes: they wait while their own pull notifications back up at the
primary (PullBacklog) and while pushes are on their way (PushCopier.yield_to_pushes, .priority).

Distribution 2.8 sends a pull event for every manifest read and delivers an endpoint's events one at
a time; a push event queued behind thousands of geo-tui's own pulls waited for all of them.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from geo_tui.engine.notifications import PullBacklog
from geo_tui.engine.priority import PushPriority
from geo_tui.engine.pushes import PushCopier

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


async def test_background_requests_give_way_to_a_running_push_copy_until_it_ends() -> None:
    copier = PushCopier(_Clocked())  # type: ignore[arg-type]
    await asyncio.wait_for(copier.yield_to_pushes(HEAD, True), 0.05)  # no push: no wait
    copier.priority.copy_started()
    await asyncio.wait_for(copier.yield_to_pushes(HEAD, False), 0.05)  # a push's own request never waits
    waiting = asyncio.ensure_future(copier.yield_to_pushes(HEAD, True))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    copier.priority.copy_ended()  # the last copy ended
    await asyncio.wait_for(waiting, 0.1)
    assert 0.04 <= copier.priority.yielded_seconds < 0.2


async def test_a_push_received_holds_background_work_until_its_copy_or_for_a_bounded_time() -> None:
    priority = PushPriority(announced_hold=0.2)
    priority.announce()  # the receiver took a push event; no copy yet
    started = time.monotonic()
    await priority.give_way()  # no copy started: let go when the announcement runs out
    assert 0.18 <= time.monotonic() - started < 0.5
    assert not priority.pushes_on_their_way
    priority.announce()
    priority.copy_started()  # its copy starts: held until it ends, not by the announcement
    waiting = asyncio.ensure_future(priority.give_way())
    await asyncio.sleep(0.3)
    assert not waiting.done()
    priority.copy_ended()
    await asyncio.wait_for(waiting, 0.1)


async def test_one_request_gives_way_for_request_hold_at_most() -> None:
    priority = PushPriority(request_hold=0.2)
    priority.copy_started()  # a copy that never ends
    started = time.monotonic()
    await priority.give_way()
    assert 0.18 <= time.monotonic() - started < 0.5


async def test_pushes_that_never_stop_hold_background_work_for_a_bounded_share_of_the_time() -> None:
    """A burst is served first while the bucket lasts (capacity / (1 - share)); after it, background
    work is held about `share` of the time, and each request that finds the bucket empty goes at once."""
    priority = PushPriority(capacity=0.3, share=0.5, request_hold=0.25)
    priority.copy_started()  # pushes on their way for the whole test
    started = time.monotonic()
    await priority.give_way()
    await priority.give_way()
    burst = time.monotonic() - started
    assert 0.5 <= burst < 0.8  # 0.25 + 0.25 of the bucket's 0.6 s
    await priority.give_way()  # the last 0.1 s
    assert priority.allowance() < 0.02
    instant = time.monotonic()
    await asyncio.wait_for(priority.give_way(), 0.01)  # empty: goes at once
    assert time.monotonic() - instant < 0.01
    held_before, mark = priority.held_seconds, time.monotonic()
    while time.monotonic() - mark < 2.0:  # background work: a request, then 20 ms of its own work
        await priority.give_way()
        await asyncio.sleep(0.02)
    share = (priority.held_seconds - held_before) / (time.monotonic() - mark)
    assert 0.35 <= share <= 0.6, share
    assert priority.pushes_on_their_way


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
