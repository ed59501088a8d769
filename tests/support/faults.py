"""Fault injection between geo-tui and a real registry: an httpx transport that answers some requests
itself (500, 429, 401, 503, ...), cuts a real response body part-way, or holds a request a while (a slow
registry), and passes the rest through.

    primary_faults = FaultTransport()
    primary_faults.fail("GET", r"/blobs/sha256:", 429, headers={"Retry-After": "1"}, times=2)
    primary_faults.cut("GET", r"/blobs/" + digest, after_bytes=512 * 1024)
    primary_faults.delay("GET", r"/blobs/" + digest, seconds=1.5)
    primary_faults.trickle("GET", r"/blobs/" + digest, every=2.0)   # one byte every 2 s
    primary_faults.corrupt("GET", r"/blobs/" + digest)      # same length, one byte changed
    Engine(config, transports={"primary": primary_faults})
    ...
    primary_faults.fired(rule)        # how often that rule fired; primary_faults.log has every firing
    primary_faults.clear()            # the fault is gone: every request goes to the registry again

Rules match on the method and a regex searched in the URL path; the first matching rule that still has
firings left acts. `skip` lets the first matching requests through (a token that expires mid-copy);
`times` bounds the firings (None: every time).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import httpx

__all__ = ["FaultRule", "FaultTransport", "Fired", "expired_token_challenge"]

_REASONS = {
    401: ("UNAUTHORIZED", "authentication required"),
    404: ("BLOB_UNKNOWN", "blob unknown to registry"),
    429: ("TOOMANYREQUESTS", "too many requests"),
    500: ("UNKNOWN", "unknown error"),
    503: ("UNAVAILABLE", "service unavailable"),
}


def expired_token_challenge(realm: str, repository: str, service: str = "container_registry") -> str:
    """The `WWW-Authenticate` value Distribution 2.8 sends with the 401 for an expired token (checked)."""
    return (
        f'Bearer realm="{realm}",service="{service}",scope="repository:{repository}:pull",'
        'error="invalid_token"'
    )


@dataclass
class FaultRule:
    """One fault: which requests (method, path regex), what to do, how often."""

    method: str | None  # "GET", "GET|HEAD", or None: any method
    path: re.Pattern[str]
    action: Literal["status", "cut", "delay", "corrupt", "trickle"]
    status: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    # "status": the OCI error (code, message), or a function of the request giving it; default by status
    error: tuple[str, str] | Callable[[httpx.Request], tuple[str, str]] | None = None
    detail: str | None = None  # "status": the error's `detail`, as Distribution sends the cause of a 500
    after_bytes: int = 0
    seconds: float = 0.0  # "delay": how long to hold the request; "trickle": the pause before each byte
    times: int | None = None  # None: fire on every match
    skip: int = 0  # let this many matching requests through first
    seen: int = 0
    fired: int = 0
    cut_streams: list[_CutStream] = field(default_factory=list)  # "cut": each body it broke, in order

    def matches(self, request: httpx.Request) -> bool:
        if self.method is not None and request.method not in self.method.upper().split("|"):
            return False
        return self.path.search(request.url.path) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def describe(self) -> str:
        what = {
            "status": f"answer {self.status}",
            "cut": f"cut after {self.after_bytes} bytes",
            "delay": f"delay {self.seconds} s",
            "corrupt": "change one byte of the body",
            "trickle": f"one byte every {self.seconds} s",
        }[self.action]
        return f"{self.method or '*'} {self.path.pattern}: {what}"


@dataclass(frozen=True)
class Fired:
    """A fault that happened: to which request, and what was done."""

    method: str
    path: str
    action: str
    status: int | None


class _CutStream(httpx.AsyncByteStream):
    """A real response body that breaks off after `limit` bytes, as a connection reset would."""

    def __init__(self, inner: httpx.AsyncByteStream, limit: int, request: httpx.Request) -> None:
        self._inner = inner
        self._limit = limit
        self._request = request
        self.delivered = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            room = self._limit - self.delivered
            if len(chunk) >= room:
                if room > 0:
                    self.delivered += room
                    yield chunk[:room]
                raise httpx.ReadError("[Errno 104] Connection reset by peer", request=self._request)
            self.delivered += len(chunk)
            yield chunk
        # the body was shorter than the cut: it arrives whole

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CorruptStream(httpx.AsyncByteStream):
    """A real response body with its first byte changed: as long as the original, another digest."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        first = True
        async for chunk in self._inner:
            if first and chunk:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                first = False
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _TrickleStream(httpx.AsyncByteStream):
    """A real response body handed on one byte at a time, a pause before each: alive, never stalled for
    long, and hopelessly slow (issue 12, case 5)."""

    def __init__(self, inner: httpx.AsyncByteStream, every: float) -> None:
        self._inner = inner
        self._every = every
        self.delivered = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            for i in range(len(chunk)):
                await asyncio.sleep(self._every)
                self.delivered += 1
                yield chunk[i : i + 1]

    async def aclose(self) -> None:
        await self._inner.aclose()


class FaultTransport(httpx.AsyncBaseTransport):
    """Wraps a real `httpx.AsyncHTTPTransport`; requests no rule takes go to the registry unchanged."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport()
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self.log: list[Fired] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request seen

    # -- rules -------------------------------------------------------------------------------------

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def fail(
        self,
        method: str | None,
        path: str,
        status: int,
        *,
        headers: Mapping[str, str] | None = None,
        times: int | None = None,
        skip: int = 0,
        error: tuple[str, str] | Callable[[httpx.Request], tuple[str, str]] | None = None,
        detail: str | None = None,
    ) -> FaultRule:
        """Answer `status` (with an OCI error body, `error` = (code, message), and `detail` if given)
        instead of the registry. `error` may be a function of the request: a registry that quotes what
        it received."""
        return self.add(
            FaultRule(
                method,
                re.compile(path),
                "status",
                status,
                dict(headers or {}),
                error,
                detail,
                times=times,
                skip=skip,
            )
        )

    def cut(
        self, method: str | None, path: str, after_bytes: int, *, times: int | None = None, skip: int = 0
    ) -> FaultRule:
        """Pass matching requests to the registry, but reset the response body after `after_bytes`."""
        return self.add(
            FaultRule(method, re.compile(path), "cut", after_bytes=after_bytes, times=times, skip=skip)
        )

    def delay(
        self, method: str | None, path: str, seconds: float, *, times: int | None = None, skip: int = 0
    ) -> FaultRule:
        """Hold matching requests for `seconds` (a slow registry), then pass them to the registry."""
        return self.add(FaultRule(method, re.compile(path), "delay", seconds=seconds, times=times, skip=skip))

    def corrupt(self, method: str | None, path: str, *, times: int | None = None) -> FaultRule:
        """Pass matching requests to the registry, but change the first byte of a 200 answer's body."""
        return self.add(FaultRule(method, re.compile(path), "corrupt", times=times))

    def trickle(
        self, method: str | None, path: str, every: float, *, times: int | None = None, skip: int = 0
    ) -> FaultRule:
        """Pass matching requests to the registry, but hand the response body on one byte every `every` s."""
        return self.add(FaultRule(method, re.compile(path), "trickle", seconds=every, times=times, skip=skip))

    def clear(self) -> None:
        """Remove every rule (the log stays)."""
        with self._lock:
            self._rules.clear()

    def fired(self, rule: FaultRule | None = None) -> int:
        if rule is not None:
            return rule.fired
        return len(self.log)

    # -- the transport ----------------------------------------------------------------------------

    def _take(self, request: httpx.Request) -> FaultRule | None:
        with self._lock:
            self.requests.append((request.method, request.url.path))
            for rule in self._rules:
                if rule.exhausted or not rule.matches(request):
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip:
                    continue
                rule.fired += 1
                return rule
        return None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        rule = self._take(request)
        if rule is None:
            return await self._inner.handle_async_request(request)
        if rule.action == "status":
            # The request body (an upload) is never sent: drain it so the caller's stream is finished.
            await request.aread()
            self.log.append(Fired(request.method, request.url.path, "status", rule.status))
            chosen = rule.error(request) if callable(rule.error) else rule.error
            code, message = chosen or _REASONS.get(rule.status, ("UNKNOWN", "injected fault"))
            error = {"code": code, "message": message}
            if rule.detail is not None:
                error["detail"] = rule.detail
            body = b"" if request.method == "HEAD" else json.dumps({"errors": [error]}).encode()
            headers = {"Content-Type": "application/json; charset=utf-8", **rule.headers}
            return httpx.Response(rule.status, headers=headers, content=body, request=request)
        if rule.action == "delay":
            await asyncio.sleep(rule.seconds)
            response = await self._inner.handle_async_request(request)
            self.log.append(Fired(request.method, request.url.path, "delay", response.status_code))
            return response
        response = await self._inner.handle_async_request(request)
        self.log.append(Fired(request.method, request.url.path, rule.action, response.status_code))
        if response.status_code != 200:
            return response
        assert isinstance(response.stream, httpx.AsyncByteStream)
        stream: httpx.AsyncByteStream
        if rule.action == "corrupt":
            stream = _CorruptStream(response.stream)
        elif rule.action == "trickle":
            stream = _TrickleStream(response.stream, rule.seconds)
        else:
            stream = cut = _CutStream(response.stream, rule.after_bytes, request)
            rule.cut_streams.append(cut)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=stream,
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()
