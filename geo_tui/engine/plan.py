"""`geo-tui sync --once --dry-run`: what a run would write, found by running the real copy code against
registries that only read.

The plan is not a second model of replication: `replicate_repository` and `BlobCopier` run as they do in
a real run, over a `PlanningSecondary` that forwards every read (tag lists, HEADs, GETs, referrers) to
the secondary and records every write (manifest PUT, blob mount, upload, DELETE) instead of sending it,
then answers later reads as if it had been sent. The primary's blobs are never downloaded: a
`PlanningPrimary` answers a blob download with its size from a HEAD. Blob locations learnt during the
plan stay in memory, and the tracking database is opened read-only (or not at all when it does not
exist yet), so the plan counts mounts and copies the same way the run that follows does.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from geo_tui.config import Config
from geo_tui.registry import (
    BlobStream,
    Descriptor,
    Manifest,
    ManifestInfo,
    NotFound,
    RegistryClient,
    is_valid_digest,
    is_valid_repository_name,
    manifest_digest,
)

from .blobs import SMALL_BLOB_BYTES
from .describe import describe_error
from .failure import failure_of
from .replicate import (
    BlobCopier,
    CopyStats,
    ManifestCache,
    PrimaryRepository,
    RepositoryOutcome,
    read_primary_repository,
    replicate_repository,
)
from .sites import build_client, build_signer
from .tracking import Tracking, tracking_database, tracking_exists

__all__ = ["PlannedWrite", "RepositoryPlan", "SitePlan", "SyncPlan", "plan_sync"]


@dataclass(frozen=True)
class PlannedWrite:
    """One request a run would send to a secondary that changes it.

    ``kind``: "manifest" (PUT by tag or digest), "mount" (POST ?mount=), "upload" (POST, then PUT
    ?digest=), "delete" (DELETE by tag or digest). ``reference`` is the tag or digest in the URL."""

    kind: str
    repository: str
    reference: str
    digest: str
    size: int = 0
    source: str | None = None  # a mount's source repository
    chunked: bool = False  # an upload sent as PATCH then PUT

    @property
    def requests(self) -> dict[str, int]:
        """The write requests it costs, by HTTP method (an upload: POST, PATCH if chunked, PUT)."""
        if self.kind == "upload":
            return {"POST": 1, "PATCH": 1, "PUT": 1} if self.chunked else {"POST": 1, "PUT": 1}
        return {"manifest": {"PUT": 1}, "mount": {"POST": 1}}.get(self.kind, {"DELETE": 1})


class _PlannedLocations:
    """BlobCopier's view of where blobs are on a site: the tracking database's, read-only, plus what
    the plan itself placed (never written back)."""

    def __init__(self, tracking: Tracking | None) -> None:
        self._tracking = tracking
        self._placed: dict[tuple[str, str], list[str]] = {}
        self._forgotten: set[tuple[str, str, str]] = set()

    def blob_sources(self, site: str, digest: str, *, exclude: str, limit: int = 3) -> list[str]:
        known = (
            self._tracking.blob_sources(site, digest, exclude=exclude, limit=limit) if self._tracking else []
        )
        placed = [r for r in self._placed.get((site, digest), []) if r != exclude]
        found = [r for r in dict.fromkeys([*known, *placed]) if (site, digest, r) not in self._forgotten]
        return found[:limit]

    def add_blob_locations(self, site: str, repository: str, digests: Iterable[str]) -> None:
        for digest in digests:
            self._placed.setdefault((site, digest), []).append(repository)

    def forget_blob_location(self, site: str, digest: str, repository: str) -> None:
        self._forgotten.add((site, digest, repository))


class _PlannedStream(BlobStream):
    """A blob download that is never made: its size, and no bytes from the registry. A small blob (the
    copy reads it whole and uploads what it read, so its size is the length read) gets that many zero
    bytes made here, at most SMALL_BLOB_BYTES; a large one is streamed and its size comes from here."""

    def __init__(self, digest: str, size: int) -> None:  # no response behind it, on purpose
        self.digest = digest
        self.size = size

    async def chunks(self, *, verify: bool = True) -> AsyncIterator[bytes]:
        size = self.size
        if size is not None and 0 < size <= SMALL_BLOB_BYTES:
            yield bytes(size)


class PlanningPrimary(RegistryClient):
    """The primary as a plan reads it: every read forwarded, blob downloads replaced by a HEAD."""

    def __init__(self, inner: RegistryClient) -> None:  # a view of `inner`: no pools of its own
        self._inner = inner
        self.name = inner.name
        self.base_url = inner.base_url
        self.reads = 0

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def catalog(self, page_size: int = 100) -> list[str]:
        self.reads += 1
        return await self._inner.catalog(page_size)

    async def list_tags(self, repository: str, page_size: int = 1000) -> list[str]:
        self.reads += 1
        return await self._inner.list_tags(repository, page_size)

    async def head_manifest(self, repository: str, reference: str) -> ManifestInfo | None:
        self.reads += 1
        return await self._inner.head_manifest(repository, reference)

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        self.reads += 1
        return await self._inner.get_manifest(repository, reference)

    async def list_referrers(
        self, repository: str, digest: str, *, artifact_type: str | None = None
    ) -> list[Descriptor] | None:
        self.reads += 1
        return await self._inner.list_referrers(repository, digest, artifact_type=artifact_type)

    async def head_blob(self, repository: str, digest: str) -> int | None:
        self.reads += 1
        return await self._inner.head_blob(repository, digest)

    @asynccontextmanager
    async def stream_blob(self, repository: str, digest: str) -> AsyncIterator[BlobStream]:
        size = await self.head_blob(repository, digest)
        if size is None:
            raise NotFound(self.name, "HEAD blob", repository, reference=digest, status=404)
        yield _PlannedStream(digest, size)


class PlanningSecondary(PlanningPrimary):
    """A secondary as a plan sees it: reads forwarded, writes recorded in ``writes`` and not sent, and
    later reads answered as if they had been."""

    def __init__(self, inner: RegistryClient) -> None:
        super().__init__(inner)
        self.writes: list[PlannedWrite] = []
        self.seen_tags: dict[tuple[str, str], str] = {}
        self._manifests: dict[tuple[str, str], Manifest] = {}
        self._blobs: dict[tuple[str, str], int] = {}

    async def head_manifest(self, repository: str, reference: str) -> ManifestInfo | None:
        planned = self._manifests.get((repository, reference))
        if planned is not None:
            return ManifestInfo(planned.digest, planned.media_type, len(planned.content))
        info = await super().head_manifest(repository, reference)
        if info is not None and not is_valid_digest(reference):
            self.seen_tags[(repository, reference)] = info.digest
        return info

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        planned = self._manifests.get((repository, reference))
        return planned if planned is not None else await super().get_manifest(repository, reference)

    async def put_manifest(self, repository: str, reference: str, content: bytes, media_type: str) -> str:
        digest = manifest_digest(content, media_type)
        manifest = Manifest(digest, media_type, bytes(content))
        self._manifests[(repository, digest)] = self._manifests[(repository, reference)] = manifest
        self.writes.append(PlannedWrite("manifest", repository, reference, digest, len(content)))
        return digest

    async def delete_manifest(self, repository: str, reference: str) -> None:
        digest = reference if is_valid_digest(reference) else self.seen_tags.get((repository, reference), "")
        self.writes.append(PlannedWrite("delete", repository, reference, digest))

    async def head_blob(self, repository: str, digest: str) -> int | None:
        planned = self._blobs.get((repository, digest))
        return planned if planned is not None else await super().head_blob(repository, digest)

    async def mount_blob(self, repository: str, digest: str, from_repository: str) -> str | None:
        self._blobs[(repository, digest)] = self._blobs.get((from_repository, digest), -1)
        self.writes.append(PlannedWrite("mount", repository, digest, digest, source=from_repository))
        return None  # a source the tracking database names is expected to hold it: 201

    async def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int | None,
        chunks: AsyncIterable[bytes],
        *,
        location: str | None = None,
        chunked: bool = False,
    ) -> None:
        async for _ in chunks:  # a planned stream has no bytes; this only closes it
            pass
        self._blobs[(repository, digest)] = size if size is not None else -1
        self.writes.append(PlannedWrite("upload", repository, digest, digest, size or 0, chunked=chunked))

    async def open_upload(self, repository: str, digest: str | None = None) -> str:
        """A plan opens no upload session: a placeholder that its upload_blob records as one upload (the
        session's POST is counted there) and its cancel_upload drops."""
        return f"planned-upload:{repository}@{digest or ''}"

    async def cancel_upload(self, repository: str, location: str) -> bool:
        """A plan opens no upload session, so it has none to cancel."""
        return True


@dataclass
class RepositoryPlan:
    """What a run would do to one repository on one site."""

    repository: str
    stats: CopyStats
    writes: list[PlannedWrite]
    tags_create: dict[str, str] = field(default_factory=dict)
    tags_move: dict[str, tuple[str, str]] = field(default_factory=dict)
    tags_delete: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def requests(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for write in self.writes:
            counts.update(write.requests)
        return counts


@dataclass
class SitePlan:
    site: str
    repositories: dict[str, RepositoryPlan] = field(default_factory=dict)
    reads: int = 0

    @property
    def stats(self) -> CopyStats:
        total = CopyStats()
        for plan in self.repositories.values():
            total.add(plan.stats)
        return total

    @property
    def requests(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for plan in self.repositories.values():
            total.update(plan.requests)
        return total


@dataclass
class SyncPlan:
    sites: dict[str, SitePlan]
    primary_reads: int

    @property
    def ok(self) -> bool:
        return not any(p.errors for s in self.sites.values() for p in s.repositories.values())


def _repository_plan(outcome: RepositoryOutcome, secondary: PlanningSecondary) -> RepositoryPlan:
    writes = [w for w in secondary.writes if w.repository == outcome.repository]
    plan = RepositoryPlan(
        outcome.repository,
        outcome.stats,
        writes,
        errors=[e.text for e in outcome.errors],
        warnings=outcome.warnings,
    )
    for write in writes:
        if write.kind == "manifest" and not is_valid_digest(write.reference):
            before = secondary.seen_tags.get((write.repository, write.reference))
            if before is None:
                plan.tags_create[write.reference] = write.digest
            else:
                plan.tags_move[write.reference] = (before, write.digest)
        elif write.kind == "delete" and not is_valid_digest(write.reference):
            plan.tags_delete[write.reference] = write.digest
    return plan


async def plan_sync(config: Config, *, sites: Sequence[str] | None = None) -> SyncPlan:
    """What `sync --once` would write to each secondary, reading only: the registries see reads, the
    tracking database is opened read-only (or not at all when it does not exist yet)."""
    names = list(sites or [s.name for s in config.secondaries])
    signer = build_signer(config.auth) if config.auth is not None else None
    engine = config.engine
    tracking = Tracking(tracking_database(engine), read_only=True) if tracking_exists(engine) else None
    locations = _PlannedLocations(tracking)
    clients = {
        s.name: build_client(s, config, signer=signer)
        for s in config.sites
        if s.role == "primary" or s.name in names
    }
    primary = PlanningPrimary(clients[config.primary.name])
    secondaries = {n: PlanningSecondary(clients[n]) for n in names}
    copiers = {n: BlobCopier(primary, secondaries[n], n, locations) for n in names}
    plans = {n: SitePlan(n) for n in names}
    cache = ManifestCache()
    wants = {s.name: s.wants for s in config.secondaries}
    try:
        repositories = [r for r in await primary.catalog() if is_valid_repository_name(r)]
        slots = asyncio.Semaphore(config.engine.repository_concurrency)

        async def one(repository: str) -> None:
            targets = [n for n in names if wants[n](repository)]
            if not targets:
                return
            async with slots:
                try:
                    view = await read_primary_repository(primary, repository)
                except Exception as exc:
                    for n in targets:
                        plan = RepositoryPlan(repository, CopyStats(), [], errors=[describe_error(exc)])
                        plans[n].repositories[repository] = plan
                    return
                await asyncio.gather(*(plan_one(n, view) for n in targets))

        async def plan_one(site: str, view: PrimaryRepository) -> None:
            secondary = secondaries[site]
            first_run = tracking.never_started(site, view.name) if tracking is not None else True
            try:
                outcome = await replicate_repository(
                    view,
                    secondary,
                    copiers[site],
                    cache,
                    site=site,
                    blob_concurrency=config.engine.blob_concurrency,
                    replicate_deletions=config.engine.replicate_deletions,
                    first_run=first_run,
                )
            except Exception as exc:  # as the engine reports a run that raised: one line, the repository's
                outcome = RepositoryOutcome(
                    site,
                    view.name,
                    CopyStats(),
                    [failure_of(exc, config.primary.name, text=describe_error(exc))],
                    [],
                    0,
                )
            outcomes.append(outcome)

        outcomes: list[RepositoryOutcome] = []
        await asyncio.gather(*(one(r) for r in repositories))
        for outcome in outcomes:  # writes of repositories planned side by side are told apart here
            plans[outcome.site].repositories[outcome.repository] = _repository_plan(
                outcome, secondaries[outcome.site]
            )
    finally:
        for client in clients.values():
            await client.aclose()
        if tracking is not None:
            tracking.close()
    for name, site_plan in plans.items():
        site_plan.reads = secondaries[name].reads
    return SyncPlan(plans, primary.reads)
