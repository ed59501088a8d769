"""One request to one registry, done properly: credentials, one re-authentication, retries, errors.

Every response is opened as a stream so that no body is read into memory unless the caller wants
it, and then only up to a limit.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from ._auth import Authenticator, Scope, TokenFetchError
from ._errors import (
    RegistryAuthError,
    RegistryError,
    RegistryUnavailable,
    TransferTooSlow,
    error_class_for_status,
    parse_error_body,
)
from ._headers import parse_retry_after
from ._redact import Redactor

__all__ = ["CONNECTED", "ERROR_BODY_LIMIT", "Op", "Session", "read_capped", "same_origin"]

ERROR_BODY_LIMIT = 64 * 1024
MAX_RETRY_DELAY = 30.0
# 501 and 505 will not change on a retry; the rest of 5xx, 408 and 429 may.
_RETRY_STATUSES = frozenset({408, 429}) | (frozenset(range(500, 600)) - {501, 505})


@dataclass(frozen=True)
class Op:
    """What a request is for, as an error message names it."""

    operation: str
    repository: str | None = None
    reference: str | None = None


# A request extension of ours: called once the request has its connection. Our own transport
# (`_network.DirectTransport`) calls it and drops the `trace` beside it, so that httpcore does not trace
# every step of every request (~10 awaits each, 5-8% of a no-op compare's client CPU); any other
# transport ignores it, and the `trace` does the same job.
CONNECTED = "geo_tui.connected"


def _deadline_from_connection(window: asyncio.Timeout, allowed: float | None) -> dict[str, Any]:
    """Request extensions that start ``window``'s deadline when the request has its connection: waiting
    for one of our own pool's connections is our queue, not the registry's slowness. httpcore's `trace`
    extension (documented) reports the first step on a connection; our transport says it itself
    (`CONNECTED`)."""
    if allowed is None:
        return {}

    def connected() -> None:
        if window.when() is None:
            window.reschedule(asyncio.get_running_loop().time() + allowed)

    async def trace(event: str, info: dict[str, Any]) -> None:
        connected()

    return {"trace": trace, CONNECTED: connected}


def same_origin(url: str, base_url: str) -> bool:
    """Whether `url` has the scheme, host and port of `base_url` (credentials go nowhere else)."""
    if url.startswith(base_url.rstrip("/") + "/"):
        return True  # a URL built on the base (parsing both for every request was 3 % of a no-op compare)
    try:
        a, b = httpx.URL(url), httpx.URL(base_url)
    except httpx.InvalidURL:
        return False
    return (a.scheme, a.host, a.port or _default_port(a)) == (b.scheme, b.host, b.port or _default_port(b))


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


async def read_capped(response: httpx.Response, limit: int) -> bytes | None:
    """The (decoded) body of a streamed `response`, or None if it is longer than `limit` bytes."""
    parts: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


async def release(response: httpx.Response, limit: int = 64 * 1024) -> None:
    """Close `response` so that its connection goes back to the pool: read its (small, or empty for a HEAD)
    body to the end first. A response closed unread takes its connection with it, and every HEAD then
    costs a new TCP connection (and a TLS handshake)."""
    try:
        await read_capped(response, limit)
    except httpx.TransportError:
        pass  # the connection is gone anyway; the caller has the status it needed
    finally:
        await response.aclose()


class Session:
    """The request core of a RegistryClient: two connection pools, one authenticator, one policy."""

    def __init__(
        self,
        name: str,
        base_url: str,
        auth: Authenticator,
        *,
        meta: httpx.AsyncClient,
        blobs: httpx.AsyncClient,
        retries: int,
        retry_base_delay: float,
        base_timeout: float = 30.0,
        min_rate: float | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.name = name
        self.base_timeout = base_timeout
        self.min_rate = min_rate
        self.redactor = redactor or Redactor()
        self.base_url = base_url
        self.auth = auth
        self.meta = meta
        self.blobs = blobs
        self.retries = max(0, retries)
        self.retry_base_delay = max(0.0, retry_base_delay)
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.clock: Callable[[], float] = time.time

    def error(
        self,
        cls: type[RegistryError],
        op: Op,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: str = "",
    ) -> RegistryError:
        """An exception of class `cls` about `op` on this registry."""
        return cls(
            self.name,
            op.operation,
            op.repository,
            reference=op.reference,
            status=status,
            code=code,
            detail=self.redactor.redact(detail),  # before RegistryError cuts it: no half secret left
        )

    def deadline(self, expected_bytes: int | None) -> float | None:
        """Seconds a request (or a body) of ``expected_bytes`` may take in all: the base timeout, plus its
        size at the minimum rate. None (no deadline) without a minimum rate or a known size."""
        if self.min_rate is None or expected_bytes is None:
            return None
        return self.base_timeout + max(0, expected_bytes) / self.min_rate

    def too_slow(self, op: Op, expected_bytes: int | None, done: int | None = None) -> RegistryError:
        """The TransferTooSlow error of a request that ran past its `deadline`."""
        assert self.min_rate is not None
        size = f"{expected_bytes} bytes" if expected_bytes else "a small request"
        progress = f", {done} bytes in" if done is not None else ""
        rate = f"{self.min_rate / 1024:g} KiB/s" if self.min_rate >= 1024 else f"{self.min_rate:g} B/s"
        allowed = self.deadline(expected_bytes)
        detail = f"too slow: over {allowed:.1f} s for {size}{progress} (min_transfer_rate {rate})"
        return self.error(TransferTooSlow, op, detail=detail)

    def retry_delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds before retry number `attempt + 1`: Retry-After if given, else backoff with jitter."""
        if response is not None:
            after = parse_retry_after(response.headers.get("retry-after"), self.clock())
            if after is not None:
                return min(after, MAX_RETRY_DELAY)
        backoff = self.retry_base_delay * 2.0**attempt
        return min(backoff * (0.5 + random.random()), MAX_RETRY_DELAY)

    async def _credentials(self, op: Op, url: str, scopes: Sequence[Scope]) -> dict[str, str]:
        if not same_origin(url, self.base_url):
            return {}  # a redirect target or foreign upload URL must not see our token
        try:
            return await self.auth.headers(scopes)
        except TokenFetchError as exc:
            raise self.error(RegistryAuthError, op, detail=str(exc)) from None

    async def open(
        self,
        op: Op,
        method: str,
        url: str,
        *,
        scopes: Sequence[Scope],
        expect: Collection[int],
        pool: Literal["meta", "blob"] = "meta",
        headers: dict[str, str] | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        retry: bool = True,
        follow_redirects: bool = False,
        expected_bytes: int | None = 0,
    ) -> httpx.Response:
        """Send a request and return its open, streamed response if its status is in `expect`.

        The caller must close the response. Anything else raises the RegistryError subclass for the
        final outcome. A body that is an async iterable is sent once: no retry, no re-authentication.
        Each attempt has a `deadline` for ``expected_bytes`` (the body sent), then raises TransferTooSlow.
        """
        allowed = self.deadline(expected_bytes)
        if allowed is not None and content is not None and not isinstance(content, bytes):
            # A streamed body comes from another request (a blob from the primary) with its own deadline,
            # from about the same moment: one base timeout more lets that one fire first when it is the
            # slow side, so the failure names the right site.
            allowed += self.base_timeout
        http = self.meta if pool == "meta" else self.blobs
        try:
            target = httpx.URL(url)  # parsed once: build_request takes the parsed URL as it is
            if target.scheme not in ("http", "https"):
                raise httpx.InvalidURL("not http(s)")
        except httpx.InvalidURL:
            # URLs can come from the registry (Location, Link): a bad one is its fault, not ours.
            raise self.error(RegistryError, op, detail="the registry gave an invalid URL") from None
        replayable = content is None or isinstance(content, bytes)
        attempt = 0
        reauthenticated = False
        while True:
            request_headers = {**(headers or {}), **await self._credentials(op, url, scopes)}
            try:
                async with asyncio.timeout(None) as window:
                    request = http.build_request(
                        method,
                        target,
                        headers=request_headers,
                        content=content,
                        extensions=_deadline_from_connection(window, allowed),
                    )
                    response = await http.send(request, stream=True, follow_redirects=follow_redirects)
            except TimeoutError:
                raise self.too_slow(op, expected_bytes) from None
            except httpx.TransportError as exc:
                if retry and replayable and attempt < self.retries:
                    await self.sleep(self.retry_delay(attempt, None))
                    attempt += 1
                    continue
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                raise self.error(RegistryUnavailable, op, detail=detail) from exc
            status = response.status_code
            if status in expect:
                return response
            if status == 401 and not reauthenticated:
                reauthenticated = True
                await response.aread()
                await response.aclose()
                try:
                    again = await self.auth.on_unauthorized(scopes, response, http)
                except TokenFetchError as exc:
                    raise self.error(RegistryAuthError, op, status=401, detail=str(exc)) from None
                if again and replayable:
                    continue
                raise self.error(RegistryAuthError, op, status=401, detail="authentication required")
            if retry and replayable and status in _RETRY_STATUSES and attempt < self.retries:
                delay = self.retry_delay(attempt, response)
                await release(response)
                await self.sleep(delay)
                attempt += 1
                continue
            raise await self.failure(op, response)

    async def failure(self, op: Op, response: httpx.Response) -> RegistryError:
        """The exception for an unexpected `response`, which it reads (a little of) and closes."""
        try:
            body = await read_capped(response, ERROR_BODY_LIMIT) if response.request.method != "HEAD" else b""
        except httpx.HTTPError:
            body = b""
        finally:
            await response.aclose()
        code, message = parse_error_body(body or b"")
        status = response.status_code
        cls = error_class_for_status(status)
        if not message:
            message = response.reason_phrase or ("unexpected answer" if cls is RegistryError else "")
        return self.error(cls, op, status=status, code=code, detail=message)
