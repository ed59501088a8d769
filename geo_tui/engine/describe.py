"""Words for people (log lines, failure reasons) and bounded labels for metrics."""

from __future__ import annotations

import re

from geo_tui.figures import size
from geo_tui.registry import RegistryError

from .replicate import CopyStats

__all__ = ["blame_primary", "describe_error", "describe_stats", "prefixed", "reason_class"]

_STATUS = re.compile(r": (\d{3})\b")


def reason_class(reason: str) -> str:
    """A short, bounded label for a failure reason (metrics must not grow a series per message)."""
    side = "primary" if reason.startswith("primary") else "secondary"
    status = _STATUS.search(reason)
    if status:
        return f"{side}_http_{status.group(1)}"
    for word in (
        "unreachable",
        "timed out",
        "too slow",
        "digest",
        "schema 1",
        "refuses deletes",
        "invalid manifest",
    ):
        if word in reason.lower():
            return f"{side}_{word.replace(' ', '_')}"
    return f"{side}_other"


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
