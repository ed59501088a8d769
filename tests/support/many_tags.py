"""Thousands of tags on a real registry, cheaply: tags are files in a registry's storage, so after one
manifest is pushed the rest are written straight into its tag directory (the registry must know the
manifest's digest in that repository already).

    Distribution  <root>/docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
                  (and index/sha256/<hex>/link, which only deleting a tag by digest reads)
    lab registry  <root>/repositories/<name>/_manifests/tags/<tag>
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tests.support.distribution import RegistryProbe

__all__ = ["tag_names", "write_tags"]


def tag_names(count: int, prefix: str = "build-") -> list[str]:
    """`count` tag names shaped like CI build tags."""
    return [f"{prefix}{i:07d}" for i in range(count)]


def write_tags(registry: RegistryProbe, repository: str, digest: str, tags: Iterable[str]) -> int:
    """Point every tag in `tags` at `digest` in `repository`; returns how many were written."""
    written = 0
    if getattr(registry, "kind", "distribution") == "lab":
        directory = Path(registry.root_dir) / "repositories" / repository / "_manifests" / "tags"
        directory.mkdir(parents=True, exist_ok=True)
        for tag in tags:
            (directory / tag).write_text(digest)
            written += 1
        return written
    algorithm, hex_digest = digest.split(":", 1)
    base = Path(registry.root_dir) / "docker/registry/v2/repositories" / repository / "_manifests/tags"
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
