"""Two settings of httpcore that the registry client's sockets (`_network`) change, once, when the first
direct transport is made: how much a read asks of the socket, and httpcore's connection locks.

The second uses a private name of httpcore (`_synchronization.AsyncLock`): pyproject.toml holds httpcore
below 1.1, and tests/unit/test_registry_network.py fails when the name changes.
"""

from __future__ import annotations

import functools

import httpcore

__all__ = ["FAST_CONNECTION_LOCKS", "READ_SIZE", "locks_without_checkpoint", "read_more_per_call"]

# The most one socket read asks of the kernel (what it has buffered, up to this). recv() allocates that much
# and shrinks it to what came: 1 MiB reads cost the same CPU in bench/backfill.py but raised peak RSS from
# ~64 to ~79 MiB (40 streams).
READ_SIZE = 256 * 1024


@functools.cache
def read_more_per_call() -> None:
    """httpcore asks its socket for 64 KiB at a time, and each read goes through h11 and httpx's
    chunker in Python. Reads of up to READ_SIZE take what the kernel has buffered in one pass: ~12%
    less CPU per backfill (bench/backfill.py). Memory stays bounded, as a read returns only what is
    already there. A class attribute, so it holds for httpx's own transport too (behind a proxy)."""
    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = READ_SIZE


# Whether httpcore's connection locks take the uncontended path without a trip through the event loop
# (`locks_without_checkpoint`); False gives httpcore's own behaviour back.
FAST_CONNECTION_LOCKS = True


@functools.cache
def locks_without_checkpoint() -> None:
    """Under asyncio, httpcore's AsyncLock is an anyio.Lock, whose acquire yields to the event loop
    even when the lock is free, and an HTTP/1.1 connection takes its locks ~6 times a request: a loop
    cycle each, ~9% of a no-op compare's CPU under cProfile. A connection of ConnectionPool serves one
    request at a time, so its locks are never contended: anyio's `fast_acquire` (anyio 4.5+) takes a
    free lock at once, and waits as before when it is not."""
    if not FAST_CONNECTION_LOCKS:
        return
    import anyio
    from httpcore import _synchronization

    if "fast_acquire" not in (getattr(anyio.Lock.__new__, "__kwdefaults__", None) or {}):
        return  # an older anyio: httpcore's locks stay as they are

    original = _synchronization.AsyncLock.setup

    def setup(lock: _synchronization.AsyncLock) -> None:
        original(lock)
        if lock._backend == "asyncio":
            lock._anyio_lock = anyio.Lock(fast_acquire=True)

    _synchronization.AsyncLock.setup = setup  # type: ignore[method-assign,assignment]
