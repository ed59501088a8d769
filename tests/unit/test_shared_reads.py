"""A push job's small blobs are read from the primary once for every secondary (blobs.SharedReads):
each secondary's copy of a new layer read it on its own."""

from __future__ import annotations

import asyncio

import pytest

from geo_tui.engine.shared_reads import SHARED_READ_BYTES, SharedReads


class Primary:
    def __init__(self, fail_first: bool = False) -> None:
        self.reads = 0
        self.fail_first = fail_first
        self.release = asyncio.Event()

    async def fetch(self) -> bytes:
        self.reads += 1
        await self.release.wait()
        if self.fail_first and self.reads == 1:
            raise OSError("the primary broke off")
        return b"layer"


async def test_two_secondaries_read_a_blob_once() -> None:
    primary, reads = Primary(), SharedReads(readers=2)
    both = asyncio.gather(*(reads.read("sha256:a", 5, primary.fetch) for _ in range(2)))
    await asyncio.sleep(0.01)
    primary.release.set()
    assert await both == [b"layer", b"layer"]
    assert primary.reads == 1
    # both took it: it is not held any more, and a later read reads again
    assert await reads.read("sha256:a", 5, primary.fetch) == b"layer" and primary.reads == 2


async def test_a_failed_read_is_not_kept_and_a_retry_reads_again() -> None:
    primary, reads = Primary(fail_first=True), SharedReads(readers=2)
    primary.release.set()
    with pytest.raises(OSError):
        await reads.read("sha256:a", 5, primary.fetch)
    assert await reads.read("sha256:a", 5, primary.fetch) == b"layer"
    assert primary.reads == 2


async def test_one_reader_cancelled_does_not_cancel_the_others_read() -> None:
    primary, reads = Primary(), SharedReads(readers=2)
    first = asyncio.ensure_future(reads.read("sha256:a", 5, primary.fetch))
    second = asyncio.ensure_future(reads.read("sha256:a", 5, primary.fetch))
    await asyncio.sleep(0.01)
    first.cancel()
    primary.release.set()
    assert await second == b"layer" and primary.reads == 1


async def test_past_the_bound_each_reader_reads_on_its_own() -> None:
    primary, reads = Primary(), SharedReads(readers=2)
    primary.release.set()
    big = SHARED_READ_BYTES // 2 + 1
    await reads.read("sha256:a", big, primary.fetch)  # held until the second secondary takes it
    await reads.read("sha256:b", big, primary.fetch)  # would pass the bound: not held
    await reads.read("sha256:b", big, primary.fetch)
    assert primary.reads == 3
