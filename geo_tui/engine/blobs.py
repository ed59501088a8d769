"""Put blobs into one secondary: HEAD, then a mount from where it is known to be, then a stream from
the primary (one stream of a digest at a time per secondary, and across many workers: streams.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from geo_tui.registry import (
    Descriptor,
    DigestMismatch,
    NotFound,
    RateLimited,
    RegistryClient,
    RegistryError,
    RegistryRejected,
    RegistryUnavailable,
    TransferTooSlow,
)

from .budget import for_a_push
from .database import Write, in_place
from .repository import CopyStats
from .shared_reads import EarlyStart, SharedReads

if TYPE_CHECKING:
    from .streams import ClusterStreams

log = logging.getLogger("geo_tui.engine")

__all__ = ["SMALL_BLOB_BYTES", "BlobCopier", "BlobLocations", "SharedReads", "amended"]

_RETRYABLE = (RegistryUnavailable, RateLimited, DigestMismatch)


def amended(exc: RegistryError, hint: str, cls: type[RegistryError] | None = None) -> RegistryError:
    """`exc` (as `cls`, by default its own class) with `hint` added to its detail."""
    return (cls or type(exc))(
        exc.registry,
        exc.operation,
        exc.repository,
        reference=exc.reference,
        status=exc.status,
        code=exc.code,
        detail=f"{exc.detail}; {hint}" if exc.detail else hint,
    )


@dataclass
class _Stream:
    """A blob being streamed into a secondary, that other repository runs wait for."""

    done: asyncio.Event = field(default_factory=asyncio.Event)
    too_slow: TransferTooSlow | None = None


class BlobLocations(Protocol):
    """Where blobs are known to be on each site, for mounts: the tracking database, or a dry run's
    read-only view of it (engine/plan.py)."""

    def blob_sources(self, site: str, digest: str, *, exclude: str, limit: int = 3) -> list[str]: ...

    def add_blob_locations(self, site: str, repository: str, digests: Iterable[str]) -> None: ...

    def forget_blob_location(self, site: str, digest: str, repository: str) -> None: ...


class _Mounted:
    """What BlobCopier._mount returns when the mount worked: there is no upload session to fill."""


_MOUNTED = _Mounted()


# A blob up to this size is read whole before its upload (POST, PUT) instead of streamed through one
# (POST, PATCH, PUT): most of a push's blobs (configs, small layers) cost a request less per secondary.
SMALL_BLOB_BYTES = 1024 * 1024


class BlobCopier:
    """Puts blobs into one secondary: HEAD first, then a mount from a repository known to hold
    the blob, then a streamed copy from the primary. One per secondary, shared by every
    repository run, so two repositories needing one base layer copy it once and mount it once."""

    def __init__(
        self,
        primary: RegistryClient,
        secondary: RegistryClient,
        site: str,
        tracking: BlobLocations,
        *,
        attempts: int = 3,
        retry_delay: float = 0.5,
        on_bytes: Callable[[str, int], None] | None = None,
        write: Write = in_place,
        read: Write = in_place,
        streams: ClusterStreams | None = None,
    ) -> None:
        """``streams``: the cluster-wide turns at streaming (many workers on PostgreSQL), or None;
        ``read``: how the tracking database is read (the engine's `read`: off the loop on PostgreSQL)."""
        self.primary = primary
        self.secondary = secondary
        self.site = site
        self.tracking = tracking
        self.attempts = attempts
        self.retry_delay = retry_delay
        self._on_bytes = on_bytes
        self._write = write
        self._read = read
        self._streams = streams
        self._inflight: dict[str, _Stream] = {}
        self._hints: set[asyncio.Future[object]] = set()  # blob locations being written (see _located)

    async def ensure(
        self,
        repository: str,
        blob: Descriptor,
        stats: CopyStats,
        slots: asyncio.Semaphore | None = None,
        *,
        look: bool = True,
        reads: SharedReads | None = None,
    ) -> None:
        """Make ``blob`` present in ``repository`` on the secondary: one HEAD (unless ``look`` is
        false: the caller knows the repository cannot hold it), then a mount from a repository known
        to hold it, then a streamed copy. Only one stream of a digest runs at a time per secondary:
        the others wait for it and mount from where it landed. ``slots`` bounds the transfers
        (mounts and streams) of one repository run; the HEAD and the waiting take no slot, so a
        shared base layer never starves a repository's own layers. ``reads``: small blobs are read
        from the primary once for every secondary of a push job."""
        digest = blob.digest
        slot: AbstractAsyncContextManager[object] = slots if slots is not None else nullcontext()
        early = await self._early(repository, blob, reads) if look else None
        try:
            present = look and await self.secondary.head_blob(repository, digest) is not None
        except BaseException:
            if early is not None:
                await early.drop()
            raise
        if present:
            if early is not None:
                await early.drop()
            stats.blobs_present += 1
            await self._located(repository, digest)
            return
        try:
            location = await self._mount_or_wait(repository, blob, stats, slot, early)
        except BaseException:
            if early is not None:
                await early.drop()
            raise
        if isinstance(location, _Mounted):
            if early is not None:
                await early.drop()
            return
        if early is not None and (early.dropped or location is not None):
            await early.drop()  # waited for another stream, or the mount opened a session to stream into
            early = None
        stream = self._inflight[digest] = _Stream()
        landed: str | None = None
        try:
            if self._streams is not None:
                location, early = await self._cluster_turn(repository, blob, stats, slot, location, early)
                if isinstance(location, _Mounted):
                    return
            async with slot:
                record = self._streams is None or not self._streams.holds(self.site, digest)
                if await self._stream(repository, blob, stats, location, reads, early, record=record):
                    landed = repository
        except TransferTooSlow as exc:
            stream.too_slow = exc
            raise
        finally:
            try:  # where it landed is stored before this worker's other runs look for it
                if self._streams is not None:
                    await self._streams.finish(self.site, digest, landed)
            finally:
                del self._inflight[digest]
                stream.done.set()

    async def _cluster_turn(
        self,
        repository: str,
        blob: Descriptor,
        stats: CopyStats,
        slot: AbstractAsyncContextManager[object],
        location: str | None,
        early: EarlyStart | None,
    ) -> tuple[str | _Mounted | None, EarlyStart | None]:
        """This worker's turn at streaming the blob into this secondary (issue 16): the row taken, what
        to stream into goes back. While another worker streams it, whatever this copy opened is dropped
        (a session would sit idle for minutes), it waits, then mounts from where it landed."""
        assert self._streams is not None
        try:
            while True:
                holder = await self._streams.take(self.site, blob.digest, repository)
                if holder is None:
                    return location, early
                if early is not None:
                    await early.drop()
                    early = None
                if location is not None:
                    await self.secondary.cancel_upload(repository, location)
                    location = None
                log.debug("%s: waiting for worker %s's stream of %s", self.site, holder, blob.digest)
                await self._streams.wait(self.site, blob.digest)
                async with slot:
                    found = await self._mount(repository, blob, stats)
                if isinstance(found, _Mounted):
                    return found, None
                location = found  # not landed (its stream failed), or a 202: this worker's turn now
        except BaseException:
            if early is not None:
                await early.drop()
            if location is not None:
                await self.secondary.cancel_upload(repository, location)
            raise

    async def _mount_or_wait(
        self,
        repository: str,
        blob: Descriptor,
        stats: CopyStats,
        slot: AbstractAsyncContextManager[object],
        early: EarlyStart | None,
    ) -> str | _Mounted | None:
        """Wait for a stream of the blob into this secondary and mount from where it landed, or mount it
        from a repository known to hold it. When neither, the caller streams it (nobody else does now):
        into the session a mount opened instead, or a new one (None)."""
        digest = blob.digest
        while True:
            busy = self._inflight.get(digest)
            if busy is not None:
                # Another run is streaming this blob into this secondary: wait, then mount from it. If
                # that stream was too slow, so is this copy: it fails with it (issue 12, case 5).
                if early is not None:
                    await early.drop()
                    early = None
                await busy.done.wait()
                if busy.too_slow is not None:
                    raise busy.too_slow
                continue
            async with slot:
                location = await self._mount(repository, blob, stats)
            if isinstance(location, _Mounted) or digest not in self._inflight:
                return location  # mounted, or nobody started a stream while the mounts were out

    async def _located(self, repository: str, digest: str) -> None:
        """Remember that the secondary's ``repository`` holds ``digest`` (for later mounts). A push's copy
        does not wait for that write before its tag (a mount hint lost to a failed write costs a copy
        later, never correctness); other work does, so a finished run's hints are in."""
        write = self._write(self.tracking.add_blob_locations, self.site, repository, [digest])
        if not for_a_push():
            await write
            return
        task = asyncio.ensure_future(write)
        self._hints.add(task)
        task.add_done_callback(self._hint_written)

    def _hint_written(self, task: asyncio.Future[object]) -> None:
        self._hints.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a blob location was not stored: %s", task.exception())

    async def _mount(self, repository: str, blob: Descriptor, stats: CopyStats) -> str | _Mounted | None:
        """Mount the blob from a repository of the secondary known to hold it: _MOUNTED, or the
        upload session a registry opened instead (202), or None when no source is known."""
        for source in await self._read(
            self.tracking.blob_sources, self.site, blob.digest, exclude=repository
        ):
            try:
                location = await self.secondary.mount_blob(repository, blob.digest, source)
            except (NotFound, RegistryRejected):
                await self._write(self.tracking.forget_blob_location, self.site, blob.digest, source)
                continue
            if location is None:
                stats.blobs_mounted += 1
                await self._located(repository, blob.digest)
                return _MOUNTED
            return location  # 202: the registry opened an upload session instead; stream into it
        return None

    async def _stream(
        self,
        repository: str,
        blob: Descriptor,
        stats: CopyStats,
        location: str | None,
        reads: SharedReads | None,
        early: EarlyStart | None = None,
        *,
        record: bool = True,
    ) -> bool:
        """Stream the blob (retried); whether it landed (a foreign layer the primary lacks does not).
        ``record``: store where it landed (false: the cluster's stream row does, as it goes)."""
        for attempt in range(1, self.attempts + 1):
            try:
                if 0 <= blob.size <= SMALL_BLOB_BYTES:
                    size: int | None = await self._copy_small(repository, blob, location, reads, early)
                    early = None  # a retry opens a session of its own
                else:
                    size = await self._stream_once(repository, blob, location)
            except NotFound:
                if blob.urls:  # a foreign layer: clients fetch it from its URLs, the primary need not hold it
                    stats.blobs_foreign += 1
                    return False
                raise
            except TransferTooSlow:
                raise  # each attempt would take as long again: fail now, naming the slow site
            except _RETRYABLE:
                early = None  # spent by the failed attempt
                if attempt == self.attempts:
                    raise
                location = None  # the session saw a broken stream; open a new one
                await asyncio.sleep(self.retry_delay * 2 ** (attempt - 1))
                continue
            stats.blobs_copied += 1
            stats.bytes_copied += size if size is not None else 0
            if record:
                await self._located(repository, blob.digest)
            return True
        return False  # not reached: the last attempt returns or raises

    async def _stream_once(self, repository: str, blob: Descriptor, location: str | None) -> int | None:
        """One streamed copy from the primary into an upload session of the secondary; its size.
        A session it opened or was given is cancelled if the copy fails (the upload cancels its own)."""
        handed = False
        try:
            async with self.primary.stream_blob(repository, blob.digest) as source:
                size = source.size if source.size is not None else (blob.size if blob.size >= 0 else None)
                # The receiving registry verifies the digest of every upload (OCI spec), so the
                # bytes are not hashed here a second time.
                chunks = self._counted(repository, source.chunks(verify=False))
                handed = True
                # PATCH then PUT: if the primary breaks off, the body ends there and the session is
                # cancelled at a known state (a monolithic PUT would leave it half written).
                await self.secondary.upload_blob(
                    repository, blob.digest, size, chunks, location=location, chunked=True
                )
            return size
        except RegistryError as exc:
            if location is not None and not handed:
                await self.secondary.cancel_upload(repository, location)
            explained = self._explained(exc)
            if explained is exc:
                raise
            raise explained from exc

    async def _copy_small(
        self,
        repository: str,
        blob: Descriptor,
        location: str | None,
        reads: SharedReads | None,
        early: EarlyStart | None = None,
    ) -> int:
        """A small blob (its size from the manifest), read whole from the primary before its upload: POST
        and one PUT with the bytes, two requests where PATCH then PUT take three (issue 17: a push's
        cost). The session opens while the bytes are read, one round trip fewer on a push's path; with
        ``reads`` the bytes are read once for every secondary. Reading first means a source that breaks
        off or lies never leaves a session half written, which Distribution 2.8 refuses to cancel (an
        empty one it cancels); the bytes held are at most SMALL_BLOB_BYTES. The spec's monolithic POST
        would be one request, but Distribution 2.8 drops its body (202, a new session)."""
        if early is not None and not early.dropped and location is None:
            opening: asyncio.Future[str] | None = early.opening
            reading = early.reading
        else:
            if early is not None:
                await early.drop()
            opening = (
                None
                if location is not None
                else asyncio.ensure_future(self.secondary.open_upload(repository, blob.digest))
            )
            reading = asyncio.ensure_future(self._read_shared(repository, blob, reads))
        try:
            body = await reading
            if opening is not None:
                location = await opening
        except BaseException as exc:
            await self._drop_session(repository, opening, location, reading)
            explained = self._explained(exc) if isinstance(exc, RegistryError) else exc
            if explained is exc:
                raise
            raise explained from exc
        assert location is not None

        async def whole() -> AsyncIterator[bytes]:
            yield body

        try:
            await self.secondary.upload_blob(repository, blob.digest, len(body), whole(), location=location)
        except RegistryError as exc:  # the upload cancelled its own session
            explained = self._explained(exc)
            if explained is exc:
                raise
            raise explained from exc
        return len(body)

    async def _early(self, repository: str, blob: Descriptor, reads: SharedReads | None) -> EarlyStart | None:
        """A push's small blob that no stream or known mount source covers: its upload session and its
        bytes from the primary start beside the HEAD, one round trip fewer on the push's path (when the
        HEAD finds it, the session is cancelled: two requests more). Other work HEADs first."""
        digest = blob.digest
        if reads is None or not 0 <= blob.size <= SMALL_BLOB_BYTES or digest in self._inflight:
            return None
        if await self._read(self.tracking.blob_sources, self.site, digest, exclude=repository, limit=1):
            return None  # a mount (one request) beats an upload
        opening = asyncio.ensure_future(self.secondary.open_upload(repository, blob.digest))
        reading = asyncio.ensure_future(self._read_shared(repository, blob, reads))
        return EarlyStart(self, repository, opening, reading)

    async def _read_shared(self, repository: str, blob: Descriptor, reads: SharedReads | None) -> bytes:
        if reads is None:
            return await self._read_small(repository, blob)
        return await reads.read(blob.digest, blob.size, lambda: self._read_small(repository, blob))

    async def _drop_session(
        self,
        repository: str,
        opening: asyncio.Future[str] | None,
        location: str | None,
        reading: asyncio.Future[bytes] | None = None,
    ) -> None:
        """Cancel the session a small blob's copy opened or was given, and its read, when the copy stops
        before the upload (a failed read, a HEAD that found the blob, a cancelled copy)."""
        if reading is not None and not reading.done():
            reading.cancel()
        # The POST may have reached the registry: its answer says which session to cancel.
        waiting = [f for f in (reading, opening) if f is not None]
        if waiting:
            await asyncio.wait(waiting)  # the caller's own cancellation still goes through
        for future in waiting:
            if not future.cancelled():
                future.exception()  # retrieved: said by the caller's own failure, or not needed
        if opening is not None and not opening.cancelled() and opening.exception() is None:
            location = opening.result()
        if location is not None:
            await self.secondary.cancel_upload(repository, location)

    async def _read_small(self, repository: str, blob: Descriptor) -> bytes:
        """A small blob's bytes from the primary, hashed (cheap at this size): content that does not match
        its digest opens no upload, where the secondary's refusal of a PUT leaves a session it will not
        cancel."""
        body = bytearray()
        async with self.primary.stream_blob(repository, blob.digest) as source:
            async for chunk in self._counted(repository, source.chunks(verify=True)):
                body += chunk
                if len(body) > SMALL_BLOB_BYTES:
                    raise DigestMismatch(
                        self.primary.name,
                        "GET blob",
                        repository,
                        reference=blob.digest,
                        detail=f"it served more than the {blob.size} bytes the manifest gives",
                    )
        return bytes(body)

    def _explained(self, exc: RegistryError) -> RegistryError:
        """The failure of an upload, blamed where it belongs and saying what a person can check."""
        if exc.registry != self.secondary.name or exc.operation != "upload blob":
            return exc
        if exc.code == "DIGEST_INVALID":
            # The bytes went from the primary to the secondary untouched: the primary served content
            # that does not hash to its digest (issue 12 found this blamed on the secondary).
            return DigestMismatch(
                self.primary.name,
                "GET blob",
                exc.repository,
                reference=exc.reference,
                detail=f"the content it served does not hash to {exc.reference} "
                f"({self.site} refused it: {exc.status} {exc.code})",
            )
        if exc.status is not None and exc.status >= 500:
            return amended(exc, f"{self.site} could not store it: its storage may be full or unwritable")
        return exc

    async def _counted(self, repository: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if self._on_bytes is not None:
                self._on_bytes(repository, len(chunk))
            yield chunk
