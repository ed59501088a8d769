"""A push's small blobs (issue 17): read from the primary once for every secondary a push job writes,
and their upload started beside the HEAD."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .blobs import BlobCopier

__all__ = ["SHARED_READ_BYTES", "EarlyStart", "SharedReads"]

# What one push job's SharedReads holds at most; past it, each secondary reads a blob on its own.
SHARED_READ_BYTES = 32 * 1024 * 1024


class SharedReads:
    """Small blobs read from the primary once for every secondary one push job writes (issue 17): each
    secondary's copy of a new layer read it on its own. An entry goes once every secondary took it; a
    failed read is not kept (a retry reads again); at most SHARED_READ_BYTES are held."""

    def __init__(self, readers: int) -> None:
        self._readers = readers
        self._reads: dict[str, tuple[asyncio.Future[bytes], int]] = {}
        self._held = 0

    async def read(self, digest: str, size: int, fetch: Callable[[], Awaitable[bytes]]) -> bytes:
        entry = self._reads.get(digest)
        if entry is None:
            if self._held + size > SHARED_READ_BYTES:
                return await fetch()
            future: asyncio.Future[bytes] = asyncio.ensure_future(fetch())
            future.add_done_callback(_retrieved)
            self._held += size
            entry = (future, 0)
        future, taken = entry[0], entry[1] + 1
        self._reads[digest] = (future, taken)
        try:
            body = await asyncio.shield(future)  # one reader cancelled must not cancel the others' read
        except BaseException:
            if future.done() and self._reads.get(digest, (None, 0))[0] is future:
                self._forget(digest, size)
            raise
        if taken >= self._readers and self._reads.get(digest, (None, 0))[0] is future:
            self._forget(digest, size)
        return body

    def _forget(self, digest: str, size: int) -> None:
        del self._reads[digest]
        self._held -= size


def _retrieved(future: asyncio.Future[bytes]) -> None:
    if not future.cancelled():
        future.exception()  # said to each reader that awaited it; none left means nobody needs it


class EarlyStart:
    """A small blob's upload session and bytes, started beside its HEAD on a push's path."""

    def __init__(
        self,
        copier: BlobCopier,
        repository: str,
        opening: asyncio.Future[str],
        reading: asyncio.Future[bytes],
    ) -> None:
        self._copier = copier
        self._repository = repository
        self.opening = opening
        self.reading = reading
        self.dropped = False

    async def drop(self) -> None:
        """Not needed after all: the bytes are not waited for, the session is cancelled (once)."""
        if not self.dropped:
            self.dropped = True
            await self._copier._drop_session(self._repository, self.opening, None, self.reading)
