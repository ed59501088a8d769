"""The tags of one repository on each side: the primary's, each HEADed (kept aside when it cannot be
served), and a secondary's."""

from __future__ import annotations

from geo_tui.registry import ManifestInfo, NotFound, RegistryClient

from .failure import Failure, failure_of
from .pool import METADATA_CONCURRENCY, for_each_limited
from .repository import PrimaryRepository

__all__ = ["read_primary_repository", "read_secondary_tags", "secondary_tags"]


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
            view.tag_errors[tag] = Failure(
                "primary", "unserved", f"primary lists tag {tag} but cannot serve it (HEAD answered 404)", 404
            )

    for tag, exc in await for_each_limited(tags, head, METADATA_CONCURRENCY):
        view.tag_errors[tag] = failure_of(exc, primary.name)
    return view


def listed_yet_absent(registry: RegistryClient, repository: str, tag: str) -> NotFound:
    """The error for a tag a listing names that its HEAD then does not find: the registry contradicts
    itself, so nothing that hangs on that tag (a deletion, a verdict) may go ahead."""
    return NotFound(
        registry.name, "HEAD manifest", repository, reference=tag, status=404, detail="listed, yet absent"
    )


async def read_secondary_tags(secondary: RegistryClient, repository: str) -> dict[str, str]:
    """Tag -> digest on a secondary; an unknown repository is an empty one."""
    return await secondary_tags(secondary, repository) or {}


async def secondary_tags(
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
            raise listed_yet_absent(secondary, repository, tag)

    for _, exc in await for_each_limited(tags, head, METADATA_CONCURRENCY):
        raise exc
    return found
