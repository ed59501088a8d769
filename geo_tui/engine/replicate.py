"""Copy one repository from the primary into one secondary, byte for byte.

The order of writes is what keeps a secondary correct at every instant, even if the process is
killed: blobs first, then child manifests by digest (depth first, for nested indexes), then the
top manifest by tag. A tag is only ever written once everything below it is in place, so a
secondary never holds a tag that points at something missing. Referrer fallback tags
(``sha256-<hex>``) go after the other tags, so referrers travel after their subject.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from geo_tui.registry import (
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    BlobStream,
    Descriptor,
    DigestMismatch,
    InvalidManifest,
    Manifest,
    ManifestInfo,
    NotFound,
    RateLimited,
    RegistryClient,
    RegistryError,
    RegistryRejected,
    RegistryUnavailable,
    TransferTooSlow,
    parse_manifest,
)

from .database import Write, in_place
from .referrers import replicate_referrers

__all__ = [
    "BlobCopier",
    "BlobLocations",
    "CopyPlan",
    "CopyStats",
    "ManifestCache",
    "PrimaryRepository",
    "RepositoryOutcome",
    "copy_pushed",
    "read_primary_repository",
    "read_secondary_tags",
    "replicate_repository",
    "repository_checksum",
    "repository_size",
]

log = logging.getLogger("geo_tui.engine")

T = TypeVar("T")
METADATA_CONCURRENCY = 16
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
REFERRERS_TAG_PREFIX = "sha256-"
_RETRYABLE = (RegistryUnavailable, RateLimited, DigestMismatch)


def repository_checksum(tags: Mapping[str, str]) -> str:
    """SHA-256 over the sorted ``tag + digest`` strings, as GitLab Geo checksums a repository."""
    return hashlib.sha256("".join(sorted(t + d for t, d in tags.items())).encode()).hexdigest()


async def _for_each_limited(
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


@dataclass
class CopyStats:
    """What one run did; added up per site for the summary."""

    tags_pushed: int = 0
    tags_deleted: int = 0
    manifests_pushed: int = 0
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    blobs_foreign: int = 0
    bytes_copied: int = 0
    referrers_deleted: int = 0

    def add(self, other: CopyStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def writes(self) -> int:
        return (
            self.tags_pushed
            + self.tags_deleted
            + self.manifests_pushed
            + self.blobs_copied
            + self.blobs_mounted
            + self.referrers_deleted
        )


@dataclass
class PrimaryRepository:
    """The primary's view of one repository: tag -> manifest info, read once and shared by all secondaries."""

    name: str
    exists: bool
    tags: dict[str, ManifestInfo] = field(default_factory=dict)
    tag_errors: dict[str, str] = field(default_factory=dict)
    # Listed, but HEAD answered 404 (a lagging replica, an eventually consistent primary): kept on
    # every secondary, and the repository fails (issue 12, case 3). Each is in tag_errors too.
    unserved: set[str] = field(default_factory=set)
    # Not read here: each secondary's run merges the two sorted listings in chunks (engine/merge.py), and
    # fills `reached` with the distinct manifests the primary's tags point at (for the size).
    streamed: bool = False
    reached: set[str] = field(default_factory=set)

    @property
    def digests(self) -> dict[str, str]:
        return {t: i.digest for t, i in self.tags.items()}


@dataclass
class RepositoryOutcome:
    site: str
    repository: str
    stats: CopyStats
    errors: list[str]
    warnings: list[str]
    tag_count: int

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def failure(self) -> str:
        shown = "; ".join(self.errors[:3])
        more = len(self.errors) - 3
        return shown + (f"; and {more} more" if more > 0 else "")


class ManifestCache:
    """A bounded LRU of manifests read from the primary, keyed by digest (content addressed)."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._max = max_bytes
        self._size = 0
        self._items: OrderedDict[str, Manifest] = OrderedDict()

    def get(self, digest: str) -> Manifest | None:
        item = self._items.get(digest)
        if item is not None:
            self._items.move_to_end(digest)
        return item

    def put(self, manifest: Manifest) -> None:
        if manifest.digest in self._items or len(manifest.content) > self._max:
            return
        self._items[manifest.digest] = manifest
        self._size += len(manifest.content)
        while self._size > self._max:
            _, old = self._items.popitem(last=False)
            self._size -= len(old.content)


async def read_primary_repository(primary: RegistryClient, repository: str) -> PrimaryRepository:
    """List the primary's tags and HEAD each one. A tag whose HEAD fails, or answers 404 although the
    listing names it, is kept aside: never deleted, and the repository fails."""
    try:
        tags = await primary.list_tags(repository)
    except NotFound:
        return PrimaryRepository(repository, exists=False)
    view = PrimaryRepository(repository, exists=True)
    shared: dict[ManifestInfo, ManifestInfo] = {}  # tags on one manifest share one object

    async def head(tag: str) -> None:
        info = await primary.head_manifest(repository, tag)
        if info is not None:
            view.tags[tag] = shared.setdefault(info, info)
        else:  # deleted since the listing, or a replica behind: the next run tells; keep the copy meanwhile
            view.unserved.add(tag)
            view.tag_errors[tag] = f"primary lists tag {tag} but cannot serve it (HEAD answered 404)"

    for tag, exc in await _for_each_limited(tags, head, METADATA_CONCURRENCY):
        view.tag_errors[tag] = str(exc)
    return view


async def read_secondary_tags(secondary: RegistryClient, repository: str) -> dict[str, str]:
    """Tag -> digest on a secondary; an unknown repository is an empty one."""
    return await _secondary_tags(secondary, repository) or {}


async def _secondary_tags(
    secondary: RegistryClient, repository: str, *, strict: bool = False
) -> dict[str, str] | None:
    """Tag -> digest on a secondary, or None when the registry does not know the repository.
    ``strict``: a listed tag whose HEAD answers 404 raises NotFound instead of being left out."""
    try:
        tags = await secondary.list_tags(repository)
    except NotFound:
        return None
    found: dict[str, str] = {}
    digests: dict[str, str] = {}  # tags on one manifest share one digest string

    async def head(tag: str) -> None:
        info = await secondary.head_manifest(repository, tag)
        if info is not None:
            found[tag] = digests.setdefault(info.digest, info.digest)
        elif strict:
            raise NotFound(
                secondary.name,
                "HEAD manifest",
                repository,
                reference=tag,
                status=404,
                detail="listed, yet absent",
            )

    for _, exc in await _for_each_limited(tags, head, METADATA_CONCURRENCY):
        raise exc
    return found


def _amended(exc: RegistryError, hint: str, cls: type[RegistryError] | None = None) -> RegistryError:
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
    ) -> None:
        self.primary = primary
        self.secondary = secondary
        self.site = site
        self.tracking = tracking
        self.attempts = attempts
        self.retry_delay = retry_delay
        self._on_bytes = on_bytes
        self._write = write
        self._inflight: dict[str, _Stream] = {}

    async def ensure(
        self,
        repository: str,
        blob: Descriptor,
        stats: CopyStats,
        slots: asyncio.Semaphore | None = None,
        *,
        look: bool = True,
    ) -> None:
        """Make ``blob`` present in ``repository`` on the secondary: one HEAD (unless ``look`` is
        false: the caller knows the repository cannot hold it), then a mount from a repository known
        to hold it, then a streamed copy. Only one stream of a digest runs at a time per secondary:
        the others wait for it and mount from where it landed. ``slots`` bounds the transfers
        (mounts and streams) of one repository run; the HEAD and the waiting take no slot, so a
        shared base layer never starves a repository's own layers."""
        digest = blob.digest
        slot: AbstractAsyncContextManager[object] = slots if slots is not None else nullcontext()
        if look and await self.secondary.head_blob(repository, digest) is not None:
            stats.blobs_present += 1
            await self._write(self.tracking.add_blob_locations, self.site, repository, [digest])
            return
        while True:
            busy = self._inflight.get(digest)
            if busy is not None:
                # Another run is streaming this blob into this secondary: wait, then mount from it. If
                # that stream was too slow, so is this copy: it fails with it (issue 12, case 5).
                await busy.done.wait()
                if busy.too_slow is not None:
                    raise busy.too_slow
                continue
            async with slot:
                location = await self._mount(repository, blob, stats)
            if isinstance(location, _Mounted):
                return
            if digest not in self._inflight:  # nobody started a stream while the mounts were out
                break
        stream = self._inflight[digest] = _Stream()
        try:
            async with slot:
                await self._stream(repository, blob, stats, location)
        except TransferTooSlow as exc:
            stream.too_slow = exc
            raise
        finally:
            del self._inflight[digest]
            stream.done.set()

    async def _mount(self, repository: str, blob: Descriptor, stats: CopyStats) -> str | _Mounted | None:
        """Mount the blob from a repository of the secondary known to hold it: _MOUNTED, or the
        upload session a registry opened instead (202), or None when no source is known."""
        for source in self.tracking.blob_sources(self.site, blob.digest, exclude=repository):
            try:
                location = await self.secondary.mount_blob(repository, blob.digest, source)
            except (NotFound, RegistryRejected):
                await self._write(self.tracking.forget_blob_location, self.site, blob.digest, source)
                continue
            if location is None:
                stats.blobs_mounted += 1
                await self._write(self.tracking.add_blob_locations, self.site, repository, [blob.digest])
                return _MOUNTED
            return location  # 202: the registry opened an upload session instead; stream into it
        return None

    async def _stream(
        self, repository: str, blob: Descriptor, stats: CopyStats, location: str | None
    ) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                size = await self._stream_once(repository, blob, location)
            except NotFound:
                if blob.urls:  # a foreign layer: clients fetch it from its URLs, the primary need not hold it
                    stats.blobs_foreign += 1
                    return
                raise
            except TransferTooSlow:
                raise  # each attempt would take as long again: fail now, naming the slow site
            except _RETRYABLE:
                if attempt == self.attempts:
                    raise
                location = None  # the session saw a broken stream; open a new one
                await asyncio.sleep(self.retry_delay * 2 ** (attempt - 1))
                continue
            stats.blobs_copied += 1
            stats.bytes_copied += size if size is not None else 0
            await self._write(self.tracking.add_blob_locations, self.site, repository, [blob.digest])
            return

    async def _stream_once(self, repository: str, blob: Descriptor, location: str | None) -> int | None:
        """One streamed copy from the primary into an upload session of the secondary; its size.
        A session it opened or was given is cancelled if the copy fails (the upload cancels its own)."""
        handed = False
        try:
            async with self.primary.stream_blob(repository, blob.digest) as source:
                if 0 <= blob.size <= SMALL_BLOB_BYTES:
                    body, whole = await self._read_small(repository, blob, source)
                    handed = True  # from here the upload cancels its own session
                    await self.secondary.upload_blob(repository, blob.digest, whole, body, location=location)
                    return whole
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

    async def _read_small(
        self, repository: str, blob: Descriptor, source: BlobStream
    ) -> tuple[AsyncIterator[bytes], int]:
        """A small blob (its size from the manifest), read whole from the primary before its upload: POST
        and one PUT with the bytes, two requests where PATCH then PUT take three (issue 17: a push's
        cost). Reading first means a source that breaks off or lies never leaves a session half written,
        which Distribution 2.8 refuses to cancel; the bytes held are at most SMALL_BLOB_BYTES. The spec's
        monolithic POST would be one request, but Distribution 2.8 drops its body (202, a new session)."""
        body = bytearray()
        # Hashed here (cheap at this size): content that does not match its digest opens no session,
        # where the secondary's refusal of a PUT leaves one it will not cancel.
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

        async def whole() -> AsyncIterator[bytes]:
            yield bytes(body)

        return whole(), source.size if source.size is not None else len(body)

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
            return _amended(exc, f"{self.site} could not store it: its storage may be full or unwritable")
        return exc

    async def _counted(self, repository: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if self._on_bytes is not None:
                self._on_bytes(repository, len(chunk))
            yield chunk


class _RepositoryRun:
    """One (secondary, repository) run: the manifest trees that must exist, and the tags."""

    def __init__(
        self,
        repository: str,
        primary: RegistryClient,
        secondary: RegistryClient,
        blobs: BlobCopier,
        cache: ManifestCache,
        blob_concurrency: int,
    ) -> None:
        self.repository = repository
        self.primary = primary
        self.secondary = secondary
        self.blobs = blobs
        self.cache = cache
        self.stats = CopyStats()
        self._blob_slots = asyncio.Semaphore(blob_concurrency)
        self._children: dict[str, asyncio.Future[None]] = {}
        self._blobs: dict[str, asyncio.Future[None]] = {}
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done.set_result(None)
        # The secondary does not know the repository and this engine never wrote there: nothing of
        # it can be there, so nothing is looked for (a HEAD per manifest and blob saved).
        self.fresh = False
        # A deep verification found a blob missing under tags that match: look below present manifests too.
        self.recheck = False

    async def fetch(self, digest: str) -> Manifest:
        manifest = self.cache.get(digest)
        if manifest is None:
            manifest = await self.primary.get_manifest(self.repository, digest)
            self.cache.put(manifest)
        return manifest

    async def copy_tag(self, tag: str, digest: str) -> None:
        await self.put_tag(tag, await self.copy_tree(digest))

    async def copy_tree(self, digest: str, *, look: bool = True) -> Manifest:
        """Everything below the manifest ``digest`` (it not included). ``look``: HEAD the manifest on the
        secondary first (a pushed manifest is new there: its copy looks at the blobs only)."""
        manifest = await self.fetch(digest)
        if self.fresh or not look or await self.secondary.head_manifest(self.repository, digest) is None:
            await self._copy_below(manifest)
        return manifest

    async def put_tag(self, tag: str, manifest: Manifest) -> None:
        digest = manifest.digest
        try:
            pushed = await self.secondary.put_manifest(
                self.repository, tag, manifest.content, manifest.media_type
            )
        except RegistryError as exc:
            if manifest.media_type in SCHEMA1_TYPES and (exc.status or 0) >= 500:
                # Distribution answers a bare 500 when schema 1 support is off.
                hint = "is schema 1 enabled there (compatibility.schema1.enabled)?"
                raise _amended(exc, hint, RegistryRejected) from None
            raise
        if pushed != digest:
            raise DigestMismatch(
                registry=self.secondary.name,
                operation="PUT manifest",
                repository=self.repository,
                status=None,
                code=None,
                detail=f"tag {tag}: secondary stored {pushed}, primary has {digest}",
            )
        self.stats.tags_pushed += 1

    async def _copy_below(self, manifest: Manifest) -> None:
        try:
            refs = parse_manifest(manifest.content, manifest.media_type)
        except InvalidManifest as exc:
            raise InvalidManifest(manifest.digest, f"in {self.repository}: {exc.reason}") from None
        # Wait for every sibling even when one fails: a copy must never go on writing to the
        # secondary after its run has reported. A bounded pool, so a manifest of thousands of
        # entries does not start thousands of tasks at once.
        below = [*((True, c) for c in refs.manifests), *((False, b) for b in refs.blobs)]
        for _, error in await _for_each_limited(below, self._below, METADATA_CONCURRENCY):
            raise error

    def _below(self, entry: tuple[bool, Descriptor]) -> asyncio.Future[None]:
        is_manifest, descriptor = entry
        return self._child(descriptor.digest) if is_manifest else self._blob(descriptor)

    def _child(self, digest: str) -> asyncio.Future[None]:
        task = self._children.get(digest)
        if task is None:
            task = self._children[digest] = self._shared(self._children, digest, self._copy_child(digest))
        return task

    def _shared(
        self, tasks: dict[str, asyncio.Future[None]], digest: str, work: Coroutine[object, object, None]
    ) -> asyncio.Future[None]:
        """A task that every tag of the run needing ``digest`` awaits. Once it has succeeded it is
        swapped for one shared finished future, so a run holds no task per blob or manifest done."""
        task = asyncio.ensure_future(work)

        def settle(done: asyncio.Future[None]) -> None:
            if not done.cancelled() and done.exception() is None and tasks.get(digest) is done:
                tasks[digest] = self._done

        task.add_done_callback(settle)
        return task

    async def _copy_child(self, digest: str) -> None:
        present = not self.fresh and await self.secondary.head_manifest(self.repository, digest) is not None
        if present and not self.recheck:
            return
        manifest = await self.fetch(digest)
        await self._copy_below(manifest)
        if present:
            return
        await self.secondary.put_manifest(self.repository, digest, manifest.content, manifest.media_type)
        self.stats.manifests_pushed += 1

    async def recheck_tag(self, digest: str) -> None:
        """Put back whatever is missing below a tag that already matches (HEAD every blob)."""
        await self._copy_below(await self.fetch(digest))

    def _blob(self, blob: Descriptor) -> asyncio.Future[None]:
        # Tags of one repository share layers: each blob is looked at once per run, not once per tag.
        task = self._blobs.get(blob.digest)
        if task is None:
            task = self._blobs[blob.digest] = self._shared(
                self._blobs,
                blob.digest,
                self.blobs.ensure(self.repository, blob, self.stats, self._blob_slots, look=not self.fresh),
            )
        return task

    async def replicated_manifests(self, tags: Mapping[str, str]) -> list[str]:
        """Every manifest the primary's tags reach (indexes, their children), read through the cache:
        the subjects whose referrers travel too."""
        seen: dict[str, None] = {}
        stack = sorted(set(tags.values()), reverse=True)
        while stack:
            digest = stack.pop()
            if digest in seen:
                continue
            seen[digest] = None
            manifest = await self.fetch(digest)
            refs = parse_manifest(manifest.content, manifest.media_type)
            stack.extend(child.digest for child in reversed(refs.manifests))
        return list(seen)


async def repository_size(
    view: PrimaryRepository, primary: RegistryClient, cache: ManifestCache
) -> int | None:
    """Bytes the primary's tags reach, each distinct blob and manifest counted once (as a registry stores
    them). None if a manifest cannot be read: the size is shown to operators, never worth failing a sync."""
    seen: set[str] = set()
    blobs: dict[str, int] = {}
    manifest_bytes = 0
    stack = [*{info.digest for info in view.tags.values()}, *view.reached]
    try:
        while stack:
            digest = stack.pop()
            if digest in seen:
                continue
            seen.add(digest)
            manifest = cache.get(digest)
            if manifest is None:
                manifest = await primary.get_manifest(view.name, digest)
                cache.put(manifest)
            manifest_bytes += len(manifest.content)
            refs = parse_manifest(manifest.content, manifest.media_type)
            stack.extend(child.digest for child in refs.manifests)
            blobs.update((blob.digest, max(blob.size, 0)) for blob in refs.blobs)
    except (RegistryError, InvalidManifest):
        return None
    return manifest_bytes + sum(blobs.values())


@dataclass(frozen=True)
class CopyPlan:
    """What the push events of one repository name: each tag once, in the order of its latest push,
    with that push's digest, then the manifests pushed by digest alone that no named tag is."""

    tags: tuple[tuple[str, str], ...]
    digests: tuple[str, ...]

    @classmethod
    def from_pushes(cls, pushes: Iterable[tuple[str | None, str]]) -> CopyPlan:
        latest: dict[str, str] = {}
        by_digest: dict[str, None] = {}
        for tag, digest in pushes:
            if tag is None:
                by_digest[digest] = None
            else:
                latest.pop(tag, None)  # a later push of the tag wins, and takes its place in the order
                latest[tag] = digest
        tagged = set(latest.values())
        return cls(tuple(latest.items()), tuple(d for d in by_digest if d not in tagged))


async def copy_pushed(
    repository: str,
    plan: CopyPlan,
    secondary: RegistryClient,
    blobs: BlobCopier,
    cache: ManifestCache,
    *,
    blob_concurrency: int = 4,
    tree_concurrency: int = 8,
    before_tag: Callable[[str, str], None] | None = None,
) -> CopyStats:
    """Copy what pushes named into one secondary, and nothing else: each tag's manifest tree (blobs
    HEADed on the secondary, then mounted or streamed; children by digest), then the tag, in push
    order; then each manifest pushed by digest that those trees did not reach. No tag list is read and
    no other tag is looked at, on either side. ``before_tag`` is called before each tag is written."""
    run = _RepositoryRun(repository, blobs.primary, secondary, blobs, cache, blob_concurrency)
    slots = asyncio.Semaphore(tree_concurrency)

    async def tree(digest: str) -> Manifest:
        async with slots:
            return await run.copy_tree(digest, look=False)

    # The trees of a burst's tags copy side by side; the tags go on in push order, each once its tree is in.
    trees = {digest: asyncio.ensure_future(tree(digest)) for digest in dict.fromkeys(d for _, d in plan.tags)}
    try:
        for tag, digest in plan.tags:
            manifest = await trees[digest]
            if before_tag is not None:
                before_tag(tag, digest)
            await run.put_tag(tag, manifest)
        for digest in plan.digests:
            await run._child(digest)  # a child already copied with a tag's tree is not copied again
    finally:
        # Nothing goes on writing to the secondary after this copy has reported (a failed tag stops it).
        for task in trees.values():
            task.cancel()
        await asyncio.gather(*trees.values(), return_exceptions=True)
    return run.stats


def _tag_order(tags: Iterable[str]) -> tuple[list[str], list[str]]:
    plain = sorted(t for t in tags if not t.startswith(REFERRERS_TAG_PREFIX))
    referrers = sorted(t for t in tags if t.startswith(REFERRERS_TAG_PREFIX))
    return plain, referrers


async def replicate_repository(
    view: PrimaryRepository,
    secondary: RegistryClient,
    blobs: BlobCopier,
    cache: ManifestCache,
    *,
    site: str,
    blob_concurrency: int = 4,
    tag_concurrency: int = 4,
    replicate_deletions: bool = True,
    first_run: bool = False,
    recheck_blobs: bool = False,
) -> RepositoryOutcome:
    """Make ``secondary`` hold exactly the primary's tags of one repository, with the same digests.
    ``first_run``: this engine never started a sync of it on this secondary before. ``recheck_blobs``:
    also make sure every blob below the tags that already match is there (after a deep verification
    found one missing); an ordinary run trusts a matching tag and reads nothing below it."""
    repository = view.name
    run = _RepositoryRun(repository, blobs.primary, secondary, blobs, cache, blob_concurrency)
    errors = [e if t in view.unserved else f"tag {t}: {e}" for t, e in sorted(view.tag_errors.items())]
    warnings: list[str] = []
    try:
        found = await _secondary_tags(secondary, repository)
    except RegistryError as exc:
        return RepositoryOutcome(site, repository, run.stats, [str(exc)], warnings, len(view.tags))
    current = found or {}
    run.fresh = first_run and found is None

    wanted = view.digests
    stale_copy = [t for t, d in wanted.items() if current.get(t) != d]
    for phase in _tag_order(stale_copy):
        failed = await _for_each_limited(phase, lambda t: run.copy_tag(t, wanted[t]), tag_concurrency)
        errors.extend(f"tag {t}: {e}" for t, e in failed)
    if recheck_blobs:
        run.recheck = True
        copied = set(stale_copy)
        matching = sorted(t for t in wanted if t not in copied)
        failed = await _for_each_limited(matching, lambda t: run.recheck_tag(wanted[t]), tag_concurrency)
        errors.extend(f"tag {t}: {e}" for t, e in failed)

    # OCI 1.1 referrers, tagged or not, once their subjects are in place (a no-op without the API).
    plain_tags = {t: d for t, d in wanted.items() if not t.startswith(REFERRERS_TAG_PREFIX)}
    referrers = await replicate_referrers(
        run.primary,
        secondary,
        repository,
        lambda: run.replicated_manifests(plain_tags),
        primary_tags=wanted,
        secondary_tags=current,
        ensure_manifest=run._child,
        protected=lambda ignored: _reached_by_tags(run, ignored),
        prune=replicate_deletions,
    )
    run.stats.tags_pushed += referrers.tags_pushed
    run.stats.referrers_deleted += referrers.referrers_deleted
    errors.extend(referrers.errors)
    warnings.extend(referrers.warnings)

    extra = {
        t: d
        for t, d in current.items()
        if t not in wanted and t not in view.tag_errors and t not in referrers.keep_tags
    }
    if extra and replicate_deletions:
        if not view.exists or not view.tags:
            warnings.append(
                f"primary lists no tags for {repository}; kept {len(extra)} tag(s) on {site} (deletion guard)"
            )
        else:
            await _delete_tags(run, view, errors, warnings, keep=referrers.keep_tags)

    return RepositoryOutcome(site, repository, run.stats, errors, warnings, len(wanted))


class _DeletionsHeld(Exception):
    """Something a deletion's safety rests on could not be read: nothing is deleted this run."""


@dataclass
class _SecondaryGraph:
    """What a secondary holds of one repository, read in this run on the secondary itself: every tag
    and what it points at now, and every manifest those tags reach (children of indexes, nested)."""

    tags: dict[str, str]
    children: dict[str, tuple[str, ...]]

    def reach(self, digests: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(digests)
        while stack:
            digest = stack.pop()
            if digest not in seen:
                seen.add(digest)
                stack.extend(self.children.get(digest, ()))
        return seen


async def _read_secondary_graph(run: _RepositoryRun) -> _SecondaryGraph:
    """The secondary's tags as they are now (after this run's copies) and every manifest they reach.
    Raises _DeletionsHeld naming the first thing that could not be read."""
    secondary, repository = run.secondary, run.repository
    try:
        tags = await _secondary_tags(secondary, repository, strict=True) or {}
    except RegistryError as exc:
        raise _DeletionsHeld(str(exc)) from None  # names the site, the repository and the tag
    return _SecondaryGraph(tags, await _read_children(run, set(tags.values())))


async def _read_children(run: _RepositoryRun, digests: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The child manifests of every manifest `digests` reach on the secondary, read now, nested.
    Raises _DeletionsHeld naming the first thing that could not be read."""
    secondary, repository = run.secondary, run.repository
    children: dict[str, tuple[str, ...]] = {}

    async def read(digest: str) -> None:
        manifest = await secondary.get_manifest(repository, digest)
        refs = parse_manifest(manifest.content, manifest.media_type)
        children[digest] = tuple(child.digest for child in refs.manifests)

    level = sorted(set(digests))
    while level:
        for digest, failure in await _for_each_limited(level, read, METADATA_CONCURRENCY):
            if isinstance(failure, RegistryError):  # names the site, the repository and the digest
                raise _DeletionsHeld(str(failure))
            raise _DeletionsHeld(f"{secondary.name}: manifest {repository}@{digest}: {failure}")
        level = sorted({c for d in level for c in children[d]} - children.keys())
    return children


async def _reached_by_tags(run: _RepositoryRun, ignored: Collection[str]) -> set[str]:
    """Every manifest the secondary's tags reach now, read as deletions read them, but for the `ignored`
    tags (the referrer fallback tags whose indexes the engine amends). Raises _DeletionsHeld."""
    graph = await _read_secondary_graph(run)
    return graph.reach(d for t, d in graph.tags.items() if t not in ignored)


async def _delete_tags(
    run: _RepositoryRun,
    view: PrimaryRepository,
    errors: list[str],
    warnings: list[str],
    *,
    keep: Collection[str] = (),
) -> None:
    """Remove the tags the primary no longer has. The rule (README, "Deletions"): first read, on the
    secondary and in this run, every tag there and every manifest they reach; if anything is unreadable,
    delete nothing. Then delete by tag where the registry can, else by digest, never a digest that a tag
    staying there reaches now: on Distribution a delete by digest takes every tag of that manifest."""
    repository = run.repository
    try:
        graph = await _read_secondary_graph(run)
    except _DeletionsHeld as exc:
        errors.append(f"deletions held back, cannot read {exc}; nothing is deleted in {repository} this run")
        return
    gone = {
        t: d
        for t, d in graph.tags.items()
        if t not in view.tags and t not in view.tag_errors and t not in keep  # keep: referrer fallback tags
    }
    protected = graph.reach(d for t, d in graph.tags.items() if t not in gone)
    await _delete_gone(run, graph, gone, protected, errors, warnings)


async def _delete_gone(
    run: _RepositoryRun,
    graph: _SecondaryGraph,
    gone: Mapping[str, str],
    protected: set[str],
    errors: list[str],
    warnings: list[str],
) -> None:
    """Delete the `gone` tags (tag -> digest on the secondary, read in this run), by tag where the
    registry can, else by digest, never a digest in `protected` (what the tags that stay reach now)."""
    secondary, repository, site = run.secondary, run.repository, run.blobs.site
    # Parents before children: a manifest an index reaches is deleted after the index's tag.
    for tag in sorted(gone, key=lambda t: (-len(graph.reach([gone[t]])), t)):
        digest = gone[tag]
        try:
            await secondary.delete_manifest(repository, tag)
            run.stats.tags_deleted += 1
            continue
        except NotFound:
            continue  # already gone
        except RegistryRejected as exc:
            if exc.status == 405:  # Distribution with storage.delete off answers 405 UNSUPPORTED
                errors.append(
                    f"tag {tag}: the secondary refuses deletes (405); enable storage.delete there "
                    "or set replicate_deletions = false"
                )
                return
            # 400 DIGEST_INVALID: Distribution 2.8 cannot delete a tag alone; fall through to by-digest
        except RegistryError as exc:
            errors.append(f"tag {tag}: delete: {exc}")
            protected |= graph.reach([digest])  # the tag stays: so does what it reaches
            continue
        # The registry cannot delete a tag alone (Distribution 2.8): delete the manifest by digest.
        if digest in protected:
            warnings.append(
                f"tag {tag} kept on {site}: its manifest {digest} is still used by tags that stay, "
                "and this registry can only delete by digest"
            )
            continue
        try:
            await secondary.delete_manifest(repository, digest)
            run.stats.tags_deleted += sum(1 for d in gone.values() if d == digest)
        except NotFound:
            continue
        except RegistryError as exc:
            errors.append(f"tag {tag}: delete {digest}: {exc}")
            protected |= graph.reach([digest])
