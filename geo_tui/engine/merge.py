"""The whole-repository diff as a merge of two sorted tag listings, read and compared in bounded chunks.

Distribution lists a repository's tags in lexical order (its `last=` paging rests on that order), so
the primary's and a secondary's listings are read page by page as two sorted streams and merged. Each
chunk of a few hundred tags is HEADed on both sides, what differs is copied, and the chunk is dropped:
memory does not grow with the tag count. A run holds one chunk, the tags that are on the secondary
only (the deletions to make), the referrer fallback tags, and the distinct manifests the primary's tags
point at (for the referrers and the size). Only when deletions are pending does it read what the tags
that stay point at on the secondary, and keep that as a set of digests (engine/replicate.py, the rule).

A listing out of order cannot be merged without producing a wrong diff: the run says so in a warning
and compares in memory instead (``replicate_repository``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from itertools import chain, pairwise

from geo_tui.registry import ManifestInfo, NotFound, RegistryClient, RegistryError

from .blobs import BlobCopier
from .deletions import DeletionsHeld, SecondaryGraph, delete_gone, held_back, read_children
from .failure import Failure, failure_of
from .pool import METADATA_CONCURRENCY, for_each_limited
from .referrers import is_fallback_tag, replicate_referrers
from .replicate import replicate_repository
from .repository import REFERRERS_TAG_PREFIX, ManifestCache, PrimaryRepository, RepositoryOutcome
from .shared_heads import SharedHeads
from .tags import listed_yet_absent, read_primary_repository
from .trees import RepositoryRun

__all__ = ["CHUNK", "READING_PRIMARY", "ListingNotSorted", "open_primary_repository", "replicate_merged"]

log = logging.getLogger("geo_tui.engine")

# What a run waits on while it lists and HEADs the primary: a deadline's reason says so, blaming the primary.
READING_PRIMARY = "reading the primary"

CHUNK = 500  # tags compared at a time: HEADs in flight are bounded by METADATA_CONCURRENCY anyway


class ListingNotSorted(Exception):
    """A registry listed a repository's tags out of lexical order: a merge would give a wrong diff."""


def open_primary_repository(repository: str, readers: int = 1) -> PrimaryRepository:
    """The primary's repository for a merged run of `readers` secondaries: nothing is read here, each
    secondary's run lists it (a primary that is down or does not know the repository is told by each,
    as a listing failure or an empty primary), and the runs share their HEADs of its tags."""
    return PrimaryRepository(repository, exists=True, streamed=True, heads=SharedHeads(readers))


def _ascending(tags: list[str], after: str) -> bool:
    """Whether `tags` never go back (a tag listed twice in a row is skipped by the cursor)."""
    return all(a <= b for a, b in pairwise(chain((after,), tags)))


class _Cursor:
    """One side's listing a tag at a time, holding one page, in lexical order. A listing of one page out
    of order (Distribution 2.8, which ignores `n` and `last`) is sorted here: that page is held anyway.
    Pages that go back raise ListingNotSorted."""

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self._client = client
        self._repository = repository
        self._pages = client.iter_tags(repository)
        self._page: list[str] = []
        self._at = 0
        self._last = ""
        self._started = False
        self.missing = False  # the registry does not know the repository
        self._done = False

    async def peek(self) -> str | None:
        """The next tag, or None at the end of the listing."""
        while True:
            while self._at >= len(self._page):
                if self._done or not await self._next_page():
                    self._done = True
                    return None
            tag = self._page[self._at]
            if tag != self._last:
                return tag
            self._at += 1  # listed twice: once is enough

    async def _next_page(self) -> bool:
        try:
            page = await anext(self._pages, None)
        except NotFound:
            if self._started:
                raise  # the repository went away while it was being listed: say so
            self.missing = True
            return False
        first, self._started = not self._started, True
        if page is None:
            return False
        tags = page.items
        if not _ascending(tags, self._last):
            if not (first and page.last):
                raise ListingNotSorted(
                    f"{self._client.name} lists the tags of {self._repository} out of lexical order "
                    "over more than one page"
                )
            tags.sort()
        self._page, self._at = tags, 0
        return True

    def advance(self) -> None:
        self._last = self._page[self._at]
        self._at += 1

    async def aclose(self) -> None:
        await self._pages.aclose()


_Entry = tuple[str, bool, bool]  # tag, listed by the primary, listed by the secondary


async def _merged(primary: _Cursor, secondary: _Cursor, size: int) -> AsyncIterator[list[_Entry]]:
    """The union of two sorted listings in sorted chunks of at most `size` tags."""
    chunk: list[_Entry] = []
    while True:
        ours, theirs = await primary.peek(), await secondary.peek()
        if ours is None and theirs is None:
            break
        if theirs is None or (ours is not None and ours < theirs):
            assert ours is not None
            chunk.append((ours, True, False))
            primary.advance()
        elif ours is None or theirs < ours:
            chunk.append((theirs, False, True))
            secondary.advance()
        else:
            chunk.append((ours, True, True))
            primary.advance()
            secondary.advance()
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _SecondaryUnreadable(Exception):
    """A HEAD on the secondary failed: the repository fails this run, as when its listing fails."""

    def __init__(self, error: RegistryError) -> None:
        super().__init__(str(error))
        self.error = error


# (tag -> digest on the primary, tag -> digest on the secondary, whether the run wrote any of them to the
# secondary) for one chunk
SeenHook = Callable[[dict[str, str], dict[str, str], bool], Awaitable[None]]


@dataclass
class _Merge:
    """What a merged run keeps from chunk to chunk: bounded by manifests, referrers and deletions."""

    served: int = 0  # tags the primary lists and serves
    probe: str | None = None  # the digest of its first plain tag: the referrers API probe
    fallback: dict[str, str] = field(default_factory=dict)  # its sha256-* tags (copied last)
    late: list[str] = field(default_factory=list)  # those of them to copy
    plain: set[str] = field(default_factory=set)  # distinct manifests of its other tags
    only_secondary: list[str] = field(default_factory=list)  # the deletions to make, if any
    errors: list[Failure] = field(default_factory=list)
    # Told each chunk's tags as read on the primary and as the secondary holds them after the copies
    # (the engine keeps them as the tags last seen), so nothing the size of the listing is held here.
    seen: SeenHook | None = None
    # Told what the run waits on, for a deadline's reason: reading the primary, or copying to the site.
    phase: Callable[[str], None] = lambda doing: None
    copying: str = "copying"
    heads: SharedHeads | None = None  # the primary's HEADs, shared with the other secondaries' runs


async def _compare_chunk(
    run: RepositoryRun, chunk: list[_Entry], merge: _Merge, *, tag_concurrency: int, recheck: bool
) -> None:
    """HEAD one chunk on both sides, copy what differs (fallback tags later), recheck what matches."""
    primary: dict[str, ManifestInfo] = {}
    secondary: dict[str, str] = {}
    repository = run.repository
    unserved: set[str] = set()

    async def head(entry: _Entry) -> None:
        tag, _, on_secondary = entry

        def ask() -> Awaitable[ManifestInfo | None]:
            return run.primary.head_manifest(repository, tag)

        info = await (merge.heads.head(tag, ask) if merge.heads is not None else ask())
        if info is None:  # deleted since the listing, or a replica behind: keep the copy meanwhile
            unserved.add(tag)
            return
        primary[tag] = info
        if on_secondary:
            try:
                found = await run.secondary.head_manifest(repository, tag)
            except RegistryError as exc:
                raise _SecondaryUnreadable(exc) from None
            if found is not None:  # listed, yet absent: copied like a missing tag
                secondary[tag] = found.digest

    merge.only_secondary.extend(tag for tag, on_primary, _ in chunk if not on_primary)
    listed = [entry for entry in chunk if entry[1]]
    failures = await for_each_limited(listed, head, METADATA_CONCURRENCY)
    for _, exc in failures:
        if isinstance(exc, _SecondaryUnreadable):
            raise exc.error
    failed = {entry[0]: exc for entry, exc in failures}
    for tag, _, _ in listed:  # in tag order, as the in-memory run reports them
        if tag in failed:
            merge.errors.append(failure_of(failed[tag], run.primary.name).within(f"tag {tag}: "))
        elif tag in unserved:
            text = f"primary lists tag {tag} but cannot serve it (HEAD answered 404)"
            merge.errors.append(Failure("primary", "unserved", text, 404))
    stale: list[str] = []
    for tag, _, _ in listed:
        info = primary.get(tag)
        if info is None:
            continue
        if merge.probe is None and not is_fallback_tag(tag):
            merge.probe = info.digest
        if tag.startswith(REFERRERS_TAG_PREFIX):
            merge.fallback[tag] = info.digest
            if secondary.get(tag) != info.digest:
                merge.late.append(tag)
            continue
        merge.plain.add(info.digest)
        if secondary.get(tag) != info.digest:
            stale.append(tag)
    merge.served += len(primary)
    merge.phase(merge.copying)
    copies = await for_each_limited(stale, lambda t: run.copy_tag(t, primary[t].digest), tag_concurrency)
    merge.errors.extend(failure_of(e, run.primary.name).within(f"tag {t}: ") for t, e in copies)
    if merge.seen is not None:
        copied = set(stale).difference(t for t, _ in copies)
        seen_primary = {t: info.digest for t, info in primary.items()}
        seen_secondary = {**secondary, **{t: seen_primary[t] for t in copied}}
        await merge.seen(seen_primary, seen_secondary, bool(copied))
    if recheck:
        matching = [t for t, _, _ in listed if t in primary and secondary.get(t) == primary[t].digest]
        rechecks = await for_each_limited(
            matching, lambda t: run.recheck_tag(primary[t].digest), tag_concurrency
        )
        merge.errors.extend(failure_of(e, run.primary.name).within(f"tag {t}: ") for t, e in rechecks)


async def _merge_listings(
    run: RepositoryRun, merge: _Merge, *, first_run: bool, tag_concurrency: int, recheck: bool
) -> None:
    primary = _Cursor(run.primary, run.repository)
    secondary = _Cursor(run.secondary, run.repository)
    try:
        await secondary.peek()  # does the secondary know the repository? (nothing to look for if not)
        run.fresh = first_run and secondary.missing
        run.recheck = recheck
        async for chunk in _merged(primary, secondary, CHUNK):
            await _compare_chunk(run, chunk, merge, tag_concurrency=tag_concurrency, recheck=recheck)
            merge.phase(READING_PRIMARY)  # the next chunk: listed and HEADed on both sides
    finally:
        await primary.aclose()
        await secondary.aclose()


async def replicate_merged(
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
    seen: SeenHook | None = None,
    phase: Callable[[str], None] = lambda doing: None,
) -> RepositoryOutcome:
    """``replicate_repository`` for a streamed ``view`` (open_primary_repository): the same writes in
    the same order, with both listings merged in chunks instead of held whole. A listing out of order
    falls back to the in-memory comparison, with a warning that says so. A view read whole (not
    streamed) is compared in memory."""

    async def in_memory(whole: PrimaryRepository) -> RepositoryOutcome:
        return await replicate_repository(
            whole,
            secondary,
            blobs,
            cache,
            site=site,
            blob_concurrency=blob_concurrency,
            tag_concurrency=tag_concurrency,
            replicate_deletions=replicate_deletions,
            first_run=first_run,
            recheck_blobs=recheck_blobs,
        )

    if not view.streamed:
        return await in_memory(view)
    repository = view.name
    run = RepositoryRun(repository, blobs.primary, secondary, blobs, cache, blob_concurrency)
    merge = _Merge(seen=seen, phase=phase, copying=f"copying to {site}", heads=view.heads)
    try:
        await _merge_listings(
            run, merge, first_run=first_run, tag_concurrency=tag_concurrency, recheck=recheck_blobs
        )
    except ListingNotSorted as exc:
        note = f"{exc}; compared in memory instead"
        log.warning("%s", note)
        whole = await read_primary_repository(blobs.primary, repository)
        outcome = await in_memory(whole)
        view.reached.update(info.digest for info in whole.tags.values())
        if seen is not None and outcome.ok:  # the secondary now holds what the primary's tags name
            await seen(whole.digests, whole.digests, bool(outcome.stats.writes))
        outcome.stats.add(run.stats)  # what the merge copied before it met the disorder
        outcome.warnings.insert(0, note)
        return outcome
    except RegistryError as exc:  # a listing or a HEAD of the secondary, or a listing of the primary
        return RepositoryOutcome(
            site, repository, run.stats, [*merge.errors, failure_of(exc, run.primary.name)], [], merge.served
        )
    merge.phase(merge.copying)  # fallback tags, referrers and deletions
    errors, warnings = merge.errors, list[str]()
    failed = await for_each_limited(
        sorted(merge.late), lambda t: run.copy_tag(t, merge.fallback[t]), tag_concurrency
    )
    errors.extend(failure_of(e, run.primary.name).within(f"tag {t}: ") for t, e in failed)
    view.reached.update(merge.plain)
    view.reached.update(merge.fallback.values())

    # OCI 1.1 referrers, tagged or not, once their subjects are in place (a no-op without the API). The
    # primary's tags it looks at are its first plain tag (the probe) and its fallback tags.
    primary_tags = dict(merge.fallback)
    if merge.probe is not None:
        primary_tags[""] = merge.probe  # sorts first, and is no fallback tag
    referrers = await replicate_referrers(
        run.primary,
        secondary,
        repository,
        lambda: run.replicated_manifests({d: d for d in merge.plain}),
        primary_tags=primary_tags,
        secondary_tags=[t for t in merge.only_secondary if is_fallback_tag(t)],
        ensure_manifest=run.ensure_child,
        protected=lambda ignored: _reached_streamed(run, ignored),
        prune=replicate_deletions,
    )
    run.stats.tags_pushed += referrers.tags_pushed
    run.stats.referrers_deleted += referrers.referrers_deleted
    errors.extend(referrers.errors)
    warnings.extend(referrers.warnings)

    # view.tags holds only what pushes copied while this run read (engine/pushes.py): the primary's now,
    # though its listing, read before, did not have them
    gone = {t for t in merge.only_secondary if t not in referrers.keep_tags and t not in view.tags}
    merge.only_secondary.clear()
    if gone and replicate_deletions:
        if not merge.served:
            warnings.append(
                f"primary lists no tags for {repository}; kept {len(gone)} tag(s) on {site} (deletion guard)"
            )
        else:
            await _delete_streamed(run, gone, errors, warnings)
    return RepositoryOutcome(site, repository, run.stats, errors, warnings, merge.served)


async def _read_graph_streamed(
    run: RepositoryRun, is_gone: Callable[[str], bool]
) -> tuple[SecondaryGraph, set[str]]:
    """The secondary read now, a listing page at a time: the tags for which `is_gone` holds, with what
    they point at (the graph's tags), the distinct manifests every other tag points at (the set), and
    every manifest either reaches. Raises DeletionsHeld naming the first thing that could not be read."""
    secondary, repository = run.secondary, run.repository
    gone: dict[str, str] = {}
    stays: set[str] = set()

    async def head(tag: str) -> None:
        info = await secondary.head_manifest(repository, tag)
        if info is None:
            raise listed_yet_absent(secondary, repository, tag)
        if is_gone(tag):
            gone[tag] = info.digest
        else:
            stays.add(info.digest)

    pages = secondary.iter_tags(repository)
    first = True
    try:
        while True:
            try:
                page = await anext(pages, None)
            except NotFound:
                if not first:
                    raise
                page = None  # the registry does not know the repository: nothing stays, nothing goes
            if page is None:
                break
            first = False
            for _, exc in await for_each_limited(page.items, head, METADATA_CONCURRENCY):
                raise exc
    except RegistryError as exc:
        raise DeletionsHeld(str(exc)) from None  # names the site, the repository and the tag
    finally:
        await pages.aclose()
    return SecondaryGraph(gone, await read_children(run, stays | set(gone.values()))), stays


async def _reached_streamed(run: RepositoryRun, ignored: Collection[str]) -> set[str]:
    """Every manifest the secondary's tags but `ignored` reach now (see _reached_by_tags)."""
    graph, stays = await _read_graph_streamed(run, lambda tag: tag in ignored)
    return graph.reach(stays)


async def _delete_streamed(
    run: RepositoryRun, gone: set[str], errors: list[Failure], warnings: list[str]
) -> None:
    """The rule of _delete_tags (README, "Deletions") over a listing read a page at a time: the tags
    that stay are held only as the distinct manifests they point at."""
    try:
        graph, stays = await _read_graph_streamed(run, gone.__contains__)
    except DeletionsHeld as exc:
        errors.append(held_back(exc, run.repository))
        return
    await delete_gone(run, graph, graph.tags, graph.reach(stays), errors, warnings)
