"""Driving an `EngineLink` from a test: drain its batches until what the test waits for has come."""

from __future__ import annotations

import time
from collections.abc import Callable

from geo_tui.engine import SyncState
from geo_tui.link.link import Batch, EngineLink


def drain_until(link: EngineLink, done: Callable[[list[Batch]], bool], timeout: float = 20.0) -> list[Batch]:
    """Every non-empty batch drained until `done` holds for them; fails the test after `timeout`."""
    batches: list[Batch] = []
    deadline = time.monotonic() + timeout
    while not done(batches):
        assert time.monotonic() < deadline, "timed out draining the engine link"
        batch = link.drain()
        if batch:
            batches.append(batch)
        time.sleep(0.05)
    return batches


def all_synced(count: int) -> Callable[[list[Batch]], bool]:
    """A `done` for `drain_until`: `count` rows seen, and the latest state of each is synced."""

    def done(batches: list[Batch]) -> bool:
        latest: dict[tuple[str, str], SyncState] = {}
        for b in batches:
            for row in (b.all_rows or []) + b.rows:
                latest[row.key] = row.state
        return len(latest) == count and all(s is SyncState.SYNCED for s in latest.values())

    return done
