"""Real image content for the tests: the lab's builders (`geo_tui.lab.images`), plus what only tests need:
schema 1 manifests signed with libtrust, and OCI layouts / skopeo `dir:` directories for skopeo to read.

`RawPusher.push_tree` pushes a node (blobs, children by digest, then the node); `write_oci_layout` writes
nodes where skopeo can read them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from geo_tui.lab.images import (
    ALL_MANIFEST_TYPES,
    BUILDKIT_CACHE_CONFIG,
    CREATED,
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_CONFIG,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    REF_NAME,
    SCHEMA1,
    SCHEMA1_SIGNED,
    Blob,
    Image,
    ManifestNode,
    buildkit_cache_index,
    buildkit_cache_manifest,
    canonical_json,
    docker_image,
    docker_manifest_list,
    layer_blob,
    multi_arch,
    oci_artifact,
    oci_image,
    oci_index,
    random_bytes,
    referrers_fallback,
    referrers_tag,
    sha256_digest,
)
from tests.support.libtrust import sign_pretty, signing_key_from_seed

__all__ = [
    "ALL_MANIFEST_TYPES",
    "BUILDKIT_CACHE_CONFIG",
    "CREATED",
    "DOCKER_CONFIG",
    "DOCKER_LAYER_GZIP",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "DOCKER_TYPES",
    "EMPTY_CONFIG",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER_GZIP",
    "OCI_MANIFEST",
    "REF_NAME",
    "SCHEMA1",
    "SCHEMA1_SIGNED",
    "Blob",
    "Image",
    "ManifestNode",
    "buildkit_cache_index",
    "buildkit_cache_manifest",
    "canonical_json",
    "docker_image",
    "docker_manifest_list",
    "layer_blob",
    "multi_arch",
    "oci_artifact",
    "oci_image",
    "oci_index",
    "random_bytes",
    "referrers_fallback",
    "referrers_tag",
    "schema1_image",
    "sha256_digest",
    "write_oci_layout",
    "write_skopeo_dir",
]


def schema1_image(
    name: str,
    tag: str,
    layers: int = 2,
    *,
    seed: int | str = 0,
    layer_size: int = 2048,
    architecture: str = "amd64",
) -> ManifestNode:
    """A Docker schema 1 manifest signed with libtrust ES256 (prettyjws), bound to repository `name:tag`."""
    layer_blobs = [layer_blob(f"schema1/{seed}/{i}", layer_size, DOCKER_LAYER_GZIP) for i in range(layers)]
    ids = [
        hashlib.sha256(f"{seed}/{blob.digest}/{i}".encode()).hexdigest() for i, blob in enumerate(layer_blobs)
    ]
    history = []
    for i, layer_id in enumerate(ids):
        v1: dict[str, Any] = {"id": layer_id, "created": CREATED, "container_config": {"Cmd": [f"layer {i}"]}}
        if i:
            v1["parent"] = ids[i - 1]
        if i == len(ids) - 1:
            v1.update({"architecture": architecture, "os": "linux"})
        history.append({"v1Compatibility": json.dumps(v1, separators=(",", ":"))})
    payload = {
        "schemaVersion": 1,
        "name": name,
        "tag": tag,
        "architecture": architecture,
        # Schema 1 lists the top layer first.
        "fsLayers": [{"blobSum": blob.digest} for blob in reversed(layer_blobs)],
        "history": list(reversed(history)),
    }
    unsigned = json.dumps(payload, indent=3).encode()
    signed = sign_pretty(unsigned, signing_key_from_seed(seed))
    return ManifestNode(signed, SCHEMA1_SIGNED, blobs=layer_blobs, signed_payload=unsigned)


DOCKER_TYPES = (DOCKER_MANIFEST, DOCKER_LIST)
SKOPEO_DIR = "skopeo-dir"


def write_oci_layout(directory: Path | str, images: dict[str, ManifestNode]) -> Path:
    """Write an OCI image layout (oci-layout, index.json with ref names, blobs/sha256/) for skopeo `oci:`.

    skopeo 1.9's `oci:` source skips index.json entries with Docker media types ("no descriptor found for
    reference"), so each Docker image or list is also written as a skopeo `dir:` directory in
    `skopeo-dir/<tag>/`; `skopeo_push` uses that when it exists.
    """
    root = Path(directory)
    blob_dir = root / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    for tag, node in images.items():
        contents = [(b.digest, b.data) for b in node.all_blobs().values()]
        contents += [(n.digest, n.manifest) for n in node.walk()]
        for digest, data in contents:
            path = blob_dir / digest.removeprefix("sha256:")
            if not path.exists():
                path.write_bytes(data)
        if node.media_type in DOCKER_TYPES:
            write_skopeo_dir(root / SKOPEO_DIR / tag, node)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {**node.descriptor(), "annotations": {**(node.annotations or {}), REF_NAME: tag}}
            for tag, node in images.items()
        ],
    }
    (root / "index.json").write_text(json.dumps(index, indent=2))
    return root


def write_skopeo_dir(directory: Path | str, node: ManifestNode) -> Path:
    """Write `node` as a skopeo/containers-image `dir:` directory (any manifest type, lists with `--all`)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    (root / "version").write_text("Directory Transport Version: 1.1\n")
    (root / "manifest.json").write_bytes(node.manifest)
    for child in node.walk():
        if child is not node:
            (root / f"{child.digest.removeprefix('sha256:')}.manifest.json").write_bytes(child.manifest)
    for blob in node.all_blobs().values():
        (root / blob.digest.removeprefix("sha256:")).write_bytes(blob.data)
    return root
