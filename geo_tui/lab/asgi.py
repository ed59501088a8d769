"""The lab registry's layer over the shared ASGI toolkit (geo_tui._asgi): requests, Distribution's error
answers, responses that stream or answer HEAD, and the access log."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl

from geo_tui._asgi import BodyTooLarge, Receive, Scope, Send, body_chunks, read_body

__all__ = ["AccessLog", "Failure", "Receive", "Request", "Response", "Scope", "Send", "error_body"]

# Distribution's messages for the error codes it uses (docs/spec/api.md, registry/api/errcode).
MESSAGES = {
    "BLOB_UNKNOWN": "blob unknown to registry",
    "BLOB_UPLOAD_INVALID": "blob upload invalid",
    "BLOB_UPLOAD_UNKNOWN": "blob upload unknown to registry",
    "DIGEST_INVALID": "provided digest did not match uploaded content",
    "MANIFEST_BLOB_UNKNOWN": "blob unknown to registry",
    "MANIFEST_INVALID": "manifest invalid",
    "MANIFEST_UNKNOWN": "manifest unknown",
    "MANIFEST_UNVERIFIED": "manifest failed signature verification",
    "NAME_INVALID": "invalid repository name",
    "NAME_UNKNOWN": "repository name not known to registry",
    "PAGINATION_NUMBER_INVALID": "invalid number of results requested",
    "SIZE_INVALID": "provided length did not match content length",
    "UNAUTHORIZED": "authentication required",
    "UNKNOWN": "unknown error",
    "DENIED": "requested access to the resource is denied",
    "UNSUPPORTED": "The operation is unsupported.",
}


def error_body(errors: Iterable[tuple[str, Any]]) -> bytes:
    """``{"errors": [{"code", "message", "detail"}]}`` for (code, detail) pairs."""
    return json.dumps(
        {"errors": [{"code": code, "message": MESSAGES.get(code, code), "detail": d} for code, d in errors]}
    ).encode()


class Failure(Exception):
    """An error answer: a status and one or more (code, detail) pairs, with extra headers."""

    def __init__(
        self, status: int, code: str, detail: Any = None, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(code)
        self.status = status
        self.errors: list[tuple[str, Any]] = [(code, detail)]
        self.headers = headers or {}

    def response(self) -> Response:
        body = error_body(self.errors)
        headers = {"Content-Type": "application/json; charset=utf-8", **self.headers}
        return Response(self.status, headers, body)


@dataclass
class Request:
    """One HTTP request: method, path, query (first value per key), lower-case headers, streamed body.

    `path` is percent-decoded, as Go's router sees it (so `%2E%2E` is `..`); `raw_path` is as sent.
    """

    method: str
    path: str
    raw_path: str
    raw_query: str
    headers: dict[str, str]
    client: str
    receive: Receive

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> Request:
        headers: dict[str, str] = {}
        for key, value in scope.get("headers", []):
            name, text = key.decode("latin-1").lower(), value.decode("latin-1")
            headers[name] = f"{headers[name]}, {text}" if name in headers else text  # repeated: a list
        client = scope.get("client") or ("-", 0)
        return cls(
            method=scope["method"],
            path=scope["path"],
            raw_path=scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?", 1)[0],
            raw_query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            client=str(client[0]),
            receive=receive,
        )

    @property
    def query(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for key, value in parse_qsl(self.raw_query, keep_blank_values=True):
            values.setdefault(key, value)
        return values

    @property
    def uri(self) -> str:
        return f"{self.raw_path}?{self.raw_query}" if self.raw_query else self.raw_path

    @property
    def base_url(self) -> str:
        return f"http://{self.headers.get('host', 'localhost')}"

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (the ASGI server's pieces, tens of KiB each); a ConnectionError
        (ClientGone) if the client leaves first."""
        return body_chunks(self.receive)

    async def body(self, limit: int) -> bytes | None:
        """The whole body, or None when it is longer than `limit` bytes (the rest is drained)."""
        try:
            return await read_body(self.receive, limit, drain=True)
        except BodyTooLarge:
            return None


@dataclass
class Response:
    """An answer: status, headers, and a body of bytes or an iterator of byte chunks with a known length."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""
    length: int | None = None

    @classmethod
    def json(cls, status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
        body = json.dumps(document).encode()
        return cls(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)

    async def send(self, send: Send, *, head: bool) -> int:
        """Send the answer; return the body bytes counted for the access log."""
        written = len(self.body) if isinstance(self.body, bytes) else 0
        length = self.length if self.length is not None else written
        headers = {"Content-Length": str(length), **self.headers}
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
            }
        )
        if head:
            await send({"type": "http.response.body", "body": b""})
            return written
        if isinstance(self.body, bytes):
            await send({"type": "http.response.body", "body": self.body})
            return written
        sent = 0
        for chunk in self.body:
            sent += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return sent


class AccessLog:
    """One Apache combined line per request, in the format of Distribution's access log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", buffering=1)

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()

    def write(self, request: Request, status: int, size: int) -> None:
        if self._handle is None:
            return
        when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        referer = request.headers.get("referer", "")
        agent = request.headers.get("user-agent", "")
        self._handle.write(
            f'{request.client} - - [{when}] "{request.method} {request.uri} HTTP/1.1" {status} {size} '
            f'"{referer}" "{agent}"\n'
        )
