"""The async client of a container registry, through the OCI distribution API.

Everything public is re-exported here; the modules behind it are private.
"""

from __future__ import annotations

from ._auth import (
    Authenticator,
    BasicAuth,
    BearerChallengeAuth,
    JwtAuth,
    NoAuth,
    Scope,
    TokenSigner,
    libtrust_key_id,
)
from ._client import BlobStream, Manifest, ManifestInfo, RegistryClient
from ._errors import (
    DigestMismatch,
    NotFound,
    RateLimited,
    RegistryAuthError,
    RegistryError,
    RegistryRejected,
    RegistryUnavailable,
    TransferTooSlow,
)
from ._headers import Challenge, parse_link_next, parse_retry_after, parse_www_authenticate
from ._manifest import (
    Descriptor,
    InvalidManifest,
    ManifestRefs,
    compute_digest,
    is_valid_digest,
    manifest_digest,
    parse_manifest,
    parse_referrers,
)
from ._mediatypes import (
    DOCKER_LIST,
    DOCKER_MANIFEST_V2,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    MANIFEST_ACCEPT,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
)
from ._names import is_valid_repository_name, is_valid_tag, validate_repository_name
from ._redact import REDACTED, Redactor

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
    "REDACTED",
    "Authenticator",
    "BasicAuth",
    "BearerChallengeAuth",
    "BlobStream",
    "Challenge",
    "Descriptor",
    "DigestMismatch",
    "InvalidManifest",
    "JwtAuth",
    "Manifest",
    "ManifestInfo",
    "ManifestRefs",
    "NoAuth",
    "NotFound",
    "RateLimited",
    "Redactor",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryError",
    "RegistryRejected",
    "RegistryUnavailable",
    "Scope",
    "TokenSigner",
    "TransferTooSlow",
    "compute_digest",
    "is_valid_digest",
    "is_valid_repository_name",
    "is_valid_tag",
    "libtrust_key_id",
    "manifest_digest",
    "parse_link_next",
    "parse_manifest",
    "parse_referrers",
    "parse_retry_after",
    "parse_www_authenticate",
    "validate_repository_name",
]
