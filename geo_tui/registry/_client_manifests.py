"""Manifests through the distribution API: HEAD, GET (verified), PUT, DELETE, and their referrers."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from ._auth import Scope
from ._client_base import MAX_LISTING_BYTES, ClientBase, _validate_digest
from ._errors import DigestMismatch, RegistryError
from ._headers import parse_link_next
from ._manifest import (
    Descriptor,
    InvalidManifest,
    is_valid_digest,
    manifest_digest,
    parse_manifest,
    parse_referrers,
)
from ._mediatypes import MANIFEST_ACCEPT, MANIFEST_TYPES, normalize_media_type
from ._names import validate_reference
from ._session import ERROR_BODY_LIMIT, Op, release, same_origin

MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # Distribution 3 refuses manifests over 4 MiB
# How long a registry that has no referrers route is taken at its word: one probe per repository was one
# request in nine of a no-op compare on Distribution 2.8. A registry upgraded meanwhile is seen after this.
NO_REFERRERS_API_SECONDS = 300.0
_OK = frozenset({200, 201, 202, 204})


@dataclass(frozen=True, slots=True)  # slots: one per tag of a listing, 300k at a time
class ManifestInfo:
    """What a HEAD tells about a manifest: its digest, media type and size in bytes."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """A manifest's exact bytes, with its digest and media type."""

    digest: str
    media_type: str
    content: bytes


class ManifestCalls(ClientBase):
    """A repository's manifests by tag or digest, and the referrers of one."""

    _no_referrers_api_until = 0.0  # monotonic; see NO_REFERRERS_API_SECONDS

    async def head_manifest(self, repository: str, reference: str) -> ManifestInfo | None:
        """Digest, media type and size of a manifest by tag or digest; None if there is none."""
        validate_reference(reference)
        op = Op("HEAD manifest", repository, reference)
        response = await self._session.open(
            op,
            "HEAD",
            self._url(repository, "manifests", reference),
            scopes=[Scope.repository(repository, "pull")],
            expect={200, 404},
            headers={"Accept": MANIFEST_ACCEPT},
        )
        await release(response)
        if response.status_code == 404:
            return None
        digest = response.headers.get("docker-content-digest", "")
        length = response.headers.get("content-length", "")
        if is_valid_digest(reference):
            if digest and digest != reference:
                raise self._session.error(DigestMismatch, op, detail=f"registry says {digest}")
            digest = reference
        if not is_valid_digest(digest) or not length.isdigit():
            # Some registries leave these out of a HEAD: the GET always tells.
            manifest = await self.get_manifest(repository, reference)
            return ManifestInfo(manifest.digest, manifest.media_type, len(manifest.content))
        media_type = normalize_media_type(response.headers.get("content-type"))
        return ManifestInfo(digest, media_type, int(length))

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        """A manifest's exact bytes by tag or digest, verified against the digest.

        Raises NotFound if it does not exist and DigestMismatch if the bytes do not hash to the digest
        asked for (or, by tag, to the digest the registry announced).
        """
        validate_reference(reference)
        op = Op("GET manifest", repository, reference)
        response = await self._session.open(
            op,
            "GET",
            self._url(repository, "manifests", reference),
            scopes=[Scope.repository(repository, "pull")],
            expect={200},
            headers={"Accept": MANIFEST_ACCEPT},
        )
        announced = response.headers.get("docker-content-digest", "")
        content_type = normalize_media_type(response.headers.get("content-type"))
        content = await self._read(op, response, MAX_MANIFEST_BYTES)
        media_type = content_type
        if media_type not in MANIFEST_TYPES:
            try:
                media_type = parse_manifest(content, None).media_type
            except InvalidManifest:
                media_type = content_type or "application/octet-stream"
        expected = (
            reference if is_valid_digest(reference) else announced if is_valid_digest(announced) else ""
        )
        algorithm = expected.split(":", 1)[0] if expected else "sha256"
        try:
            actual = manifest_digest(content, media_type, algorithm)
        except InvalidManifest as exc:
            if expected:
                raise self._session.error(DigestMismatch, op, detail=exc.reason) from None
            actual = manifest_digest(content, "", algorithm)
        if expected and actual != expected:
            raise self._session.error(
                DigestMismatch, op, detail=f"expected {expected}, content hashes to {actual}"
            )
        return Manifest(actual, media_type, content)

    async def put_manifest(self, repository: str, reference: str, content: bytes, media_type: str) -> str:
        """Push a manifest's exact bytes under a tag or digest; the digest the registry gave it."""
        validate_reference(reference)
        op = Op("PUT manifest", repository, reference)
        response = await self._session.open(
            op,
            "PUT",
            self._url(repository, "manifests", reference),
            scopes=[Scope.repository(repository, "pull", "push")],
            expect=_OK,
            headers={"Content-Type": media_type},
            content=bytes(content),
        )
        await release(response)
        digest: str = response.headers.get("docker-content-digest", "")
        if is_valid_digest(digest):
            return digest
        try:
            return manifest_digest(content, media_type)
        except InvalidManifest:
            return manifest_digest(content, "")

    async def delete_manifest(self, repository: str, reference: str) -> None:
        """Delete a manifest by digest (or a tag, where the registry allows it).

        Raises NotFound if there is none, RegistryRejected (405, or 400 ``UNSUPPORTED``) if the
        registry does not allow deletes.
        """
        validate_reference(reference)
        op = Op("DELETE manifest", repository, reference)
        response = await self._session.open(
            op,
            "DELETE",
            self._url(repository, "manifests", reference),
            scopes=[Scope.repository(repository, "delete")],
            expect=_OK,
        )
        await release(response)

    async def list_referrers(
        self, repository: str, digest: str, *, artifact_type: str | None = None
    ) -> list[Descriptor] | None:
        """The referrers of the manifest `digest` through the OCI 1.1 referrers API
        (``GET /v2/<name>/referrers/<digest>``, every page), each descriptor with its `artifact_type`
        and `annotations`; only those of `artifact_type` if given (filtered here when the registry
        did not apply the filter itself). None when the registry has no referrers API: the spec
        forbids a 404 from one that has it, which answers an empty list instead. A 404 that is not the
        distribution API's own error (no route: Distribution 2.8's "404 page not found") is remembered
        for `NO_REFERRERS_API_SECONDS`, and the registry is not asked again meanwhile."""
        _validate_digest(digest)
        if time.monotonic() < self._no_referrers_api_until:
            return None
        op = Op("GET referrers", repository, digest)
        query = f"?{urlencode({'artifactType': artifact_type})}" if artifact_type else ""
        url: str | None = self._url(repository, "referrers", digest) + query
        found: dict[str, Descriptor] = {}
        seen: set[str] = set()
        while url is not None and url not in seen:
            seen.add(url)
            response = await self._session.open(
                op, "GET", url, scopes=[Scope.repository(repository, "pull")], expect={200, 404}
            )
            if response.status_code == 404:
                if len(seen) == 1:
                    try:
                        body = await self._read(op, response, ERROR_BODY_LIMIT)
                    except RegistryError:
                        return None  # not read: asked again next time
                    if not _distribution_error(body):
                        self._no_referrers_api_until = time.monotonic() + NO_REFERRERS_API_SECONDS
                    return None
                await release(response)
                raise self._session.error(RegistryError, op, status=404, detail="a next page went missing")
            link, page_url = response.headers.get("link"), str(response.url)
            filtered = "artifacttype" in response.headers.get("oci-filters-applied", "").lower()
            body = await self._read(op, response, MAX_LISTING_BYTES)
            try:
                descriptors = parse_referrers(body)
            except InvalidManifest as exc:
                raise self._session.error(RegistryError, op, status=200, detail=exc.reason) from None
            for descriptor in descriptors:
                if artifact_type is None or filtered or descriptor.artifact_type == artifact_type:
                    found.setdefault(descriptor.digest, descriptor)
            url = parse_link_next(link, page_url)
            if url is not None and not same_origin(url, self.base_url):
                raise self._session.error(RegistryError, op, detail="next page link leaves the registry")
        return list(found.values())


def _distribution_error(body: bytes | None) -> bool:
    """Whether a body is the distribution API's error document (``{"errors": [...]}``), which a registry
    that has the route answers (an unknown repository, say), unlike a router's plain 404."""
    try:
        document = json.loads(body or b"")
    except ValueError:
        return False
    return isinstance(document, dict) and isinstance(document.get("errors"), list)
