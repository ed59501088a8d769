"""Copy one repository from the primary into one secondary, byte for byte.

The order of writes is what keeps a secondary correct at every instant, even if the process is
killed: blobs first, then child manifests by digest (depth first, for nested indexes), then the
top manifest by tag. A tag is only ever written once everything below it is in place, so a
secondary never holds a tag that points at something missing. Referrer fallback tags
(``sha256-<hex>``) go after the other tags, so referrers travel after their subject.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from geo_tui.registry import InvalidManifest, Manifest, RegistryClient, RegistryError, parse_manifest

from .blobs import SMALL_BLOB_BYTES, BlobCopier, BlobLocations, SharedReads
from .deletions import delete_tags, reached_by_tags
from .failure import failure_of
from .pool import for_each_limited
from .referrers import replicate_referrers
from .repository import (
    REFERRERS_TAG_PREFIX,
    CopyStats,
    ManifestCache,
    PrimaryRepository,
    RepositoryOutcome,
    repository_checksum,
)
from .tags import read_primary_repository, read_secondary_tags, secondary_tags
from .trees import RepositoryRun

# The names other modules import from here; each lives in the module of its idea.
__all__ = [
    "SMALL_BLOB_BYTES",
    "BlobCopier",
    "BlobLocations",
    "CopyPlan",
    "CopyStats",
    "ManifestCache",
    "PrimaryRepository",
    "RepositoryOutcome",
    "SharedReads",
    "copy_pushed",
    "read_primary_repository",
    "read_secondary_tags",
    "replicate_repository",
    "repository_checksum",
    "repository_size",
]


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
    reads: SharedReads | None = None,
) -> CopyStats:
    """Copy what pushes named into one secondary, and nothing else: each tag's manifest tree (blobs
    HEADed on the secondary, then mounted or streamed; children by digest), then the tag, in push
    order; then each manifest pushed by digest that those trees did not reach. No tag list is read and
    no other tag is looked at, on either side. ``before_tag`` is called before each tag is written;
    ``reads`` shares the primary's small blobs with the copies into the other secondaries."""
    run = RepositoryRun(repository, blobs.primary, secondary, blobs, cache, blob_concurrency)
    run.reads = reads
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
            await run.ensure_child(digest)  # a child already copied with a tag's tree is not copied again
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
    run = RepositoryRun(repository, blobs.primary, secondary, blobs, cache, blob_concurrency)
    primary = run.primary.name
    errors = [e if t in view.unserved else e.within(f"tag {t}: ") for t, e in sorted(view.tag_errors.items())]
    warnings: list[str] = []
    try:
        found = await secondary_tags(secondary, repository)
    except RegistryError as exc:
        return RepositoryOutcome(
            site, repository, run.stats, [failure_of(exc, primary)], warnings, len(view.tags)
        )
    current = found or {}
    run.fresh = first_run and found is None

    wanted = view.digests
    stale_copy = [t for t, d in wanted.items() if current.get(t) != d]
    for phase in _tag_order(stale_copy):
        failed = await for_each_limited(phase, lambda t: run.copy_tag(t, wanted[t]), tag_concurrency)
        errors.extend(failure_of(e, primary).within(f"tag {t}: ") for t, e in failed)
    if recheck_blobs:
        run.recheck = True
        copied = set(stale_copy)
        matching = sorted(t for t in wanted if t not in copied)
        failed = await for_each_limited(matching, lambda t: run.recheck_tag(wanted[t]), tag_concurrency)
        errors.extend(failure_of(e, primary).within(f"tag {t}: ") for t, e in failed)

    # OCI 1.1 referrers, tagged or not, once their subjects are in place (a no-op without the API).
    plain_tags = {t: d for t, d in wanted.items() if not t.startswith(REFERRERS_TAG_PREFIX)}
    referrers = await replicate_referrers(
        run.primary,
        secondary,
        repository,
        lambda: run.replicated_manifests(plain_tags),
        primary_tags=wanted,
        secondary_tags=current,
        ensure_manifest=run.ensure_child,
        protected=lambda ignored: reached_by_tags(run, ignored),
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
            await delete_tags(run, view, errors, warnings, keep=referrers.keep_tags)

    return RepositoryOutcome(site, repository, run.stats, errors, warnings, len(wanted))
