"""The small ASGI toolkit under geo-tui's three hand-written apps: the engine API (`service/api.py`), the
notification receiver (`service/receiver.py`) and the lab registry (`lab/`).

It holds what all three need and nothing more: the ASGI type aliases, a request header, a body read
whole up to a cap (`read_body`) or chunk by chunk (`body_chunks`), and a reply with a known length
(`send_response`, `send_json`). It imports only the standard library, so the engine and the lab, which
may not import each other, can both stand on it. uvicorn runs every app with ``lifespan="off"``
(`service/serve.py`, `lab/server.py`), so no app handles lifespan messages; an app ignores a scope type
it does not serve.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from typing import Any

__all__ = [
    "App",
    "BodyTooLarge",
    "ClientGone",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "body_chunks",
    "declared_length",
    "header",
    "read_body",
    "send_json",
    "send_response",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]


class ClientGone(ConnectionError):
    """The client went away before the request's body ended."""


class BodyTooLarge(Exception):
    """A request body (or its declared Content-Length) over the cap."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body over {limit} bytes")
        self.limit = limit


def header(scope: Scope, name: bytes) -> bytes:
    """The request header `name` (lower case), or ``b""``; the last one if it is repeated."""
    value: bytes = dict(scope.get("headers") or ()).get(name, b"")
    return value


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, when it gives one in ASCII digits."""
    declared = header(scope, b"content-length")
    return int(declared) if declared.isdigit() else None


async def body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The body as it arrives (the server's pieces, tens of KiB each); ClientGone if the client leaves."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone("client went away during the body")
        if chunk := message.get("body", b""):
            yield chunk
        if not message.get("more_body", False):
            return


async def read_body(
    receive: Receive, limit: int, *, declared: int | None = None, drain: bool = False
) -> bytes:
    """The whole body, at most `limit` bytes; BodyTooLarge beyond it, or at once when the `declared`
    length is. Without `drain` it stops reading at the cap; with it, the rest is read and dropped first
    (as Distribution does, so the client sees the answer rather than a reset). ClientGone if the client
    leaves."""
    if declared is not None and declared > limit and not drain:
        raise BodyTooLarge(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in body_chunks(receive):
        size += len(chunk)
        if size <= limit:
            parts.append(chunk)
        elif not drain:
            raise BodyTooLarge(limit)
    if size > limit:
        raise BodyTooLarge(limit)
    return b"".join(parts)


async def send_response(
    send: Send, status: int, body: bytes, content_type: bytes, headers: Headers = ()
) -> None:
    """A whole answer: `status`, its Content-Type and Content-Length, `headers`, then `body`."""
    start = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send,
    status: int,
    document: Any,
    headers: Headers = (),
    *,
    dumps: Callable[[Any], str] = json.dumps,
) -> None:
    """`document` as a JSON answer; `dumps` may scrub it first (the engine API redacts secrets)."""
    await send_response(send, status, dumps(document).encode(), b"application/json", headers)
