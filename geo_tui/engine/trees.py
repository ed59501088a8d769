"""The copy of manifest trees into one secondary: blobs first, then child manifests by digest (depth
first, for nested indexes), then the top manifest by tag."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping

from geo_tui.registry import (
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    Descriptor,
    DigestMismatch,
    InvalidManifest,
    Manifest,
    RegistryClient,
    RegistryError,
    RegistryRejected,
    parse_manifest,
)

from .blobs import BlobCopier, SharedReads, amended
from .pool import METADATA_CONCURRENCY, for_each_limited
from .repository import CopyStats, ManifestCache

__all__ = ["RepositoryRun"]

SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})


class RepositoryRun:
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
        # A push job's small blobs, read from the primary once for all its secondaries.
        self.reads: SharedReads | None = None

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
                raise amended(exc, hint, RegistryRejected) from None
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
        for _, error in await for_each_limited(below, self._below, METADATA_CONCURRENCY):
            raise error

    def _below(self, entry: tuple[bool, Descriptor]) -> asyncio.Future[None]:
        is_manifest, descriptor = entry
        return self.ensure_child(descriptor.digest) if is_manifest else self._blob(descriptor)

    def ensure_child(self, digest: str) -> asyncio.Future[None]:
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
                self.blobs.ensure(
                    self.repository, blob, self.stats, self._blob_slots, look=not self.fresh, reads=self.reads
                ),
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
