"""Deep verification: can a secondary serve every blob its tags reach, byte for byte?

A checksum over ``tag + digest`` (GitLab's) proves the tags point at the right manifests, nothing about
the layers behind them. `check_blobs` walks every manifest reachable from a set of roots on the
secondary (its tags' digests; the referrer fallback tags ``sha256-<hex>`` are tags too), then the
referrers a caller finds for the manifests walked (`Referrers`: untagged signatures and SBOMs on a registry
with the OCI 1.1 referrers API), then checks each distinct blob:

- ``deep``: a HEAD per blob: present, with the size the manifest states;
- ``content``: a GET too, hashed as it streams (memory does not grow with the blob), for every blob or a
  reproducible share of them (`sampled`).

Foreign layers (with ``urls``) are not the registry's to serve and are counted apart.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from geo_tui.registry import (
    Descriptor,
    DigestMismatch,
    InvalidManifest,
    NotFound,
    RegistryClient,
    RegistryError,
    parse_manifest,
)

from .describe import describe_error

__all__ = ["BlobReport", "HashCache", "Referrers", "VerificationDepth", "check_blobs", "sampled"]


class VerificationDepth(enum.StrEnum):
    """How much a verification proves: tags and digests, every blob present, or every blob's bytes."""

    CHECKSUM = "checksum"
    DEEP = "deep"
    CONTENT = "content"


def sampled(digest: str, fraction: float) -> bool:
    """Whether `digest` is in the hashed share: the digest is itself a uniform hash, so its leading bits
    pick a reproducible ``fraction`` of blobs, the same ones on every run and every site."""
    if fraction >= 1.0:
        return True
    hex_part = digest.partition(":")[2][:16]
    try:
        point = int(hex_part, 16) / (1 << (4 * len(hex_part)))
    except ValueError:
        return True
    return point < fraction


@dataclass
class BlobReport:
    """What one deep walk of one repository on one secondary found."""

    manifests: int = 0
    blobs: int = 0  # distinct blobs checked (HEAD)
    bytes: int = 0  # their sizes, as the manifests state them
    foreign: int = 0  # foreign layers (urls), not checked
    hashed: int = 0  # blobs downloaded and re-hashed
    hashed_bytes: int = 0
    missing: list[str] = field(default_factory=list)  # "blob sha256:..." or "manifest sha256:..."
    corrupt: list[str] = field(default_factory=list)  # digests whose bytes (or size) do not match
    errors: list[str] = field(default_factory=list)  # what could not be read: proves nothing either way

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.errors)


# Blobs already hashed on one secondary in this run, shared by its repositories: a layer many of them use
# is downloaded once (the registry stores it once). digest -> a task giving None (its bytes hash to it) or
# what is wrong with them.
HashCache = dict[str, "asyncio.Task[str | None]"]

# The referrers a site holds for the manifests walked (and theirs in turn), as digests: walked too. Raises
# RegistryError or InvalidManifest when a listing cannot be read (then the walk proves nothing).
Referrers = Callable[[Sequence[str]], Awaitable[Iterable[str]]]


async def check_blobs(
    secondary: RegistryClient,
    repository: str,
    roots: Iterable[str],
    *,
    depth: VerificationDepth,
    sample: float = 1.0,
    concurrency: int = 4,
    hashed: HashCache | None = None,
    referrers: Referrers | None = None,
) -> BlobReport:
    """Walk the manifests below ``roots`` on ``secondary``, then below the ``referrers`` of what was
    walked, and check every blob they name.

    ``concurrency`` bounds the requests in flight (the engine's blob_concurrency). ``hashed`` is shared
    by the repositories of one run on one secondary."""
    walk = _Walk(secondary, repository, depth, sample, concurrency, hashed if hashed is not None else {})
    await walk.run(roots, referrers)
    return walk.report


class _Walk:
    def __init__(
        self,
        secondary: RegistryClient,
        repository: str,
        depth: VerificationDepth,
        sample: float,
        concurrency: int,
        hashed: HashCache,
    ) -> None:
        self.secondary = secondary
        self.repository = repository
        self.depth = depth
        self.sample = sample
        self.slots = asyncio.Semaphore(concurrency)
        self.hashed = hashed
        self.report = BlobReport()
        self.blobs: dict[str, Descriptor] = {}

    async def run(self, roots: Iterable[str], referrers: Referrers | None) -> None:
        seen: set[str] = set()
        await self._walk(set(roots), seen)
        if referrers is not None and seen:
            try:
                found = set(await referrers(sorted(seen)))
            except RegistryError as exc:
                self.report.errors.append(f"referrers: {describe_error(exc)}")
            except InvalidManifest as exc:
                self.report.errors.append(f"referrers: {exc.reason}")
            else:
                await self._walk(found, seen)
        await asyncio.gather(*(self._blob(b) for b in sorted(self.blobs.values(), key=lambda b: b.digest)))

    async def _walk(self, roots: set[str], seen: set[str]) -> None:
        level = sorted(roots - seen)
        while level:
            seen.update(level)
            children = await asyncio.gather(*(self._manifest(d) for d in level))
            level = sorted({c for found in children for c in found} - seen)

    async def _manifest(self, digest: str) -> list[str]:
        """Read one manifest; note its blobs; return its child manifests."""
        try:
            async with self.slots:
                manifest = await self.secondary.get_manifest(self.repository, digest)
            refs = parse_manifest(manifest.content, manifest.media_type)
        except NotFound:
            self.report.missing.append(f"manifest {digest}")
            return []
        except DigestMismatch:
            self.report.corrupt.append(digest)
            return []
        except InvalidManifest as exc:
            self.report.errors.append(f"manifest {digest}: {exc.reason}")
            return []
        except RegistryError as exc:
            self.report.errors.append(f"manifest {digest}: {describe_error(exc)}")
            return []
        self.report.manifests += 1
        for blob in refs.blobs:
            self.blobs.setdefault(blob.digest, blob)
        return [child.digest for child in refs.manifests]

    async def _blob(self, blob: Descriptor) -> None:
        report = self.report
        if blob.urls:
            report.foreign += 1
            return
        try:
            async with self.slots:
                size = await self.secondary.head_blob(self.repository, blob.digest)
        except RegistryError as exc:
            report.errors.append(f"blob {blob.digest}: {describe_error(exc)}")
            return
        report.blobs += 1
        report.bytes += max(blob.size, 0)
        if size is None:
            report.missing.append(f"blob {blob.digest}")
            return
        if blob.size >= 0 and size != blob.size:
            report.corrupt.append(blob.digest)
            return
        if self.depth is VerificationDepth.CONTENT and sampled(blob.digest, self.sample):
            await self._hash(blob)

    async def _hash(self, blob: Descriptor) -> None:
        digest = blob.digest
        task = self.hashed.get(digest)
        if task is None:
            task = self.hashed[digest] = asyncio.ensure_future(self._download(digest))
            self.report.hashed_bytes += max(blob.size, 0)
        self.report.hashed += 1
        try:
            wrong = await asyncio.shield(task)
        except RegistryError as exc:
            self.report.errors.append(f"blob {digest}: {describe_error(exc)}")
            return
        if wrong is not None:
            self.report.corrupt.append(digest)

    async def _download(self, digest: str) -> str | None:
        """None if the bytes hash to the digest; else what is wrong. A mismatch is read twice before it
        counts: a stream broken in transit must not read as a corrupt blob."""
        detail = None
        for _ in range(2):
            try:
                async with self.slots, self.secondary.stream_blob(self.repository, digest) as stream:
                    async for _chunk in stream.chunks(verify=True):
                        pass
                return None
            except DigestMismatch as exc:
                detail = exc.detail or "content hashes to another digest"
        return detail
