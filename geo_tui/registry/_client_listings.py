"""Listings of a registry: the catalog and a repository's tags, a page at a time, bounded."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from ._auth import Scope
from ._client_base import MAX_LISTING_BYTES, ClientBase
from ._errors import RegistryError
from ._headers import parse_link_next
from ._session import Op, same_origin

MAX_CATALOG_PAGES = 10_000  # 1M repositories at 100 a page
MAX_TAGS = 1_000_000
MAX_CATALOG_ITEMS = 1 << 62  # catalogs are bounded by their pages


@dataclass(frozen=True)
class ListingPage:
    """One page of a listing: its items as the registry sent them, and whether it is the last page."""

    items: list[str]
    last: bool


class ListingCalls(ClientBase):
    """``GET /v2/_catalog`` and ``GET /v2/<name>/tags/list``, following Link rel="next"."""

    max_catalog_pages: int
    max_tags: int

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
