"""Manifest media types, and the Accept header that asks a registry for any of them."""

from __future__ import annotations

__all__ = [
    "DOCKER_LIST",
    "DOCKER_MANIFEST_V2",
    "DOCKER_SCHEMA1",
    "DOCKER_SCHEMA1_SIGNED",
    "IMAGE_MANIFEST_TYPES",
    "INDEX_TYPES",
    "MANIFEST_ACCEPT",
    "MANIFEST_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "normalize_media_type",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"

INDEX_TYPES: frozenset[str] = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_MANIFEST_TYPES: frozenset[str] = frozenset(
    {OCI_MANIFEST, DOCKER_MANIFEST_V2, DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1}
)
MANIFEST_TYPES: frozenset[str] = INDEX_TYPES | IMAGE_MANIFEST_TYPES

# Distribution answers a HEAD/GET with another form of the manifest (or 404) when the Accept list does not
# name the stored type: GitLab issue 600486 skipped every OCI index tag that way.
MANIFEST_ACCEPT = ", ".join(
    (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST_V2, DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1)
)


def normalize_media_type(value: str | None) -> str:
    """`value` without parameters (``; charset=utf-8``), stripped and lower-cased; ``""`` for None."""
    if not value:
        return ""
    return value.split(";", 1)[0].strip().lower()
