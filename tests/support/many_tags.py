"""Thousands of tags on a real registry, cheaply: tags are files in a registry's storage, so after one
manifest is pushed the rest are written straight into its tag directory (the registry must know the
manifest's digest in that repository already).

    Distribution  <root>/docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
                  (and index/sha256/<hex>/link, which only deleting a tag by digest reads)
    lab registry  <root>/repositories/<name>/_manifests/tags/<tag>
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from tests.support.distribution import RegistryProbe

__all__ = ["remove_tag", "tag_names", "write_tags"]


def tag_names(count: int, prefix: str = "build-") -> list[str]:
    """`count` tag names shaped like CI build tags."""
    return [f"{prefix}{i:07d}" for i in range(count)]


def _lab(registry: RegistryProbe) -> bool:
    return getattr(registry, "kind", "distribution") == "lab"


def _tags_dir(registry: RegistryProbe, repository: str) -> Path:
    """The directory holding `repository`'s tags in the registry's storage (the layouts above)."""
    root = Path(registry.root_dir)
    if _lab(registry):
        return root / "repositories" / repository / "_manifests" / "tags"
    return root / "docker/registry/v2/repositories" / repository / "_manifests/tags"


def remove_tag(registry: RegistryProbe, repository: str, tag: str) -> None:
    """Drop `tag` from `repository` in the registry's storage, as a deletion of it would."""
    path = _tags_dir(registry, repository) / tag
    if _lab(registry):
        path.unlink()
    else:
        shutil.rmtree(path)


def write_tags(registry: RegistryProbe, repository: str, digest: str, tags: Iterable[str]) -> int:
    """Point every tag in `tags` at `digest` in `repository`; returns how many were written."""
    written = 0
    if _lab(registry):
        directory = _tags_dir(registry, repository)
        directory.mkdir(parents=True, exist_ok=True)
        for tag in tags:
            (directory / tag).write_text(digest)
            written += 1
        return written
    algorithm, hex_digest = digest.split(":", 1)
    base = _tags_dir(registry, repository)
    link = digest.encode()
    for tag in tags:
        current = base / tag / "current"
        index = base / tag / "index" / algorithm / hex_digest
        os.makedirs(current, exist_ok=True)
        os.makedirs(index, exist_ok=True)
        (current / "link").write_bytes(link)
        (index / "link").write_bytes(link)
        written += 1
    return written
