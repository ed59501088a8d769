"""What every part of the registry client shares: its session, its URLs, capped reads, Locations."""

from __future__ import annotations

import asyncio
from urllib.parse import urljoin

import httpx

from ._errors import RegistryError, RegistryUnavailable
from ._manifest import is_valid_digest
from ._names import validate_repository_name
from ._session import Op, Session, read_capped

MAX_LISTING_BYTES = 64 * 1024 * 1024


class ClientBase:
    """The state and helpers the manifest, blob and listing calls of `RegistryClient` stand on."""

    name: str
    base_url: str
    _session: Session

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


def _validate_digest(digest: str) -> None:
    if not is_valid_digest(digest):
        raise ValueError(f"invalid digest {digest!r}")
