"""The public surface of geo_tui.registry is pinned: the engine is written against exactly these names."""

from __future__ import annotations

import geo_tui.registry as registry

EXPECTED = {
    # client
    "RegistryClient",
    "BlobStream",
    "Manifest",
    "ManifestInfo",
    # errors
    "RegistryError",
    "RegistryUnavailable",
    "TransferTooSlow",
    "RegistryAuthError",
    "NotFound",
    "RateLimited",
    "RegistryRejected",
    "DigestMismatch",
    "InvalidManifest",
    # secrets
    "Redactor",
    "REDACTED",
    # auth
    "Authenticator",
    "NoAuth",
    "BasicAuth",
    "JwtAuth",
    "BearerChallengeAuth",
    "Scope",
    "TokenSigner",
    "libtrust_key_id",
    # manifests
    "Descriptor",
    "ManifestRefs",
    "parse_manifest",
    "parse_referrers",
    "is_valid_digest",
    "compute_digest",
    "manifest_digest",
    # media types
    "OCI_INDEX",
    "OCI_MANIFEST",
    "DOCKER_LIST",
    "DOCKER_MANIFEST_V2",
    "DOCKER_SCHEMA1_SIGNED",
    "DOCKER_SCHEMA1",
    "MANIFEST_ACCEPT",
    "INDEX_TYPES",
    "IMAGE_MANIFEST_TYPES",
    "MANIFEST_TYPES",
    # headers
    "Challenge",
    "parse_link_next",
    "parse_www_authenticate",
    "parse_retry_after",
    # names
    "validate_repository_name",
    "is_valid_repository_name",
    "is_valid_tag",
}


def test_all_is_pinned() -> None:
    assert set(registry.__all__) == EXPECTED
    assert len(registry.__all__) == len(EXPECTED)


def test_every_exported_member_exists_and_is_public_api() -> None:
    for name in registry.__all__:
        member = getattr(registry, name)
        module = getattr(member, "__module__", None)
        if module is not None and callable(member):
            assert module.startswith("geo_tui.registry._"), name
            assert member.__doc__, f"{name} has no docstring"


def test_error_hierarchy() -> None:
    for cls in (
        registry.RegistryUnavailable,
        registry.RegistryAuthError,
        registry.NotFound,
        registry.RateLimited,
        registry.RegistryRejected,
        registry.DigestMismatch,
    ):
        assert issubclass(cls, registry.RegistryError)
    # Too slow is a kind of unavailable: whoever handles an unreachable registry handles this too.
    assert issubclass(registry.TransferTooSlow, registry.RegistryUnavailable)
    assert issubclass(registry.InvalidManifest, ValueError)
    assert not issubclass(registry.InvalidManifest, registry.RegistryError)


def test_manifest_accept_names_all_six_types() -> None:
    accepted = {part.strip() for part in registry.MANIFEST_ACCEPT.split(",")}
    assert accepted == registry.MANIFEST_TYPES
    assert len(accepted) == 6
    assert registry.MANIFEST_TYPES == registry.INDEX_TYPES | registry.IMAGE_MANIFEST_TYPES
    assert not registry.INDEX_TYPES & registry.IMAGE_MANIFEST_TYPES
