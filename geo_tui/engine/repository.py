"""What the copy of one repository works with: the primary's view of it, the manifests read, what a
run did (its stats) and how it ended (its outcome)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from geo_tui.registry import Manifest, ManifestInfo

from .failure import Failure, joined

if TYPE_CHECKING:
    from .shared_heads import SharedHeads

__all__ = [
    "REFERRERS_TAG_PREFIX",
    "CopyStats",
    "ManifestCache",
    "PrimaryRepository",
    "RepositoryOutcome",
    "repository_checksum",
]

REFERRERS_TAG_PREFIX = "sha256-"


def repository_checksum(tags: Mapping[str, str]) -> str:
    """SHA-256 over the sorted ``tag + digest`` strings, as GitLab Geo checksums a repository."""
    return hashlib.sha256("".join(sorted(t + d for t, d in tags.items())).encode()).hexdigest()


@dataclass
class CopyStats:
    """What one run did; added up per site for the summary."""

    tags_pushed: int = 0
    tags_deleted: int = 0
    manifests_pushed: int = 0
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    blobs_foreign: int = 0
    bytes_copied: int = 0
    referrers_deleted: int = 0

    def add(self, other: CopyStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def writes(self) -> int:
        return (
            self.tags_pushed
            + self.tags_deleted
            + self.manifests_pushed
            + self.blobs_copied
            + self.blobs_mounted
            + self.referrers_deleted
        )


@dataclass
class PrimaryRepository:
    """The primary's view of one repository: tag -> manifest info, read once and shared by all secondaries."""

    name: str
    exists: bool
    tags: dict[str, ManifestInfo] = field(default_factory=dict)
    tag_errors: dict[str, Failure] = field(default_factory=dict)
    # Listed, but HEAD answered 404 (a lagging replica, an eventually consistent primary): kept on
    # every secondary, and the repository fails (issue 12, case 3). Each is in tag_errors too.
    unserved: set[str] = field(default_factory=set)
    # Not read here: each secondary's run merges the two sorted listings in chunks (engine/merge.py), and
    # fills `reached` with the distinct manifests the primary's tags point at (for the size).
    streamed: bool = False
    reached: set[str] = field(default_factory=set)
    # A streamed view's HEADs of the primary's tags, shared by the secondaries' runs (shared_heads.py).
    heads: SharedHeads | None = None

    @property
    def digests(self) -> dict[str, str]:
        return {t: i.digest for t, i in self.tags.items()}


@dataclass
class RepositoryOutcome:
    site: str
    repository: str
    stats: CopyStats
    errors: list[Failure]
    warnings: list[str]
    tag_count: int

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def failure(self) -> Failure:
        """The run's failures as one (the first three, and how many more): only when not ``ok``."""
        return joined(self.errors)


class ManifestCache:
    """A bounded LRU of manifests read from the primary, keyed by digest (content addressed)."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._max = max_bytes
        self._size = 0
        self._items: OrderedDict[str, Manifest] = OrderedDict()

    def get(self, digest: str) -> Manifest | None:
        item = self._items.get(digest)
        if item is not None:
            self._items.move_to_end(digest)
        return item

    def put(self, manifest: Manifest) -> None:
        if manifest.digest in self._items or len(manifest.content) > self._max:
            return
        self._items[manifest.digest] = manifest
        self._size += len(manifest.content)
        while self._size > self._max:
            _, old = self._items.popitem(last=False)
            self._size -= len(old.content)
