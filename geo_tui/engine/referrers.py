"""OCI 1.1 referrers: what a site holds for a manifest, and keeping a secondary's set equal to the primary's.

A referrer (a signature, an SBOM) is a manifest whose ``subject`` names another manifest, usually
untagged. A registry with the referrers API (zot, Harbor 2.9+, the lab with ``referrers=True``) lists
them itself at ``GET /v2/<name>/referrers/<digest>``; one without (Distribution 2.8) holds them beside
an OCI index tagged ``sha256-<hex>`` (the fallback tag) that clients read, amend and push back
(distribution spec v1.1, "Referrers Tag Schema").

Where each case is handled:
- primary without the API: its fallback tags are ordinary tags and travel as such (replicate.py); a
  secondary with the API then lists the referrers as they land, by their ``subject``.
- primary with the API: `read_referrer_graph` finds every referrer of every replicated manifest, and
  theirs in turn; `replicate_referrers` (called by replicate.py) copies them by digest, and on a
  secondary without the API keeps its fallback tag index with `update_fallback_index`.
- verification: `site_referrer_graph` (API or fallback tags, whichever the site has) and
  `site_referrer_set` give the same sets to the checksum verify (`missing_referrers`) and to a deep walk.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from geo_tui.registry import (
    OCI_INDEX,
    Descriptor,
    InvalidManifest,
    NotFound,
    RegistryClient,
    RegistryError,
    parse_referrers,
)

from .failure import Failure, failure_of

__all__ = [
    "MAX_REFERRER_DEPTH",
    "MissingReferrer",
    "ReferrerGraph",
    "ReferrerOutcome",
    "fallback_tag",
    "is_fallback_tag",
    "missing_referrers",
    "read_referrer_graph",
    "replicate_referrers",
    "site_referrer_graph",
    "site_referrer_set",
    "update_fallback_index",
]

log = logging.getLogger("geo_tui.engine")

# Referrers of referrers of ... : a signature of an SBOM of an image is depth 2. Deeper chains are
# refused and reported rather than walked without end.
MAX_REFERRER_DEPTH = 4
_FALLBACK_TAG = re.compile(r"sha256-[0-9a-f]{64}")


def fallback_tag(digest: str) -> str:
    """The referrers fallback tag of a subject: ``<alg>-<hex>``, truncated as the spec says."""
    algorithm, _, hex_digest = digest.partition(":")
    return f"{algorithm[:32]}-{hex_digest[:64]}"


def is_fallback_tag(tag: str) -> bool:
    """Whether `tag` has the shape of a referrers fallback tag (``sha256-`` and 64 hex digits)."""
    return _FALLBACK_TAG.fullmatch(tag) is not None


@dataclass
class ReferrerGraph:
    """The referrers of a set of manifests on one site, and theirs in turn.

    ``api`` says whether the site answered the referrers API (False: it has none, and ``by_subject`` is
    empty). ``by_subject`` maps each subject that has referrers to their descriptors (with
    ``artifact_type`` and ``annotations``), in the order the site listed them. ``refused`` names the
    referrers whose own referrers were not asked for: one seen before (a cycle) or one more than
    MAX_REFERRER_DEPTH levels below a root.
    """

    api: bool
    by_subject: dict[str, list[Descriptor]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)

    @property
    def referrers(self) -> dict[str, Descriptor]:
        """Every referrer in the graph, by digest."""
        return {d.digest: d for found in self.by_subject.values() for d in found}


async def read_referrer_graph(
    client: RegistryClient,
    repository: str,
    roots: Iterable[str],
    *,
    max_depth: int = MAX_REFERRER_DEPTH,
) -> ReferrerGraph:
    """The referrers of every manifest in `roots` through `client`'s referrers API, then the referrers
    of those, up to `max_depth` levels. The first answer tells whether the site has the API at all
    (a 404: ``ReferrerGraph(api=False)``, nothing more asked). Raises RegistryError when a listing
    cannot be read: a partial graph must never be taken for the whole one."""
    level = list(dict.fromkeys(roots))
    if not level:
        return ReferrerGraph(api=False)  # nothing asked, nothing known
    graph = ReferrerGraph(api=True)
    seen: set[str] = set(level)
    asked = False
    for depth in range(max_depth + 1):
        following: list[str] = []
        for subject in level:
            found = await client.list_referrers(repository, subject)
            if found is None:
                if not asked:
                    return ReferrerGraph(api=False)
                raise NotFound(
                    registry=client.name,
                    operation="GET referrers",
                    repository=repository,
                    status=404,
                    code=None,
                    detail=f"the referrers API stopped answering for {subject}",
                )
            asked = True
            if not found:
                continue
            graph.by_subject[subject] = found
            for referrer in found:
                if referrer.digest in seen:
                    graph.refused.append(f"{referrer.digest} (a manifest already walked: a cycle)")
                    continue
                seen.add(referrer.digest)
                following.append(referrer.digest)
        if not following:
            return graph
        if depth == max_depth:
            graph.refused.extend(f"{d} (more than {max_depth} levels of referrers deep)" for d in following)
            return graph
        level = following
    return graph


async def site_referrer_set(
    client: RegistryClient, repository: str, subject: str, *, api: bool
) -> dict[str, Descriptor]:
    """The referrers of `subject` that a site holds, by digest: through its referrers API when `api`,
    else the entries of its fallback tag index (none when the tag is absent). Raises RegistryError
    when it cannot be read."""
    if api:
        found = await client.list_referrers(repository, subject)
        return {d.digest: d for d in found or []}
    try:
        index = await client.get_manifest(repository, fallback_tag(subject))
    except NotFound:
        return {}
    try:
        return {d.digest: d for d in parse_referrers(index.content)}
    except InvalidManifest as exc:
        raise InvalidManifest(exc.digest, f"fallback tag {fallback_tag(subject)}: {exc.reason}") from None


def _descriptor_json(descriptor: Descriptor) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "mediaType": descriptor.media_type,
        "digest": descriptor.digest,
        "size": descriptor.size,
    }
    if descriptor.artifact_type:
        entry["artifactType"] = descriptor.artifact_type
    if descriptor.annotations:
        entry["annotations"] = dict(descriptor.annotations)
    return entry


async def update_fallback_index(
    secondary: RegistryClient,
    repository: str,
    subject: str,
    referrers: Iterable[Descriptor],
    *,
    prune: bool,
) -> tuple[bool, list[str]]:
    """Keep the fallback tag index of `subject` on a secondary without the referrers API as the spec
    says: read it (absent: empty), add a descriptor (with artifactType and annotations) for each of
    `referrers` it lacks, drop the entries not among them if `prune`, and push it back if it changed.
    Entries already there are kept byte for byte. Returns whether it pushed, and the digests of the
    entries it dropped. Raises RegistryError, or InvalidManifest when the tag holds something that is
    not an index (then it is left alone)."""
    tag = fallback_tag(subject)
    try:
        current = await secondary.get_manifest(repository, tag)
    except NotFound:
        current = None
    entries: list[Any] = []
    if current is not None:
        parse_referrers(current.content)  # refuses what is not an index of descriptors
        entries = list(json.loads(current.content)["manifests"])
    wanted = {d.digest: d for d in referrers}
    kept = [e for e in entries if not prune or e.get("digest") in wanted]
    dropped = [str(e.get("digest")) for e in entries if e not in kept]
    have = {e.get("digest") for e in kept}
    added = [_descriptor_json(d) for digest, d in wanted.items() if digest not in have]
    if not added and not dropped:
        return False, []
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": kept + added}
    await secondary.put_manifest(repository, tag, json.dumps(index, indent=2).encode(), OCI_INDEX)
    return True, dropped


@dataclass
class ReferrerOutcome:
    """What `replicate_referrers` did and found: the fallback tags it keeps on the secondary (the tag
    diff must not delete them), errors, warnings, how many fallback tags it pushed and how many
    referrers it deleted."""

    keep_tags: set[str] = field(default_factory=set)
    errors: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tags_pushed: int = 0
    referrers_deleted: int = 0


async def replicate_referrers(
    primary: RegistryClient,
    secondary: RegistryClient,
    repository: str,
    manifests: Callable[[], Awaitable[list[str]]],
    *,
    primary_tags: Mapping[str, str],
    secondary_tags: Iterable[str],
    ensure_manifest: Callable[[str], Awaitable[None]],
    protected: Callable[[set[str]], Awaitable[set[str]]],
    prune: bool,
) -> ReferrerOutcome:
    """Copy every referrer of the replicated manifests (``await manifests()``: tagged or not, asked for
    only once the primary has answered the referrers API) from a primary with the referrers API, and
    the referrers of those. `ensure_manifest(digest)` puts one manifest and what
    it needs on the secondary (a HEAD first). A secondary with the API then lists them; one without gets
    each subject's fallback tag index kept with `update_fallback_index` (`prune`: drop referrers the
    primary no longer lists), except where the primary holds that fallback tag itself and it travels as
    a tag. A primary without the API changes nothing here: its fallback tags are plain tags.

    With `prune`, a referrer the secondary lists (through its API, or in a fallback index) that is no
    longer in the primary's graph is deleted by digest from the secondary, only when the primary
    answers 404 for that digest (a manifest it still holds, listed or not, stays) and no tag of the
    secondary reaches it (`protected(ignored_tags)`: the manifests the secondary's tags reach, but for
    the fallback tags kept here, whose indexes are this engine's to amend); anything that cannot be
    read keeps it.
    """
    outcome = ReferrerOutcome()
    fallback_shaped = {t for t in secondary_tags if is_fallback_tag(t) and t not in primary_tags}
    probe = next((d for t, d in sorted(primary_tags.items()) if not is_fallback_tag(t)), None)
    if probe is None:
        return outcome
    try:
        if await primary.list_referrers(repository, probe) is None:
            return outcome  # no API on the primary: its fallback tags are plain tags
        replicated = await manifests()
        graph = await read_referrer_graph(primary, repository, replicated)
    except (RegistryError, InvalidManifest) as exc:
        outcome.keep_tags = fallback_shaped  # could not read the primary: keep whatever is there
        outcome.errors.append(failure_of(exc, primary.name).within("referrers: "))
        return outcome
    if not graph.api:
        return outcome
    # From here the fallback tags on the secondary are this engine's to keep, never the tag diff's.
    outcome.keep_tags = fallback_shaped
    outcome.warnings.extend(f"referrers of {r} not followed" for r in graph.refused)
    # Fallback indexes on the secondary whose subject the primary still has, with no referrer left.
    emptied: dict[str, list[Descriptor]] = {}
    if prune:
        emptied = {d: [] for d in replicated if fallback_tag(d) in fallback_shaped}
    wanted: dict[str, list[Descriptor]] = {**emptied, **graph.by_subject}
    if not graph.by_subject and not emptied:
        return outcome
    referrers = graph.referrers
    for digest in referrers:
        try:
            await ensure_manifest(digest)
        except Exception as exc:  # reported per referrer, like tags
            outcome.errors.append(failure_of(exc, primary.name).within(f"referrer {digest}: "))
    first = next(iter(wanted))
    try:
        secondary_api = await secondary.list_referrers(repository, first) is not None
    except RegistryError as exc:
        outcome.errors.append(failure_of(exc, primary.name).within("referrers on the secondary: "))
        return outcome
    stale: set[str] = set()  # listed on the secondary, gone from the primary's graph
    keep = set(referrers) | set(replicated)
    if secondary_api:
        if prune:
            for subject in [*replicated, *referrers]:
                try:
                    listed = await secondary.list_referrers(repository, subject) or []
                except RegistryError as exc:
                    outcome.errors.append(
                        failure_of(exc, primary.name).within(f"referrers of {subject} on the secondary: ")
                    )
                    return outcome  # nothing deleted on a listing that could not be read whole
                stale.update(d.digest for d in listed if d.digest not in keep)
    else:
        for subject, found in wanted.items():
            if fallback_tag(subject) in primary_tags:
                continue  # the primary keeps this fallback tag itself: it was copied as a tag
            try:
                pushed, dropped = await update_fallback_index(
                    secondary, repository, subject, found, prune=prune
                )
            except (RegistryError, InvalidManifest) as exc:
                outcome.errors.append(
                    failure_of(exc, primary.name).within(f"fallback tag {fallback_tag(subject)}: ")
                )
                continue
            outcome.tags_pushed += pushed
            stale.update(d for d in dropped if d not in keep)
    if stale and prune and not outcome.errors:
        await _delete_stale_referrers(primary, secondary, repository, stale, protected, outcome)
    return outcome


async def _delete_stale_referrers(
    primary: RegistryClient,
    secondary: RegistryClient,
    repository: str,
    stale: set[str],
    protected: Callable[[set[str]], Awaitable[set[str]]],
    outcome: ReferrerOutcome,
) -> None:
    """Delete by digest the referrers the primary no longer has (see `replicate_referrers`)."""
    try:
        reached = await protected(outcome.keep_tags)
    except Exception as exc:  # the rule of deletions: nothing is deleted on what could not be read
        outcome.warnings.append(f"referrer deletions held back: {exc}")
        return
    for digest in sorted(stale - reached):
        try:
            if await primary.head_manifest(repository, digest) is not None:
                continue  # the primary still holds it: kept, listed or not
        except RegistryError as exc:
            outcome.warnings.append(f"referrer {digest} kept: the primary could not tell ({exc})")
            continue
        try:
            await secondary.delete_manifest(repository, digest)
        except NotFound:
            continue
        except RegistryError as exc:
            outcome.warnings.append(f"referrer {digest} gone from the primary, kept on the secondary: {exc}")
            continue
        outcome.referrers_deleted += 1


@dataclass(frozen=True)
class MissingReferrer:
    """A referrer the primary has and a secondary cannot serve."""

    subject: str
    digest: str
    artifact_type: str | None
    why: str  # "not listed" | "listed, manifest missing"

    def __str__(self) -> str:
        kind = f" ({self.artifact_type})" if self.artifact_type else ""
        return f"referrer {self.digest}{kind} of {self.subject}: {self.why}"


async def site_referrer_graph(
    client: RegistryClient,
    repository: str,
    tags: Mapping[str, str],
    roots: Iterable[str] | None = None,
) -> ReferrerGraph:
    """The referrers a site holds for `roots` (by default its tagged manifests, fallback tags aside),
    and theirs in turn: through its referrers API if it has one, else from its fallback tags (`tags`,
    the site's tag -> digest, says which exist; each is read as an index of referrers). For the
    primary in verification, and for a deep walk of either side. Raises RegistryError or
    InvalidManifest when a listing or a fallback index cannot be read."""
    if roots is None:
        roots = [d for t, d in tags.items() if not is_fallback_tag(t)]
    roots = list(dict.fromkeys(roots))
    graph = await read_referrer_graph(client, repository, roots)
    if graph.api:
        return graph
    seen = set(roots)
    level = roots
    for _ in range(MAX_REFERRER_DEPTH + 1):
        following: list[str] = []
        for subject in level:
            if fallback_tag(subject) not in tags:
                continue
            found = await site_referrer_set(client, repository, subject, api=False)
            if found:
                graph.by_subject[subject] = list(found.values())
                following.extend(d for d in found if d not in seen)
                seen.update(found)
        level = following
    return graph


async def missing_referrers(
    graph: ReferrerGraph, secondary: RegistryClient, repository: str
) -> list[MissingReferrer]:
    """The referrers in the primary's `graph` that `secondary` cannot serve: not in its referrer set
    of the subject (its API listing, else its fallback tag index), or listed there while the manifest
    itself is gone. Raises RegistryError when the secondary cannot be read."""
    if not graph.by_subject:
        return []
    first = next(iter(graph.by_subject))
    api = await secondary.list_referrers(repository, first) is not None
    missing: list[MissingReferrer] = []
    for subject, found in graph.by_subject.items():
        held = await site_referrer_set(secondary, repository, subject, api=api)
        for referrer in found:
            if referrer.digest not in held:
                why = "not listed"
            elif not api and await secondary.head_manifest(repository, referrer.digest) is None:
                why = "listed, manifest missing"
            else:
                continue
            missing.append(MissingReferrer(subject, referrer.digest, referrer.artifact_type, why))
    return missing
