"""Write geo-tui config files for tests that point at lab registries, and read what a registry holds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tomli_w

from geo_tui.lab.images import image_from_layers
from tests.support.distribution import Distribution
from tests.support.keys import TestKeyPair
from tests.support.oci import Blob, ManifestNode
from tests.support.push import RawPusher


def write_geo_config(
    directory: Path,
    primary: Distribution,
    secondaries: list[Distribution],
    key_pair: TestKeyPair,
    *,
    engine: dict[str, Any] | None = None,
    secondary_options: dict[str, dict[str, Any]] | None = None,
    primary_options: dict[str, Any] | None = None,
    notifications: dict[str, Any] | None = None,
) -> Path:
    """A config whose sites are the given lab registries, all with auth = "jwt" and the lab's key."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / "registry.key"
    key_path.write_bytes(key_pair.key_pem)
    os.chmod(key_path, 0o600)
    data: dict[str, Any] = {
        "engine": {
            "database": str(directory / "tracking.db"),
            "repository_concurrency": 4,
            "blob_concurrency": 4,
            **(engine or {}),
        },
        "auth": {
            "private_key": str(key_path),
            "issuer": primary.issuer,
            "service": primary.service,
            "token_ttl": 300,
        },
        "primary": {"name": primary.name, "registry": primary.url, "auth": "jwt", **(primary_options or {})},
        "secondaries": [
            {"name": s.name, "registry": s.url, "auth": "jwt", **(secondary_options or {}).get(s.name, {})}
            for s in secondaries
        ],
    }
    if notifications is not None:
        data["notifications"] = notifications
    path = directory / "config.toml"
    path.write_text(tomli_w.dumps(data))
    os.chmod(path, 0o600)
    return path


def tag_digests(pusher: RawPusher, repository: str) -> dict[str, str]:
    """Tag -> Docker-Content-Digest, as a registry holds them (HEAD with every manifest type accepted)."""
    result = {}
    for tag in pusher.list_tags(repository):
        response = pusher.head_manifest(repository, tag)
        assert response.status_code == 200, f"HEAD {repository}:{tag} -> {response.status_code}"
        result[tag] = response.headers["Docker-Content-Digest"]
    return result


def image_with_layers(layers: list[Blob], *, seed: str, docker: bool = False) -> ManifestNode:
    """An image made of the given layer blobs (to share base layers between repositories)."""
    return image_from_layers(layers, seed=seed, docker=docker)
