"""Deletions on a secondary, and what keeps them safe (README, "Deletions"): read, on the secondary and
in this run, every tag there and every manifest they reach; delete nothing if anything is unreadable;
never delete a digest that a tag staying there reaches."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from geo_tui.registry import NotFound, RegistryError, RegistryRejected, parse_manifest

from .failure import Failure, failure_of
from .pool import METADATA_CONCURRENCY, for_each_limited
from .repository import PrimaryRepository
from .tags import secondary_tags
from .trees import RepositoryRun

__all__ = [
    "DeletionsHeld",
    "SecondaryGraph",
    "delete_gone",
    "delete_tags",
    "held_back",
    "reached_by_tags",
    "read_children",
    "read_secondary_graph",
]


class DeletionsHeld(Exception):
    """Something a deletion's safety rests on could not be read: nothing is deleted this run."""


def held_back(exc: DeletionsHeld, repository: str) -> Failure:
    """The failure of a run whose deletions were held back by `exc`."""
    text = f"deletions held back, cannot read {exc}; nothing is deleted in {repository} this run"
    return Failure("secondary", "deletions_held", text)


@dataclass
class SecondaryGraph:
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


async def read_secondary_graph(run: RepositoryRun) -> SecondaryGraph:
    """The secondary's tags as they are now (after this run's copies) and every manifest they reach.
    Raises DeletionsHeld naming the first thing that could not be read."""
    secondary, repository = run.secondary, run.repository
    try:
        tags = await secondary_tags(secondary, repository, strict=True) or {}
    except RegistryError as exc:
        raise DeletionsHeld(str(exc)) from None  # names the site, the repository and the tag
    return SecondaryGraph(tags, await read_children(run, set(tags.values())))


async def read_children(run: RepositoryRun, digests: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The child manifests of every manifest `digests` reach on the secondary, read now, nested.
    Raises DeletionsHeld naming the first thing that could not be read."""
    secondary, repository = run.secondary, run.repository
    children: dict[str, tuple[str, ...]] = {}

    async def read(digest: str) -> None:
        manifest = await secondary.get_manifest(repository, digest)
        refs = parse_manifest(manifest.content, manifest.media_type)
        children[digest] = tuple(child.digest for child in refs.manifests)

    level = sorted(set(digests))
    while level:
        for digest, failure in await for_each_limited(level, read, METADATA_CONCURRENCY):
            if isinstance(failure, RegistryError):  # names the site, the repository and the digest
                raise DeletionsHeld(str(failure))
            raise DeletionsHeld(f"{secondary.name}: manifest {repository}@{digest}: {failure}")
        level = sorted({c for d in level for c in children[d]} - children.keys())
    return children


async def reached_by_tags(run: RepositoryRun, ignored: Collection[str]) -> set[str]:
    """Every manifest the secondary's tags reach now, read as deletions read them, but for the `ignored`
    tags (the referrer fallback tags whose indexes the engine amends). Raises DeletionsHeld."""
    graph = await read_secondary_graph(run)
    return graph.reach(d for t, d in graph.tags.items() if t not in ignored)


async def delete_tags(
    run: RepositoryRun,
    view: PrimaryRepository,
    errors: list[Failure],
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
        graph = await read_secondary_graph(run)
    except DeletionsHeld as exc:
        errors.append(held_back(exc, repository))
        return
    gone = {
        t: d
        for t, d in graph.tags.items()
        if t not in view.tags and t not in view.tag_errors and t not in keep  # keep: referrer fallback tags
    }
    protected = graph.reach(d for t, d in graph.tags.items() if t not in gone)
    await delete_gone(run, graph, gone, protected, errors, warnings)


async def _still_gone(
    run: RepositoryRun,
    graph: SecondaryGraph,
    gone: Mapping[str, str],
    protected: set[str],
    errors: list[Failure],
    warnings: list[str],
) -> dict[str, str]:
    """The `gone` tags that the primary still does not have, asked again tag by tag (a HEAD each) just
    before they are deleted. The listing that named them gone was read at the start of the run: a tag
    pushed since then may already be on the secondary, put there by that push's own copy (on this worker
    or another), and must not be deleted on the strength of the older listing. A tag the primary has
    again is kept; one the primary cannot answer for is kept and fails the repository. Either way, what
    a kept tag reaches on the secondary joins `protected`."""
    confirmed: dict[str, str] = {}
    back: list[str] = []

    async def ask(tag: str) -> None:
        try:
            found = await run.primary.head_manifest(run.repository, tag)
        except RegistryError as exc:
            keep(tag, exc)
            return
        if found is None:
            confirmed[tag] = gone[tag]
        else:
            back.append(tag)
            protected.update(graph.reach([gone[tag]]))

    def keep(tag: str, exc: Exception) -> None:
        prefix = f"tag {tag}: kept, the primary cannot confirm it is gone: "
        errors.append(failure_of(exc, run.primary.name).within(prefix))
        protected.update(graph.reach([gone[tag]]))

    for tag, exc in await for_each_limited(list(gone), ask, METADATA_CONCURRENCY):
        keep(tag, exc)
    for tag in sorted(back):
        warnings.append(
            f"tag {tag} kept on {run.blobs.site}: the primary has it again (pushed while this run read it)"
        )
    return confirmed


async def delete_gone(
    run: RepositoryRun,
    graph: SecondaryGraph,
    gone: Mapping[str, str],
    protected: set[str],
    errors: list[Failure],
    warnings: list[str],
) -> None:
    """Delete the `gone` tags (tag -> digest on the secondary, read in this run), by tag where the
    registry can, else by digest, never a digest in `protected` (what the tags that stay reach now)."""
    secondary, repository, site = run.secondary, run.repository, run.blobs.site
    gone = await _still_gone(run, graph, gone, protected, errors, warnings)
    deleted: list[str] = []
    # Parents before children: a manifest an index reaches is deleted after the index's tag.
    for tag in sorted(gone, key=lambda t: (-len(graph.reach([gone[t]])), t)):
        digest = gone[tag]
        try:
            await secondary.delete_manifest(repository, tag)
            run.stats.tags_deleted += 1
            deleted.append(tag)
            continue
        except NotFound:
            continue  # already gone
        except RegistryRejected as exc:
            if exc.status == 405:  # Distribution with storage.delete off answers 405 UNSUPPORTED
                text = (
                    f"tag {tag}: the secondary refuses deletes (405); enable storage.delete there "
                    "or set replicate_deletions = false"
                )
                errors.append(Failure("secondary", "refuses_deletes", text, 405))
                break
            # 400 DIGEST_INVALID: Distribution 2.8 cannot delete a tag alone; fall through to by-digest
        except RegistryError as exc:
            errors.append(failure_of(exc, run.primary.name).within(f"tag {tag}: delete: "))
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
            taken = [t for t, d in gone.items() if d == digest]
            run.stats.tags_deleted += len(taken)
            deleted.extend(taken)
        except NotFound:
            continue
        except RegistryError as exc:
            errors.append(failure_of(exc, run.primary.name).within(f"tag {tag}: delete {digest}: "))
            protected |= graph.reach([digest])
    await _pushed_again(run, deleted, errors)


async def _pushed_again(run: RepositoryRun, deleted: list[str], errors: list[Failure]) -> None:
    """Ask the primary once more for each tag just deleted: one pushed again between the question before
    the delete and the delete itself (its push's copy may have landed in between) fails the repository,
    so that the next run copies it; the run does not end synced without it."""

    async def ask(tag: str) -> None:
        if await run.primary.head_manifest(run.repository, tag) is not None:
            text = (
                f"tag {tag} was pushed to the primary again while this run deleted it on "
                f"{run.blobs.site}; the next run copies it"
            )
            errors.append(Failure("primary", "pushed_again", text))

    for tag, exc in await for_each_limited(deleted, ask, METADATA_CONCURRENCY):
        prefix = f"tag {tag}: deleted, and the primary cannot confirm it is still gone: "
        errors.append(failure_of(exc, run.primary.name).within(prefix))
