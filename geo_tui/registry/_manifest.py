"""A parser of untrusted manifest bytes: what a manifest refers to, and how its digest is computed.

Manifests are copied byte for byte; this module only reads them to learn which blobs and child
manifests must exist before the manifest itself can be pushed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ._mediatypes import (
    DOCKER_MANIFEST_V2,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    normalize_media_type,
)

__all__ = [
    "SCHEMA1_LAYER",
    "Descriptor",
    "InvalidManifest",
    "ManifestRefs",
    "compute_digest",
    "is_valid_digest",
    "manifest_digest",
    "parse_manifest",
    "parse_referrers",
]

_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_MAX_SIZE = 2**63 - 1  # Go's int64: what every registry stores sizes in

# Schema 1 names no layer media type; its layers are gzipped tars.
SCHEMA1_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class InvalidManifest(ValueError):
    """Manifest bytes that cannot be parsed; the message names the digest of the bytes."""

    def __init__(self, digest: str, reason: str) -> None:
        self.digest = digest
        self.reason = reason
        super().__init__(f"invalid manifest {digest}: {reason}")


@dataclass(frozen=True)
class Descriptor:
    """A reference to a blob or manifest by digest, as found in a manifest.

    `size` is -1 for schema 1 layers (schema 1 does not record sizes). `media_type` is ``""`` when the
    manifest left it out. `platform` does not take part in hashing, nor do `artifact_type` and
    `annotations` (OCI 1.1: what a referrers listing or a fallback index says of each referrer; kept
    when they are well formed, else None, since they never decide what is copied).
    """

    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    platform: dict[str, Any] | None = field(default=None, hash=False)
    artifact_type: str | None = field(default=None, hash=False, compare=False)
    annotations: dict[str, str] | None = field(default=None, hash=False, compare=False)


@dataclass(frozen=True)
class ManifestRefs:
    """What a manifest refers to.

    Attributes:
        media_type: the resolved type: the Content-Type if it is a manifest type, else the body's
            ``mediaType``, else detected from the schema.
        blobs: config and layers of an image manifest (schema 1: the distinct ``fsLayers`` in order);
            for an index, its entries that are not manifests (a BuildKit cache index of blobs).
        manifests: the entries of an index that are manifests (possibly indexes themselves). Entries
            without a ``mediaType`` count as manifests.
        subject: the OCI 1.1 ``subject`` (the manifest this one refers to), if any.
        artifact_type: the OCI 1.1 ``artifactType``, if any.
    """

    media_type: str
    blobs: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None


def is_valid_digest(s: str) -> bool:
    """Whether `s` is a ``sha256:`` or ``sha512:`` digest with lower-case hex of the right length."""
    return isinstance(s, str) and _DIGEST_RE.fullmatch(s) is not None


def compute_digest(content: bytes) -> str:
    """``"sha256:<hex>"`` of `content`."""
    return "sha256:" + hashlib.sha256(content).hexdigest()


def manifest_digest(content: bytes, media_type: str, algorithm: str = "sha256") -> str:
    """The digest a registry gives the manifest `content` of type `media_type`.

    For a signed schema 1 manifest that is the digest of the payload without its signatures (libtrust:
    ``content[:formatLength] + formatTail`` from the protected header); for every other manifest, the
    digest of the exact bytes. Raises InvalidManifest when schema 1 signatures are present but malformed.
    """
    if algorithm not in ("sha256", "sha512"):
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    if normalize_media_type(media_type) in (DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1):
        content = _schema1_payload(content)
    return f"{algorithm}:{hashlib.new(algorithm, content).hexdigest()}"


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _schema1_payload(content: bytes) -> bytes:
    """The signed payload of a libtrust pretty JWS; `content` itself when it carries no signatures."""
    document = _load_object(content)
    if "signatures" not in document:
        return content
    signatures = document["signatures"]
    if not isinstance(signatures, list) or not signatures:
        raise _invalid(content, "schema 1 signatures must be a non-empty list")
    formats: set[tuple[int, bytes]] = set()
    for signature in signatures:
        protected = signature.get("protected") if isinstance(signature, dict) else None
        if not isinstance(protected, str):
            raise _invalid(content, "schema 1 signature without a protected header")
        try:
            header = json.loads(_b64url_decode(protected))
            length, tail = header["formatLength"], _b64url_decode(header["formatTail"])
        except (ValueError, TypeError, KeyError, binascii.Error, RecursionError):
            raise _invalid(content, "schema 1 protected header is malformed") from None
        if type(length) is not int or not 0 <= length <= len(content):
            raise _invalid(content, "schema 1 formatLength is out of range")
        formats.add((length, tail))
    if len(formats) != 1:
        raise _invalid(content, "schema 1 signatures disagree on the payload")
    length, tail = formats.pop()
    return content[:length] + tail


def _invalid(content: bytes, reason: str) -> InvalidManifest:
    return InvalidManifest(compute_digest(content), reason)


def _load_object(content: bytes) -> dict[str, Any]:
    try:
        document = json.loads(content)
    except (ValueError, RecursionError):  # includes UnicodeDecodeError and over-long integers
        raise _invalid(content, "not JSON") from None
    if not isinstance(document, dict):
        raise _invalid(content, "not a JSON object")
    return document


def parse_manifest(content: bytes, content_type: str | None) -> ManifestRefs:
    """What the manifest `content` (served with `content_type`) refers to.

    Raises InvalidManifest (a ValueError) when the bytes are not a JSON object, a digest or size is
    invalid, or the schema is unknown.
    """
    document = _load_object(content)
    media_type = _resolve_media_type(content, document, content_type)
    parser = _Parser(content)
    if media_type in INDEX_TYPES:
        entries = parser.descriptor_list(document, "manifests", required=True)
        return ManifestRefs(
            media_type=media_type,
            blobs=tuple(d for d in entries if d.media_type and d.media_type not in MANIFEST_TYPES),
            manifests=tuple(d for d in entries if not d.media_type or d.media_type in MANIFEST_TYPES),
            subject=parser.optional_descriptor(document, "subject"),
            artifact_type=parser.optional_str(document, "artifactType"),
        )
    if media_type in (DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1):
        return ManifestRefs(media_type=media_type, blobs=parser.schema1_layers(document))
    config = parser.descriptor(document.get("config"), "config")
    layers = parser.descriptor_list(document, "layers", required=media_type == DOCKER_MANIFEST_V2)
    return ManifestRefs(
        media_type=media_type,
        blobs=(config, *layers),
        subject=parser.optional_descriptor(document, "subject"),
        artifact_type=parser.optional_str(document, "artifactType"),
    )


def parse_referrers(content: bytes) -> tuple[Descriptor, ...]:
    """The descriptors of a referrers listing (``GET /v2/<name>/referrers/<digest>``) or of a referrers
    fallback index: an OCI index whose ``manifests`` are the referrers. Raises InvalidManifest."""
    document = _load_object(content)
    return _Parser(content).descriptor_list(document, "manifests", required=True)


def _resolve_media_type(content: bytes, document: dict[str, Any], content_type: str | None) -> str:
    header = normalize_media_type(content_type)
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _invalid(content, "mediaType is not a string")
    if header in MANIFEST_TYPES:
        # A body that claims another type than it was served as is the CVE-2021-41190 confusion;
        # Distribution refuses such a PUT too.
        if declared and header not in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED) and declared != header:
            raise _invalid(content, f"mediaType {declared!r} does not match Content-Type {header!r}")
        return header
    if declared in MANIFEST_TYPES:
        return declared
    if declared:
        raise _invalid(content, f"unknown manifest mediaType {declared!r}")
    version = document.get("schemaVersion")
    if version == 1 and type(version) is int:
        return DOCKER_SCHEMA1_SIGNED if "signatures" in document else DOCKER_SCHEMA1
    if version == 2 and type(version) is int:
        # Early OCI manifests left mediaType out; the shape tells them apart.
        if "manifests" in document and "layers" not in document:
            return OCI_INDEX
        if "config" in document and "manifests" not in document:
            return OCI_MANIFEST
    raise _invalid(content, "unknown manifest schema")


class _Parser:
    """Field readers that raise InvalidManifest naming the manifest's digest."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    def fail(self, reason: str) -> InvalidManifest:
        return _invalid(self._content, reason)

    def descriptor(self, value: object, where: str) -> Descriptor:
        if not isinstance(value, dict):
            raise self.fail(f"{where} is not a descriptor object")
        media_type = value.get("mediaType", "")
        if not isinstance(media_type, str):
            raise self.fail(f"{where}.mediaType is not a string")
        digest = value.get("digest")
        if not isinstance(digest, str) or not is_valid_digest(digest):
            raise self.fail(f"{where}.digest is missing or invalid")
        size = value.get("size")
        if type(size) is not int or not 0 <= size <= _MAX_SIZE:
            raise self.fail(f"{where}.size is missing, negative or not an integer")
        urls = value.get("urls", [])
        if urls is None:
            urls = []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise self.fail(f"{where}.urls is not a list of strings")
        platform = value.get("platform")
        if platform is not None and not isinstance(platform, dict):
            raise self.fail(f"{where}.platform is not an object")
        artifact_type = value.get("artifactType")
        annotations = value.get("annotations")
        if not (isinstance(annotations, dict) and all(isinstance(v, str) for v in annotations.values())):
            annotations = None
        return Descriptor(
            media_type,
            digest,
            size,
            tuple(urls),
            platform,
            artifact_type if isinstance(artifact_type, str) else None,
            annotations,
        )

    def descriptor_list(
        self, document: dict[str, Any], key: str, *, required: bool
    ) -> tuple[Descriptor, ...]:
        value = document.get(key)
        if value is None and not required:
            return ()
        if not isinstance(value, list):
            raise self.fail(f"{key} is not a list")
        return tuple(self.descriptor(entry, f"{key}[{i}]") for i, entry in enumerate(value))

    def optional_descriptor(self, document: dict[str, Any], key: str) -> Descriptor | None:
        value = document.get(key)
        return None if value is None else self.descriptor(value, key)

    def optional_str(self, document: dict[str, Any], key: str) -> str | None:
        value = document.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(f"{key} is not a string")
        return value

    def schema1_layers(self, document: dict[str, Any]) -> tuple[Descriptor, ...]:
        layers = document.get("fsLayers")
        if not isinstance(layers, list):
            raise self.fail("fsLayers is not a list")
        seen: dict[str, Descriptor] = {}
        for i, layer in enumerate(layers):
            digest = layer.get("blobSum") if isinstance(layer, dict) else None
            if not isinstance(digest, str) or not is_valid_digest(digest):
                raise self.fail(f"fsLayers[{i}].blobSum is missing or invalid")
            seen.setdefault(digest, Descriptor(SCHEMA1_LAYER, digest, -1))
        return tuple(seen.values())
