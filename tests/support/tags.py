"""Tags written straight into Distribution's filesystem storage: a repository of 20,000 tags in a second,
where 20,000 manifest PUTs would take minutes. No notification is sent for them (a lost event, as far as
geo-tui can tell).

Distribution 2.8 keeps a tag as two link files holding the manifest digest:
`docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link` and
`.../tags/<tag>/index/sha256/<hex>/link`. The manifest itself must already be in the repository (pushed).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tests.support.distribution import Distribution


def tags_directory(registry: Distribution, repository: str) -> Path:
    return registry.root_dir / "docker/registry/v2/repositories" / repository / "_manifests/tags"


def write_tag_links(registry: Distribution, repository: str, tags: Iterable[str], digest: str) -> int:
    """Point each tag at `digest` (a manifest the repository holds). Returns how many were written."""
    algorithm, _, hex_digest = digest.partition(":")
    if not (
        registry.root_dir
        / "docker/registry/v2/repositories"
        / repository
        / "_manifests/revisions"
        / algorithm
        / hex_digest
        / "link"
    ).exists():
        raise AssertionError(f"{registry.name} has no manifest {digest} in {repository}: push it first")
    count = 0
    for tag in tags:
        base = tags_directory(registry, repository) / tag
        for link in (base / "current/link", base / "index" / algorithm / hex_digest / "link"):
            link.parent.mkdir(parents=True, exist_ok=True)
            link.write_text(digest)
        count += 1
    return count
