"""Verification: does a secondary hold exactly the primary's tags, digest for digest?"""

from __future__ import annotations

from dataclasses import dataclass

from geo_tui.registry import RegistryClient, RegistryError

from .replicate import PrimaryRepository, read_secondary_tags, repository_checksum

__all__ = ["VerificationResult", "verify_repository"]


@dataclass(frozen=True)
class VerificationResult:
    site: str
    repository: str
    ok: bool
    primary_checksum: str | None
    secondary_checksum: str | None
    detail: str

    @property
    def mismatch(self) -> bool:
        """A real difference (as opposed to a registry that could not be read)."""
        return not self.ok and self.primary_checksum is not None and self.secondary_checksum is not None


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
    view: PrimaryRepository, secondary: RegistryClient, site: str
) -> VerificationResult:
    """Compare checksums over ``tag + digest`` on both sides (GitLab's repository checksum)."""
    if view.tag_errors:
        first = next(iter(sorted(view.tag_errors.items())))
        return VerificationResult(
            site, view.name, False, None, None, f"primary unreadable: tag {first[0]}: {first[1]}"
        )
    primary_tags = view.digests
    try:
        secondary_tags = await read_secondary_tags(secondary, view.name)
    except RegistryError as exc:
        return VerificationResult(site, view.name, False, repository_checksum(primary_tags), None, str(exc))
    ours, theirs = repository_checksum(primary_tags), repository_checksum(secondary_tags)
    if ours == theirs:
        return VerificationResult(site, view.name, True, ours, theirs, f"{len(primary_tags)} tags match")
    return VerificationResult(
        site, view.name, False, ours, theirs, describe_difference(primary_tags, secondary_tags)
    )
