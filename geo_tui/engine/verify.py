"""Verification: does a secondary hold exactly the primary's tags, digest for digest, and (deeper) every
blob behind them, byte for byte?

Three depths (`VerificationDepth`): ``checksum`` compares GitLab's repository checksum over ``tag + digest``
on both sides; ``deep`` also walks every manifest the secondary's tags reach and HEADs each blob;
``content`` also downloads each blob (or a reproducible share) and re-hashes it (geo_tui.engine.deep).
Every depth also checks the OCI 1.1 referrers (signatures, SBOMs) of the tagged manifests: a referrer the
primary has and the secondary cannot serve fails the repository (geo_tui.engine.referrers). A deep walk
also goes below every referrer the secondary lists for the manifests it reached, untagged ones included.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from geo_tui.figures import size
from geo_tui.registry import InvalidManifest, RegistryClient, RegistryError

from .database import Write, in_place
from .deep import BlobReport, HashCache, VerificationDepth, check_blobs
from .describe import blame_primary
from .pool import METADATA_CONCURRENCY, for_each_limited
from .referrers import (
    MissingReferrer,
    ReferrerGraph,
    is_fallback_tag,
    missing_referrers,
    read_referrer_graph,
    site_referrer_graph,
)
from .replicate import PrimaryRepository, read_primary_repository, read_secondary_tags, repository_checksum
from .tracking import Tracking, VerificationState

__all__ = ["VerificationDepth", "VerificationResult", "Verifier", "describe_results", "verify_repository"]

RETRY_FAILED_DEEP = 3600.0  # a failed scheduled deep check looks again within the hour, not a week later
# Tags that differ between the two readings of a verification, read again on both sides once the pushes
# of the repository are copied, at most: more than that is no race with a push, and fails as it is.
RECHECK_LIMIT = 100

# Re-reads the tags that differ (primary tag -> digest, secondary tag -> digest), in place.
Recheck = Callable[[dict[str, str], dict[str, str]], Awaitable[None]]


@dataclass(frozen=True)
class VerificationResult:
    site: str
    repository: str
    ok: bool
    primary_checksum: str | None
    secondary_checksum: str | None
    detail: str
    depth: VerificationDepth = VerificationDepth.CHECKSUM
    blobs: BlobReport | None = None  # deep and content: what the walk found
    # referrers (signatures, SBOMs) the primary has and the secondary cannot serve, by digest
    missing_referrers: tuple[str, ...] = ()

    @property
    def mismatch(self) -> bool:
        """A real difference of tags (as opposed to a registry that could not be read, or a blob problem)."""
        return (
            self.primary_checksum is not None
            and self.secondary_checksum is not None
            and self.primary_checksum != self.secondary_checksum
        )

    @property
    def missing(self) -> list[str]:
        return self.blobs.missing if self.blobs is not None else []

    @property
    def corrupt(self) -> list[str]:
        return self.blobs.corrupt if self.blobs is not None else []


def describe_difference(primary: dict[str, str], secondary: dict[str, str], limit: int = 5) -> str:
    missing = sorted(set(primary) - set(secondary))
    extra = sorted(set(secondary) - set(primary))
    moved = sorted(t for t in set(primary) & set(secondary) if primary[t] != secondary[t])
    parts = []
    for label, tags in (("missing", missing), ("extra", extra), ("different digest", moved)):
        if tags:
            shown = ", ".join(tags[:limit]) + (f" (+{len(tags) - limit})" if len(tags) > limit else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


async def verify_repository(
    view: PrimaryRepository,
    secondary: RegistryClient,
    site: str,
    referrers: ReferrerGraph | None = None,
) -> VerificationResult:
    """Compare checksums over ``tag + digest`` on both sides (GitLab's repository checksum), then, given
    the primary's `referrers` graph, check that the secondary serves every referrer in it: a missing
    signature fails the repository. When the primary lists referrers through its API, the fallback tags
    the engine keeps on a secondary without one are left out of the checksum (their content is
    checked as referrer sets instead)."""
    return (await _compare(view, secondary, site, referrers))[0]


async def _compare(
    view: PrimaryRepository,
    secondary: RegistryClient,
    site: str,
    referrers: ReferrerGraph | None = None,
    recheck: Recheck | None = None,
) -> tuple[VerificationResult, dict[str, str] | None]:
    """The checksum result (with the referrer check), and the secondary's tags if they could be read.
    ``recheck``: when the checksums differ, the differing tags are read again first (a push copied
    between the reading of the primary and of the secondary is no difference)."""
    if view.tag_errors:
        first = next(iter(sorted(view.tag_errors.items())))
        detail = f"primary unreadable: tag {first[0]}: {first[1]}"
        return VerificationResult(site, view.name, False, None, None, detail), None
    primary_tags = view.digests
    try:
        secondary_tags = await read_secondary_tags(secondary, view.name)
    except RegistryError as exc:
        return VerificationResult(
            site, view.name, False, repository_checksum(primary_tags), None, str(exc)
        ), None
    compared = _compared(primary_tags, secondary_tags, referrers)
    ours, theirs = repository_checksum(primary_tags), repository_checksum(compared)
    if ours != theirs and recheck is not None:
        primary_tags, secondary_tags = dict(primary_tags), dict(secondary_tags)
        await recheck(primary_tags, secondary_tags)
        compared = _compared(primary_tags, secondary_tags, referrers)
        ours, theirs = repository_checksum(primary_tags), repository_checksum(compared)
    if ours != theirs:
        detail = describe_difference(primary_tags, compared)
        return VerificationResult(site, view.name, False, ours, theirs, detail), secondary_tags
    detail = f"{len(primary_tags)} tags match"
    if referrers is not None and referrers.by_subject:
        try:
            missing = await missing_referrers(referrers, secondary, view.name)
        except (RegistryError, InvalidManifest) as exc:
            return VerificationResult(site, view.name, False, ours, None, f"referrers: {exc}"), secondary_tags
        if missing:
            shown = "; ".join(str(m) for m in missing[:3])
            more = f" (+{len(missing) - 3})" if len(missing) > 3 else ""
            failed = VerificationResult(
                site,
                view.name,
                False,
                ours,
                theirs,
                f"missing {shown}{more}",
                missing_referrers=tuple(m.digest for m in missing),
            )
            return failed, secondary_tags
        detail += f", {len(referrers.referrers)} referrers present"
    return VerificationResult(site, view.name, True, ours, theirs, detail), secondary_tags


def _compared(
    primary_tags: dict[str, str], secondary_tags: dict[str, str], referrers: ReferrerGraph | None
) -> dict[str, str]:
    """The secondary's tags the checksum covers: without the fallback tags kept for a primary with the
    referrers API."""
    if referrers is None or not referrers.api:
        return secondary_tags
    return {t: d for t, d in secondary_tags.items() if t in primary_tags or not is_fallback_tag(t)}


class Verifier:
    """Runs verifications and records them: a mismatch fails the row and queues a resync."""

    def __init__(
        self,
        tracking: Tracking,
        primary: RegistryClient,
        clients: Mapping[str, RegistryClient],
        *,
        wants: Callable[[str, str], bool],
        log: Callable[..., None],
        row_changed: Callable[[str, str], None],
        blob_concurrency: int = 4,
        deep_interval: float = 7 * 86400.0,  # 0: no schedule
        count_blobs: Callable[[str, str, int], None] | None = None,
        write: Write = in_place,
        pushes_copied: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """``pushes_copied(repository)``: returns once the pushes of ``repository`` queued or being copied
        are copied (`serve`): tags that differ are read again after it, not resynced for a race."""
        self._tracking = tracking
        self._pushes_copied = pushes_copied
        self._write = write
        self._primary = primary
        self._clients = clients
        self._wants = wants
        self._log = log
        self._row_changed = row_changed
        self._blob_concurrency = blob_concurrency
        self._deep_interval = deep_interval
        self._count_blobs = count_blobs

    async def verify(
        self,
        sites: Sequence[str],
        repositories: Sequence[str],
        concurrency: int,
        *,
        depth: VerificationDepth = VerificationDepth.CHECKSUM,
        sample: float = 1.0,
    ) -> list[VerificationResult]:
        for site in sites:
            await self._write(
                self._tracking.ensure_rows, site, [r for r in repositories if self._wants(site, r)]
            )
        results: list[VerificationResult] = []
        slots = asyncio.Semaphore(concurrency)
        hashed: dict[str, HashCache] = {site: {} for site in sites}  # one download of a blob per site

        async def one(repository: str) -> None:
            async with slots:
                targets = [s for s in sites if self._wants(s, repository)]
                results.extend(
                    await self.verify_repository(
                        repository, targets, depth=depth, sample=sample, hashed=hashed
                    )
                )

        await asyncio.gather(*(one(r) for r in repositories))
        return sorted(results, key=lambda r: (r.site, r.repository))

    async def verify_repository(
        self,
        repository: str,
        sites: Sequence[str],
        *,
        depth: VerificationDepth = VerificationDepth.CHECKSUM,
        sample: float = 1.0,
        hashed: Mapping[str, HashCache] | None = None,
    ) -> list[VerificationResult]:
        for site in sites:
            await self._write(self._tracking.mark_verification, site, repository, VerificationState.STARTED)
        try:
            view = await read_primary_repository(self._primary, repository)
            graph = await site_referrer_graph(self._primary, repository, view.digests)
        except Exception as exc:
            reason = blame_primary(exc)
            results = [VerificationResult(s, repository, False, None, None, reason, depth) for s in sites]
        else:

            async def one(site: str) -> VerificationResult:
                recheck = self._rechecker(repository, site) if self._pushes_copied is not None else None
                result, tags = await _compare(view, self._clients[site], site, graph, recheck)
                if depth is VerificationDepth.CHECKSUM:
                    return result
                if tags is None:  # nothing on the secondary could be read: no walk, and no pass
                    return dataclasses.replace(result, depth=depth)
                cache = hashed[site] if hashed is not None else {}
                return await self._deepen(result, tags, depth, sample, cache, graph)

            results = list(await asyncio.gather(*(one(s) for s in sites)))
        for result in results:
            await self._record(result)
        return results

    def _rechecker(self, repository: str, site: str) -> Recheck:
        """Read the tags that differ again on both sides, once the repository's pushes are copied: a push
        copied between the reading of the primary and of the secondary (or one whose copy was still on
        its way) is no difference, and resyncing a repository of thousands of tags for it is needless."""
        secondary = self._clients[site]

        async def recheck(primary_tags: dict[str, str], secondary_tags: dict[str, str]) -> None:
            differing = [
                t for t in {*primary_tags, *secondary_tags} if primary_tags.get(t) != secondary_tags.get(t)
            ]
            if len(differing) > RECHECK_LIMIT or self._pushes_copied is None:
                return
            await self._pushes_copied(repository)

            async def again(tag: str) -> None:
                on_primary = await self._primary.head_manifest(repository, tag)
                on_secondary = await secondary.head_manifest(repository, tag)
                # both read, or neither changes: a tag that cannot be read now stays a difference
                for tags, info in ((primary_tags, on_primary), (secondary_tags, on_secondary)):
                    if info is None:
                        tags.pop(tag, None)
                    else:
                        tags[tag] = info.digest

            await for_each_limited(sorted(differing), again, METADATA_CONCURRENCY)

        return recheck

    async def _deepen(
        self,
        result: VerificationResult,
        tags: Mapping[str, str],
        depth: VerificationDepth,
        sample: float,
        hashed: HashCache,
        graph: ReferrerGraph,
    ) -> VerificationResult:
        """Walk what the secondary's tags reach, and the referrers it lists for those manifests, and check
        its blobs; then check that it serves the primary's referrers of the untagged manifests walked (the
        children of indexes: a signature per platform), which the checksum check does not reach. The
        checksum result, made deeper."""
        secondary = self._clients[result.site]
        walked: set[str] = set()

        async def referrers(manifests: Sequence[str]) -> set[str]:
            walked.update(manifests)
            return await self.referrer_roots(secondary, result.repository, manifests)

        report = await check_blobs(
            secondary,
            result.repository,
            self.roots(tags),
            depth=depth,
            sample=sample,
            concurrency=self._blob_concurrency,
            hashed=hashed,
            referrers=referrers,
        )
        children = walked - set(tags.values()) - set(graph.referrers)
        missing = await self._missing_child_referrers(result, children, report)
        problems = [str(m) for m in missing[:3]] + describe_blob_problems(report)
        detail = "; ".join(p for p in ([] if result.ok else [result.detail]) + problems) or (
            f"{result.detail}; {describe_blobs(report, depth)}"
        )
        return VerificationResult(
            result.site,
            result.repository,
            result.ok and report.ok and not missing,
            result.primary_checksum,
            result.secondary_checksum,
            detail,
            depth,
            report,
            result.missing_referrers + tuple(m.digest for m in missing),
        )

    async def _missing_child_referrers(
        self, result: VerificationResult, children: set[str], report: BlobReport
    ) -> list[MissingReferrer]:
        """The referrers the primary lists for `children` (and theirs) that the secondary cannot serve.
        One listing per child on a primary with the referrers API; one 404 on a primary without. What
        cannot be read goes to the report's errors: it proves nothing either way."""
        if not children:
            return []
        secondary = self._clients[result.site]
        try:
            graph = await read_referrer_graph(self._primary, result.repository, sorted(children))
            return await missing_referrers(graph, secondary, result.repository)
        except (RegistryError, InvalidManifest) as exc:
            report.errors.append(f"referrers of untagged manifests: {exc}")
            return []

    @staticmethod
    def roots(tags: Mapping[str, str]) -> set[str]:
        """Where a deep walk starts: every tag's manifest, the referrer fallback tags (``sha256-<hex>``)
        among them (so a secondary without the referrers API has its referrers walked from here). The
        referrers its API lists are added by `referrer_roots` once these are walked."""
        return set(tags.values())

    @staticmethod
    async def referrer_roots(secondary: RegistryClient, repository: str, walked: Sequence[str]) -> set[str]:
        """The referrers the secondary's OCI 1.1 referrers API lists for every manifest the walk reached
        (children of indexes too), and theirs in turn: untagged signatures and SBOMs, which no tag reaches.
        The API half of `site_referrer_graph`: a site without the API answers its first listing 404 (one
        request), and its fallback tags are tags, already walked."""
        return set((await read_referrer_graph(secondary, repository, walked)).referrers)

    async def _record(self, result: VerificationResult) -> None:
        site, repository = result.site, result.repository
        state = VerificationState.SUCCEEDED if result.ok else VerificationState.FAILED
        now = self._tracking.now()
        deep = result.depth is not VerificationDepth.CHECKSUM
        next_deep_at = None  # when the schedule (if on) deep-verifies this row again
        if deep and self._deep_interval:
            next_deep_at = now + (self._deep_interval if result.ok else RETRY_FAILED_DEEP)
        await self._write(
            self._tracking.mark_verification,
            site,
            repository,
            state,
            checksum=result.secondary_checksum,
            failure=None if result.ok else result.detail,
            depth=str(result.depth),
            next_deep_at=next_deep_at,
        )
        if result.blobs is not None and self._count_blobs is not None:
            report = result.blobs
            for outcome, count in (
                ("present", report.blobs - len(report.missing) - len(report.corrupt)),
                ("missing", len(report.missing)),
                ("corrupt", len(report.corrupt)),
                ("hashed", report.hashed),
                ("foreign", report.foreign),
            ):
                if count > 0:
                    self._count_blobs(site, outcome, count)
        # "verified: ..." as before depths; a deep or content check says which it was
        depth = "" if result.depth is VerificationDepth.CHECKSUM else f" ({result.depth})"
        if result.ok:
            self._log("info", f"verified{depth}: {result.detail}", site=site, repository=repository)
        else:
            self._log(
                "error", f"verification failed{depth}: {result.detail}", site=site, repository=repository
            )
            if result.missing or result.missing_referrers:
                # The tags match, so an ordinary sync would skip them: this one looks below them too (a
                # referrer listed by a fallback tag that matches is put back by that look).
                await self._write(
                    self._tracking.request_sync, sites=[site], repositories=[repository], recheck_blobs=True
                )
            elif result.mismatch:
                await self._write(self._tracking.request_sync, sites=[site], repositories=[repository])
        self._row_changed(site, repository)


def describe_blobs(report: BlobReport, depth: VerificationDepth) -> str:
    """'5 blobs present (12.3 MiB)', with what was hashed and what was foreign."""
    text = f"{report.blobs} blobs present ({size(report.bytes)})"
    if depth is VerificationDepth.CONTENT:
        text += f", {report.hashed} hashed ({size(report.hashed_bytes)} read)"
    if report.foreign:
        text += f", {report.foreign} foreign not checked"
    return text


def describe_blob_problems(report: BlobReport) -> list[str]:
    """Each missing or corrupt blob by its full digest (operators search their storage with it)."""
    problems = [f"missing {what}" for what in report.missing]
    problems += [f"corrupt on the secondary: {digest}" for digest in report.corrupt]
    problems += report.errors[:5]
    return problems


def describe_results(results: Sequence[VerificationResult], depth: VerificationDepth) -> str:
    """One line for a verify command's answer: how many, at what depth, and the first blob problem."""
    bad = [r for r in results if not r.ok]
    text = f"verified {len(results)} ({depth}): {len(results) - len(bad)} ok, {len(bad)} failed"
    for r in bad:
        if r.missing or r.corrupt:
            what = r.missing[0] if r.missing else f"corrupt blob {r.corrupt[0]}"
            return f"{text}; {r.repository} on {r.site}: {what}"
    return text
