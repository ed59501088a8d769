"""The async client of one registry through the OCI distribution API."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlencode, urljoin

import certifi
import httpx

from geo_tui import __version__

from ._auth import Authenticator, Scope
from ._errors import DigestMismatch, RegistryError, RegistryUnavailable
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
from ._names import validate_reference, validate_repository_name
from ._redact import Redactor
from ._session import Op, Session, read_capped, release, same_origin

__all__ = ["BlobStream", "Manifest", "ManifestInfo", "RegistryClient"]

MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # Distribution 3 refuses manifests over 4 MiB
MAX_LISTING_BYTES = 64 * 1024 * 1024
MAX_CATALOG_PAGES = 10_000  # 1M repositories at 100 a page
MAX_TAGS = 1_000_000
MAX_CATALOG_ITEMS = 1 << 62  # catalogs are bounded by their pages
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


class BlobStream:
    """The body of a blob being downloaded, as raw bytes.

    `size` is the Content-Length, if the registry sent one. `chunks()` yields the bytes as they arrive
    (up to 256 KiB at a time: what the kernel had) and, once the body is complete, raises
    DigestMismatch if it does not hash to `digest`. A transport failure in the middle raises
    RegistryUnavailable; a body still not whole at its deadline (its size at the minimum rate, from
    the first read) raises TransferTooSlow.
    """

    def __init__(self, response: httpx.Response, digest: str, session: Session, op: Op) -> None:
        self._response = response
        self._session = session
        self._op = op
        self.digest = digest
        length = response.headers.get("content-length", "")
        self.size: int | None = int(length) if length.isdigit() else None

    async def chunks(self, *, verify: bool = True) -> AsyncIterator[bytes]:
        """The blob's bytes, verified against its digest at the end.

        ``verify=False`` skips the hashing, for a stream that goes straight into a registry upload:
        the receiving registry verifies the digest itself and refuses a mismatch."""
        algorithm = self.digest.split(":", 1)[0]
        hasher = hashlib.new(algorithm) if verify else None
        # Raw: the digest is over the stored bytes, never over a content-decoded form. As they come:
        # gathering them into 1 MiB pieces first cost ~12% of a backfill's CPU in httpx's chunker.
        raw = self._response.aiter_raw()
        received = 0
        # From the first read, not from the answer: a consumer waiting for its own connection elsewhere
        # (the secondary's pool) is not this registry being slow.
        allowed = self._session.deadline(self.size)
        deadline = asyncio.get_running_loop().time() + allowed if allowed is not None else None
        try:
            while True:
                # The deadline covers the waits for the registry, never the time the consumer takes.
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(raw)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise self._session.too_slow(self._op, self.size, received) from None
                received += len(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                yield chunk
        except httpx.TransportError as exc:
            detail = f"{type(exc).__name__} after the body started: {exc}"
            raise self._session.error(RegistryUnavailable, self._op, detail=detail) from exc
        if hasher is None:
            return
        actual = f"{algorithm}:{hasher.hexdigest()}"
        if actual != self.digest:
            raise self._session.error(DigestMismatch, self._op, detail=f"content hashes to {actual}")


@functools.lru_cache(maxsize=8)
def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    """One context per verify setting (True, False or a CA bundle path), shared by every client:
    loading the trust store costs ~25 ms each time, and a process talks to many registries with
    two pools each."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else certifi.where())


def _with_digest(location: str, digest: str) -> str:
    # The Location carries its own state (_state=...); the digest is added to it, never replacing it.
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


@dataclass(frozen=True)
class ListingPage:
    """One page of a listing: its items as the registry sent them, and whether it is the last page."""

    items: list[str]
    last: bool


class RegistryClient:
    """An async client of one registry.

    Two connection pools: one for metadata (manifests, tags, catalog, HEADs, mounts) and one for blob
    bodies, so small requests never queue behind multi-GB layers. `transport`, if given, serves both
    (tests inject faults with httpx.MockTransport). `verify` may be a CA bundle path.

    Idempotent requests are retried `retries` times on transport errors, 5xx and 429 (honouring
    Retry-After up to 30 s); streamed uploads are not (the caller retries the whole copy). Names and
    references are validated before anything is sent: an invalid one raises ValueError. `redactor`
    removes the configured secrets from every error's detail.

    Besides `timeout` without progress, each request and each body has a total deadline: `timeout`
    plus its size at `min_transfer_rate` bytes a second (None: no deadline). Past it, TransferTooSlow.

    Listings end: a catalog of more than `max_catalog_pages` pages, or a repository of more than
    `max_tags` tags, raises RegistryError naming the registry (and the repository), so a registry that
    links to a next page forever cannot keep a sync running forever.
    `on_request` is awaited before each request goes out (an httpx request event hook).
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        auth: Authenticator,
        *,
        verify: bool | str = True,
        max_connections: int = 8,
        blob_connections: int = 4,
        timeout: float = 30.0,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_base_delay: float = 0.2,
        min_transfer_rate: float | None = 64 * 1024,
        redactor: Redactor | None = None,
        max_catalog_pages: int = MAX_CATALOG_PAGES,
        max_tags: int = MAX_TAGS,
        on_request: Callable[[httpx.Request], Awaitable[None]] | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host or url.query:
            raise ValueError(f"registry URL must be http(s)://host[:port], got {base_url!r}")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.max_catalog_pages = max_catalog_pages
        self.max_tags = max_tags
        # Waiting for a free connection is not a failure: only connect/read/write time out.
        limits_timeout = httpx.Timeout(timeout, pool=None)
        ssl_context = _ssl_context(verify)

        def pool(connections: int) -> httpx.AsyncClient:
            # Imported here: httpcore, below it, costs ~15 ms that commands never reaching a
            # registry (status, --version) should not pay.
            from ._network import direct_transport

            limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
            return httpx.AsyncClient(
                transport=transport or direct_transport(url, ssl_context, connections),
                verify=ssl_context,
                limits=limits,
                timeout=limits_timeout,
                headers={"User-Agent": f"geo-tui/{__version__}"},
                # Every request sent (retries too): the engine counts a push's requests and paces
                # its background work here.
                event_hooks={"request": [on_request]} if on_request is not None else None,
            )

        self._session = Session(
            name,
            self.base_url,
            auth,
            meta=pool(max_connections),
            blobs=pool(blob_connections),
            retries=retries,
            retry_base_delay=retry_base_delay,
            base_timeout=timeout,
            min_rate=min_transfer_rate,
            redactor=redactor,
        )

    def __repr__(self) -> str:
        return f"RegistryClient({self.name!r}, {self.base_url!r})"

    async def aclose(self) -> None:
        """Close both connection pools."""
        await self._session.meta.aclose()
        await self._session.blobs.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- helpers -----------------------------------------------------------------------------

    def _url(self, repository: str, *parts: str) -> str:
        validate_repository_name(repository)
        return "/".join((self.base_url, "v2", repository, *parts))

    async def _read(self, op: Op, response: httpx.Response, limit: int) -> bytes:
        length = response.headers.get("content-length", "")
        expected = int(length) if length.isdigit() else limit
        try:
            async with asyncio.timeout(self._session.deadline(expected)):
                body = await read_capped(response, limit)
        except TimeoutError:
            raise self._session.too_slow(op, expected) from None
        except httpx.TransportError as exc:
            raise self._session.error(RegistryUnavailable, op, detail=type(exc).__name__) from exc
        finally:
            await response.aclose()
        if body is None:
            raise self._session.error(RegistryError, op, detail=f"answer larger than {limit} bytes")
        return body

    def _location(self, op: Op, response: httpx.Response) -> str:
        location: str = response.headers.get("location", "")
        if not location:
            raise self._session.error(
                RegistryError, op, status=response.status_code, detail="answer without a Location header"
            )
        try:
            return urljoin(str(response.url), location)
        except ValueError:
            raise self._session.error(RegistryError, op, detail="invalid Location header") from None

    async def _pages(
        self,
        op: Op,
        url: str | None,
        scope: Scope,
        key: str,
        *,
        max_pages: int,
        max_items: int,
        too_many: str,
    ) -> AsyncGenerator[ListingPage, None]:
        """The items under `key` of a listing, a page at a time, following Link rel="next" to the last
        page; nothing is kept between pages but the pages' URLs. More than `max_pages` pages or
        `max_items` items listed raises RegistryError with `too_many` as its detail."""
        seen: set[str] = set()
        pages = listed = items = 0
        while url is not None and url not in seen:
            # Every page counts as at least one item: a registry linking empty pages forever ends too.
            if pages >= max_pages or listed >= max_items:
                raise self._session.error(RegistryError, op, detail=too_many)
            pages += 1
            seen.add(url)
            response = await self._session.open(op, "GET", url, scopes=[scope], expect={200})
            link = response.headers.get("link")
            page_url = str(response.url)
            body = await self._read(op, response, MAX_LISTING_BYTES)
            try:
                document = json.loads(body)
                values = document.get(key) if isinstance(document, dict) else ()
            except (ValueError, RecursionError):
                values = ()
            if values is None:  # Distribution: {"name": "a", "tags": null} once every tag is deleted
                values = []
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise self._session.error(RegistryError, op, status=200, detail=f"malformed {key} listing")
            listed += max(1, len(values))
            items += len(values)
            if items > max_items:
                raise self._session.error(RegistryError, op, detail=too_many)
            url = parse_link_next(link, page_url)
            if url is not None and not same_origin(url, self.base_url):
                raise self._session.error(RegistryError, op, detail="next page link leaves the registry")
            yield ListingPage(values, last=url is None or url in seen)

    async def _paged(
        self,
        op: Op,
        url: str | None,
        scope: Scope,
        key: str,
        *,
        max_pages: int,
        max_items: int,
        too_many: str,
    ) -> list[str]:
        """Every item under `key` of a listing, all pages (see _pages), in order and deduplicated."""
        items: dict[str, None] = {}  # ordered and deduplicated as it fills
        pages = self._pages(op, url, scope, key, max_pages=max_pages, max_items=max_items, too_many=too_many)
        async for page in pages:
            items.update(dict.fromkeys(page.items))
        return list(items)

    # --- the API -----------------------------------------------------------------------------

    async def ping(self) -> float:
        """``GET /v2/``; the seconds it took. Raises a RegistryError subclass if the registry fails."""
        started = time.perf_counter()
        op = Op("ping")
        response = await self._session.open(op, "GET", f"{self.base_url}/v2/", scopes=[], expect={200})
        await self._read(op, response, 64 * 1024)
        return time.perf_counter() - started

    async def catalog(self, page_size: int = 100) -> list[str]:
        """Every repository name in the registry (``GET /v2/_catalog``, all pages)."""
        url = f"{self.base_url}/v2/_catalog?n={int(page_size)}"
        limit = self.max_catalog_pages
        return await self._paged(
            Op("GET catalog"),
            url,
            Scope.CATALOG,
            "repositories",
            max_pages=limit,
            max_items=MAX_CATALOG_ITEMS,
            too_many=f"more than {limit} pages and the registry still links to a next one; "
            "raise [engine] max_catalog_pages if it really lists that many repositories",
        )

    async def list_tags(self, repository: str, page_size: int = 1000) -> list[str]:
        """Every tag of `repository`, all pages. Raises NotFound if the repository is unknown."""
        items = dict.fromkeys([t async for page in self.iter_tags(repository, page_size) for t in page.items])
        return list(items)

    def iter_tags(self, repository: str, page_size: int = 1000) -> AsyncGenerator[ListingPage, None]:
        """The tags of `repository` a page at a time, in the registry's order, holding one page (the OCI
        spec pages in lexical order; Distribution 2.8 ignores `n` and `last` and sends every tag in one
        page, in its storage's order). Raises NotFound (from the first page) if the repository is unknown."""
        url = self._url(repository, "tags", f"list?n={int(page_size)}")
        limit = self.max_tags
        return self._pages(
            Op("GET tags", repository),
            url,
            Scope.repository(repository, "pull"),
            "tags",
            max_pages=limit,
            max_items=limit,
            too_many=f"more than {limit} tags; raise [engine] max_tags_per_repository "
            "if the repository really holds that many",
        )

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
        forbids a 404 from one that has it, which answers an empty list instead."""
        _validate_digest(digest)
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
                await release(response)
                if len(seen) == 1:
                    return None
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

    async def head_blob(self, repository: str, digest: str) -> int | None:
        """The size of a blob, or None if the repository does not have it."""
        _validate_digest(digest)
        op = Op("HEAD blob", repository, digest)
        response = await self._session.open(
            op,
            "HEAD",
            self._url(repository, "blobs", digest),
            scopes=[Scope.repository(repository, "pull")],
            expect={200, 404},
            follow_redirects=True,
        )
        await release(response)
        if response.status_code == 404:
            return None
        length = response.headers.get("content-length", "")
        if not length.isdigit():
            raise self._session.error(RegistryError, op, status=200, detail="answer without Content-Length")
        return int(length)

    @asynccontextmanager
    async def stream_blob(self, repository: str, digest: str) -> AsyncIterator[BlobStream]:
        """Download a blob: ``async with client.stream_blob(repo, digest) as blob:`` then
        ``async for chunk in blob.chunks()``. Raises NotFound if the repository does not have it.

        Redirects (to object storage) are followed; httpx drops the Authorization header when a
        redirect leaves the registry's origin.
        """
        _validate_digest(digest)
        op = Op("GET blob", repository, digest)
        response = await self._session.open(
            op,
            "GET",
            self._url(repository, "blobs", digest),
            scopes=[Scope.repository(repository, "pull")],
            expect={200},
            pool="blob",
            headers={"Accept-Encoding": "identity"},
            follow_redirects=True,
        )
        try:
            yield BlobStream(response, digest, self._session, op)
        finally:
            await response.aclose()

    async def mount_blob(self, repository: str, digest: str, from_repository: str) -> str | None:
        """Mount a blob from another repository of this registry.

        None if it was mounted (201). If the registry opened an upload instead (202: the source does
        not have it, or mounting is not allowed), the absolute upload URL to pass to upload_blob.
        """
        _validate_digest(digest)
        validate_repository_name(from_repository)
        op = Op("mount blob", repository, digest)
        url = self._url(repository, "blobs", f"uploads/?mount={digest}&from={from_repository}")
        scopes = [Scope.repository(repository, "pull", "push"), Scope.repository(from_repository, "pull")]
        response = await self._session.open(op, "POST", url, scopes=scopes, expect={201, 202})
        await self._read(op, response, 64 * 1024)
        return None if response.status_code == 201 else self._location(op, response)

    async def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int | None,
        chunks: AsyncIterable[bytes],
        *,
        location: str | None = None,
        chunked: bool = False,
    ) -> None:
        """Upload a blob from `chunks`, streamed end to end (never held in memory or on disk).

        Opens an upload session unless `location` (from mount_blob) is given, then sends one
        ``PUT <location>&digest=`` with the body, or with `chunked`, one ``PATCH`` with the body (chunked
        transfer encoding) and an empty ``PUT``. The registry verifies the digest. Not retried: `chunks`
        cannot be replayed.

        A failed upload's session is cancelled (``DELETE``), so sessions do not pile up on the registry.
        With `chunked`, a failure of `chunks` itself (the source broke off) ends the PATCH body there, so
        the session's state stays known and the cancel works even on Distribution, which refuses a
        ``DELETE`` whose ``_state`` does not match what it holds; the source's exception is then raised.
        """
        _validate_digest(digest)
        validate_repository_name(repository)
        op = Op("upload blob", repository, digest)
        scopes = [Scope.repository(repository, "pull", "push")]
        if location is None:
            response = await self._session.open(
                op, "POST", self._url(repository, "blobs", "uploads/"), scopes=scopes, expect={202}
            )
            await self._read(op, response, 64 * 1024)
            location = self._location(op, response)
        else:
            location = urljoin(self.base_url + "/", location)
        try:
            await self._send_blob(op, scopes, location, digest, size, chunks, chunked)
        except _UploadFailed as failed:
            await self.cancel_upload(repository, failed.location)
            raise failed.cause from None

    async def _send_blob(
        self,
        op: Op,
        scopes: list[Scope],
        location: str,
        digest: str,
        size: int | None,
        chunks: AsyncIterable[bytes],
        chunked: bool,
    ) -> None:
        """The body of upload_blob; raises _UploadFailed with the session's last known Location."""
        headers = {"Content-Type": "application/octet-stream"}
        body: bytes | AsyncIterable[bytes] = chunks
        try:
            if chunked:
                source_failure: list[Exception] = []
                response = await self._session.open(
                    op,
                    "PATCH",
                    location,
                    scopes=scopes,
                    expect={202, 204},
                    pool="blob",
                    headers=headers,
                    content=_ending_on_failure(chunks, source_failure),
                    expected_bytes=size,
                )
                await self._read(op, response, 64 * 1024)
                location = self._location(op, response)
                if source_failure:
                    raise source_failure[0]
                headers = {"Content-Type": "application/octet-stream", "Content-Length": "0"}
                body = b""
            elif size is not None:
                headers["Content-Length"] = str(size)
            response = await self._session.open(
                op,
                "PUT",
                _with_digest(location, digest),
                scopes=scopes,
                expect={201, 204},
                pool="blob",
                headers=headers,
                content=body,
                retry=False,
                expected_bytes=size if body is chunks else 0,  # None: a stream of unknown size, no deadline
            )
            await self._read(op, response, 64 * 1024)
        except Exception as exc:
            raise _UploadFailed(location, exc) from exc

    async def cancel_upload(self, repository: str, location: str) -> bool:
        """Cancel an upload session of `repository` (``DELETE <location>``), best effort: whether the
        registry confirmed it. One that no longer knows the session, or refuses it (Distribution, when the
        ``_state`` does not match what the session holds), answers 404."""
        op = Op("cancel upload", repository)
        url = urljoin(self.base_url + "/", location)
        scopes = [Scope.repository(repository, "delete")]  # Distribution asks `delete` for any DELETE
        try:
            response = await self._session.open(
                op, "DELETE", url, scopes=scopes, expect={202, 204}, retry=False
            )
        except RegistryError:
            return False
        await release(response)
        return True


class _UploadFailed(Exception):
    """An upload that failed, with the Location its session was last known at (to cancel it)."""

    def __init__(self, location: str, cause: Exception) -> None:
        super().__init__(str(cause))
        self.location = location
        self.cause = cause


async def _ending_on_failure(chunks: AsyncIterable[bytes], failures: list[Exception]) -> AsyncIterator[bytes]:
    """`chunks`, ending early (and noting why in `failures`) when the source fails part-way."""
    try:
        async for chunk in chunks:
            yield chunk
    except Exception as exc:  # the source broke off: end the body cleanly; the caller raises it
        failures.append(exc)


def _validate_digest(digest: str) -> None:
    if not is_valid_digest(digest):
        raise ValueError(f"invalid digest {digest!r}")
