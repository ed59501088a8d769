"""Words for people: log lines and failure reasons (the metrics' labels come from engine/failure.py)."""

from __future__ import annotations

from geo_tui.figures import size
from geo_tui.registry import RegistryError

from .replicate import CopyStats

__all__ = ["blame_primary", "describe_error", "describe_stats", "prefixed"]


def prefixed(message: str, site: str | None, repository: str | None) -> str:
    where = "/".join(p for p in (site, repository) if p)
    return f"[{where}] {message}" if where else message


def describe_error(exc: BaseException) -> str:
    """One line for a failure: registry errors say it all; anything else gets its class name."""
    text = str(exc)
    if isinstance(exc, RegistryError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def blame_primary(exc: BaseException) -> str:
    """A failure reading the primary, blamed on it once: ``primary: ...``. A registry error of a primary
    site named "primary" already starts so (its message names its site); it is not said twice."""
    text = describe_error(exc)
    if isinstance(exc, RegistryError) and exc.registry == "primary":
        return text
    return f"primary: {text}"


def describe_stats(stats: CopyStats) -> str:
    parts = [f"{stats.tags_pushed} tags"]
    if stats.manifests_pushed:
        parts.append(f"{stats.manifests_pushed} child manifests")
    parts.append(
        f"{stats.blobs_copied} blobs copied, {stats.blobs_mounted} mounted, {stats.blobs_present} present"
    )
    if stats.tags_deleted:
        parts.append(f"{stats.tags_deleted} tags deleted")
    if stats.referrers_deleted:
        parts.append(f"{stats.referrers_deleted} referrers deleted")
    parts.append(size(stats.bytes_copied))
    return ", ".join(parts)
