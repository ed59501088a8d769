"""The async client of one registry through the OCI distribution API.

Its calls live by what they reach: manifests (`_client_manifests`), blobs (`_client_blobs`) and
listings (`_client_listings`), on the session and helpers they share (`_client_base`).
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import certifi
import httpx

from geo_tui import __version__

from ._auth import Authenticator
from ._client_blobs import BlobCalls, BlobStream
from ._client_listings import MAX_CATALOG_PAGES, MAX_TAGS, ListingCalls
from ._client_manifests import Manifest, ManifestCalls, ManifestInfo
from ._redact import Redactor
from ._session import Op, Session

__all__ = ["BlobStream", "Manifest", "ManifestInfo", "RegistryClient"]


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


class _SetCookies(httpx.Cookies):
    """A client's cookies, looked for only in a response that sets one. httpx hands every response to
    the standard library's cookie jar, which wraps it in two adapter objects to find no Set-Cookie on
    a registry's answer: ~7% of a no-op compare's CPU (bench/backfill.py). A registry behind a load
    balancer with sticky cookies still gets them back."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


class _RegistryHttp(httpx.AsyncClient):
    """httpx's client with `_SetCookies` as its cookies."""

    @property
    def cookies(self) -> httpx.Cookies:
        return self._set_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:  # what httpx.Cookies takes
        self._set_cookies = _SetCookies(cookies)


class RegistryClient(ManifestCalls, BlobCalls, ListingCalls):
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
            http = _RegistryHttp(
                transport=transport or direct_transport(url, ssl_context, connections),
                verify=ssl_context,
                limits=limits,
                timeout=limits_timeout,
                headers={"User-Agent": f"geo-tui/{__version__}"},
                # Every request sent (retries too): the engine counts a push's requests and paces
                # its background work here.
                event_hooks={"request": [on_request]} if on_request is not None else None,
            )
            http.cookies = {}  # an empty _SetCookies
            return http

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

    # --- the API -----------------------------------------------------------------------------

    async def ping(self) -> float:
        """``GET /v2/``; the seconds it took. Raises a RegistryError subclass if the registry fails."""
        started = time.perf_counter()
        op = Op("ping")
        response = await self._session.open(op, "GET", f"{self.base_url}/v2/", scopes=[], expect={200})
        await self._read(op, response, 64 * 1024)
        return time.perf_counter() - started
