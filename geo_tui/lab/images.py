"""Real image content, built offline and deterministically from a seed: the demo's workload and the tests'.

Everything is a `ManifestNode`: the exact manifest bytes, their media type, the blobs the manifest names
directly and the child manifests it names (an index's entries). Push a node's blobs and children (by
digest) before the node itself: `ManifestNode.walk()` yields them in that order.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
BUILDKIT_CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"

#: Every manifest media type, for `Accept` (Distribution answers another form to a narrower list).
ALL_MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST, SCHEMA1_SIGNED, SCHEMA1)

REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "2024-01-01T00:00:00Z"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True, eq=False)
class Blob:
    """Content-addressed bytes with the media type a manifest gives them; `diff_id` for layers."""

    data: bytes
    media_type: str
    diff_id: str | None = None
    annotations: dict[str, str] | None = None

    @cached_property
    def digest(self) -> str:
        return sha256_digest(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        desc: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            desc["annotations"] = dict(self.annotations)
        return {**desc, **extra}


@dataclass(eq=False)
class ManifestNode:
    """A manifest as pushed: exact bytes, media type, its direct blobs and child manifests."""

    manifest: bytes
    media_type: str
    blobs: list[Blob] = field(default_factory=list)
    children: list[ManifestNode] = field(default_factory=list)
    platform: dict[str, str] | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    signed_payload: bytes | None = None  # schema 1 only: the JWS payload, which is what the digest covers

    @cached_property
    def digest(self) -> str:
        # Distribution 2.8 stores a schema 1 manifest without its signatures (re-signing it on every GET with
        # its own key), so its digest is that of the payload, not of the pushed bytes.
        return sha256_digest(self.signed_payload if self.signed_payload is not None else self.manifest)

    @property
    def size(self) -> int:
        return len(self.manifest)

    @property
    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.manifest)
        return parsed

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        desc: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            desc["platform"] = dict(self.platform)
        if self.artifact_type:
            desc["artifactType"] = self.artifact_type
        if self.annotations:
            desc["annotations"] = dict(self.annotations)
        return {**desc, **extra}

    def walk(self) -> Iterator[ManifestNode]:
        """Every node of the tree, children before parents (the order they must be pushed in)."""
        for child in self.children:
            yield from child.walk()
        yield self

    def all_blobs(self) -> dict[str, Blob]:
        """Every blob of the tree, by digest."""
        return {blob.digest: blob for node in self.walk() for blob in node.blobs}

    def all_manifests(self) -> dict[str, ManifestNode]:
        return {node.digest: node for node in self.walk()}


Image = ManifestNode


def random_bytes(seed: int | str, size: int) -> bytes:
    """`size` pseudo-random (so incompressible) bytes, the same for the same seed."""
    return random.Random(f"geo-tui-{seed}").randbytes(size)


def layer_blob(
    seed: int | str, size: int = 4096, media_type: str = OCI_LAYER_GZIP, *, compresslevel: int = 9
) -> Blob:
    """A gzip'd tar holding one file of `size` pseudo-random bytes; reproducible byte for byte.

    Random bytes do not compress: `compresslevel=0` (stored) makes the same kind of layer ~30x faster."""
    content = random_bytes(seed, size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(f"data/layer-{seed}.bin")
        info.size, info.mtime, info.mode = len(content), 1704067200, 0o644
        tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    return Blob(
        gzip.compress(tar_bytes, compresslevel=compresslevel, mtime=0),
        media_type,
        diff_id=sha256_digest(tar_bytes),
    )


def _platform(os: str, architecture: str, variant: str | None) -> dict[str, str]:
    platform = {"architecture": architecture, "os": os}
    if variant:
        platform["variant"] = variant
    return platform


def _image(
    seed: int | str,
    *,
    docker: bool,
    layers: int,
    layer_size: int,
    architecture: str,
    os: str,
    variant: str | None,
    labels: dict[str, str] | None,
    annotations: dict[str, str] | None = None,
) -> ManifestNode:
    layer_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
    layer_blobs = [layer_blob(f"{seed}/{architecture}/{i}", layer_size, layer_type) for i in range(layers)]
    return image_from_layers(
        layer_blobs,
        seed=seed,
        docker=docker,
        architecture=architecture,
        os=os,
        variant=variant,
        labels=labels,
        annotations=annotations,
    )


def image_from_layers(
    layer_blobs: list[Blob],
    *,
    seed: int | str,
    docker: bool = False,
    architecture: str = "amd64",
    os: str = "linux",
    variant: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> ManifestNode:
    """An image (Docker schema 2 or OCI) of the given layers: share base layers between images this way."""
    config: dict[str, Any] = {
        "architecture": architecture,
        "os": os,
        "created": CREATED,
        "config": {"Labels": {"geo-tui.seed": str(seed), **(labels or {})}},
        "rootfs": {"type": "layers", "diff_ids": [blob.diff_id for blob in layer_blobs]},
        "history": [
            {"created": CREATED, "created_by": f"geo-tui lab layer {i}"} for i in range(len(layer_blobs))
        ],
    }
    if variant:
        config["variant"] = variant
    config_blob = Blob(canonical_json(config), DOCKER_CONFIG if docker else OCI_CONFIG)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [blob.descriptor() for blob in layer_blobs],
    }
    if annotations:
        manifest["annotations"] = annotations
    return ManifestNode(
        manifest=json.dumps(manifest, indent=3).encode(),
        media_type=manifest["mediaType"],
        blobs=[config_blob, *layer_blobs],
        platform=_platform(os, architecture, variant),
    )


def docker_image(
    seed: int | str = 0,
    *,
    layers: int = 2,
    layer_size: int = 4096,
    architecture: str = "amd64",
    os: str = "linux",
    variant: str | None = None,
    labels: dict[str, str] | None = None,
) -> ManifestNode:
    """A Docker schema 2 image (manifest v2, container config, gzip layers)."""
    return _image(
        seed,
        docker=True,
        layers=layers,
        layer_size=layer_size,
        architecture=architecture,
        os=os,
        variant=variant,
        labels=labels,
    )


def oci_image(
    seed: int | str = 0,
    *,
    layers: int = 2,
    layer_size: int = 4096,
    architecture: str = "amd64",
    os: str = "linux",
    variant: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> ManifestNode:
    """An OCI image (image manifest, image config, tar+gzip layers)."""
    return _image(
        seed,
        docker=False,
        layers=layers,
        layer_size=layer_size,
        architecture=architecture,
        os=os,
        variant=variant,
        labels=labels,
        annotations=annotations,
    )


def _index(media_type: str, children: list[ManifestNode], extra: dict[str, Any]) -> ManifestNode:
    body = {"schemaVersion": 2, "mediaType": media_type, "manifests": [c.descriptor() for c in children]}
    return ManifestNode(json.dumps({**body, **extra}, indent=3).encode(), media_type, children=list(children))


def docker_manifest_list(images: list[ManifestNode]) -> ManifestNode:
    """A Docker manifest list of single-platform images (each descriptor carries its platform)."""
    return _index(DOCKER_LIST, images, {})


def oci_index(
    children: list[ManifestNode],
    *,
    annotations: dict[str, str] | None = None,
    artifact_type: str | None = None,
) -> ManifestNode:
    """An OCI image index; children may be images, artifacts or other indexes (nesting is allowed)."""
    extra: dict[str, Any] = {}
    if artifact_type:
        extra["artifactType"] = artifact_type
    if annotations:
        extra["annotations"] = annotations
    return _index(OCI_INDEX, children, extra)


def multi_arch(
    seed: int | str = 0,
    platforms: tuple[tuple[str, str, str | None], ...] = (("linux", "amd64", None), ("linux", "arm64", "v8")),
    *,
    docker: bool = False,
    layer_size: int = 4096,
) -> ManifestNode:
    """A multi-platform image: an OCI index (or a Docker manifest list) of one image per platform."""
    build = docker_image if docker else oci_image
    images = [
        build(seed, architecture=arch, os=os, variant=variant, layer_size=layer_size)
        for os, arch, variant in platforms
    ]
    return docker_manifest_list(images) if docker else oci_index(images)


EMPTY_CONFIG = Blob(b"{}", OCI_EMPTY)


def oci_artifact(
    subject: ManifestNode | dict[str, Any],
    *,
    artifact_type: str = "application/vnd.geo-tui.test.sbom.v1",
    blobs: list[Blob] | None = None,
    annotations: dict[str, str] | None = None,
    seed: int | str = 0,
) -> ManifestNode:
    """An OCI 1.1 artifact: image manifest with `artifactType`, the empty config and `subject`."""
    subject_desc = subject.descriptor() if isinstance(subject, ManifestNode) else dict(subject)
    subject_desc.pop("platform", None)
    blobs = blobs or [
        Blob(canonical_json({"seed": str(seed), "subject": subject_desc["digest"]}), "application/json")
    ]
    annotations = {"org.opencontainers.image.created": CREATED, **(annotations or {})}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": EMPTY_CONFIG.descriptor(),
        "layers": [blob.descriptor() for blob in blobs],
        "subject": subject_desc,
        "annotations": annotations,
    }
    return ManifestNode(
        json.dumps(manifest, indent=3).encode(),
        OCI_MANIFEST,
        blobs=[EMPTY_CONFIG, *blobs],
        artifact_type=artifact_type,
        annotations=annotations,
    )


def referrers_tag(subject_digest: str) -> str:
    """The referrers fallback tag of a subject: `sha256-<hex>`."""
    algorithm, _, hex_digest = subject_digest.partition(":")
    return f"{algorithm}-{hex_digest}"


def referrers_fallback(
    subject: ManifestNode | str, artifacts: list[ManifestNode]
) -> tuple[str, ManifestNode]:
    """The tag and the index that a registry without the referrers API keeps for `subject`'s referrers."""
    digest = subject if isinstance(subject, str) else subject.digest
    return referrers_tag(digest), oci_index(artifacts)


def buildkit_cache_manifest(seed: int | str = 0, *, layers: int = 2, layer_size: int = 2048) -> ManifestNode:
    """BuildKit registry cache, image-manifest form: config media type `BUILDKIT_CACHE_CONFIG`."""
    layer_blobs = [layer_blob(f"cache/{seed}/{i}", layer_size) for i in range(layers)]
    config = _cache_config(seed, layer_blobs)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [blob.descriptor() for blob in layer_blobs],
    }
    return ManifestNode(json.dumps(manifest, indent=3).encode(), OCI_MANIFEST, blobs=[config, *layer_blobs])


def buildkit_cache_index(seed: int | str = 0, *, layers: int = 2, layer_size: int = 2048) -> ManifestNode:
    """BuildKit registry cache, index form: `manifests` entries are blobs (layers plus the cache config)."""
    layer_blobs = [
        Blob(blob.data, blob.media_type, blob.diff_id, {"buildkit/createdat": CREATED})
        for blob in (layer_blob(f"cache/{seed}/{i}", layer_size) for i in range(layers))
    ]
    config = _cache_config(seed, layer_blobs)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [blob.descriptor() for blob in layer_blobs] + [config.descriptor()],
    }
    return ManifestNode(json.dumps(index, indent=3).encode(), OCI_INDEX, blobs=[*layer_blobs, config])


def _cache_config(seed: int | str, layer_blobs: list[Blob]) -> Blob:
    records = [{"digest": sha256_digest(f"{seed}/record/{i}".encode())} for i in range(len(layer_blobs))]
    for i, record in enumerate(records):
        record["layers"] = [{"layer": i}]  # type: ignore[assignment]
    body = {
        "layers": [{"blob": blob.digest, "parent": i - 1} for i, blob in enumerate(layer_blobs)],
        "records": records,
    }
    return Blob(canonical_json(body), BUILDKIT_CACHE_CONFIG)
