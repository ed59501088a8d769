"""Bounded concurrency for a copy's many small requests (HEADs, manifest reads, tags)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

__all__ = ["METADATA_CONCURRENCY", "for_each_limited"]

T = TypeVar("T")
METADATA_CONCURRENCY = 16


async def for_each_limited(
    items: Iterable[T], func: Callable[[T], Awaitable[object]], limit: int
) -> list[tuple[T, Exception]]:
    """Run ``func`` over ``items`` with at most ``limit`` at once; return the items that raised, with
    their exceptions, in item order. ``limit`` workers pull from one iterator: memory does not grow
    with the number of items (one task per item cost ~1.6 KiB each, 521 MiB at 300k tags)."""
    pending = enumerate(items)
    failed: list[tuple[int, T, Exception]] = []

    async def worker() -> None:
        for index, item in pending:  # shared: each item goes to exactly one worker
            try:
                await func(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # collected and reported per item by the caller
                failed.append((index, item, exc))

    workers = [asyncio.ensure_future(worker()) for _ in range(max(1, limit))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    return [(item, exc) for _, item, exc in sorted(failed, key=lambda f: f[0])]
