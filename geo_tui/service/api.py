"""The engine API: what a console attached to `geo-tui serve` reads and commands, as a small ASGI app.

Under ``/api/v1/``:

    GET  info                     the engine's sites and state; a cheap "is it there?"
    GET  snapshot                 site cards (counts, health, throughput)
    GET  rows?site=&state=&contains=&offset=&limit=   repository rows, paged and filtered by the engine
    GET  logs?limit=              the most recent event log lines
    GET  detail?repository=       tags on every site side by side, rows and history of one repository
    GET  workers                  every worker sharing the tracking database: heartbeat age, stale or
                                  not, listen addresses, repositories in flight, throughput
    POST commands/{resync,verify,pause,resume}   the commands of wire.py (`Resync`, ...), run by
                                  handlers.py: {"keys": [[site, repo], ...]} | {"failed": true} | {},
                                  with "sites": [...] to narrow "failed" or all; resync takes
                                  "blobs": true (look below matching tags), verify takes "depth":
                                  "checksum" | "deep" | "content" (absent: checksum) and "sample"; its
                                  answer names the "depth" it ran (an engine without depths names none)
    WS   updates                  the engine's typed updates (see wire.py), a snapshot every second

A parameter or field of the wrong type or range, or a field a command does not take, gets 400 and a
message naming it; nothing is queued.

Access: ``Authorization: Bearer <token>``. The full token may do everything, the read token only read
(commands get 403). With no token configured (only allowed on a unix socket, whose mode limits who may
connect) everyone who can connect may do everything. Tokens are compared in constant time.

Every watching console gets its own bounded queue: a slow one is told to reload, never slows the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from geo_tui._asgi import (
    App,
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    send_json,
)
from geo_tui.config import Secret
from geo_tui.engine.describe import describe_error
from geo_tui.engine.engine import Engine
from geo_tui.engine.model import workers_view
from geo_tui.engine.tracking import SyncState
from geo_tui.engine.tracking.dialect import is_passing_fault
from geo_tui.engine.updates import Update
from geo_tui.engine.wire import (
    WIRE_VERSION,
    InvalidCommand,
    UnknownCommand,
    decode_command,
    encode_answer,
    encode_batch,
    encode_detail,
    encode_log,
    encode_message,
    encode_rows,
    encode_snapshot,
    encode_update,
    encode_workers,
)

from .handlers import CommandHandlers

__all__ = ["API_PREFIX", "ApiApp", "mount_api"]

log = logging.getLogger("geo_tui.api")

API_PREFIX = "/api/v1/"
PAGE_LIMIT = 5000
MAX_BODY = 16 * 1024 * 1024
STREAM_QUEUE = 10_000
# A console's link thread wakes once a frame: batching updates keeps it from taking the console's
# interpreter lock hundreds of times a second during a backfill.
STREAM_PACE = 0.05
STREAM_BATCH = 2_000
SNAPSHOT_INTERVAL = 1.0

READ, WRITE = "read", "write"
_DIGITS = re.compile(r"[0-9]{1,19}")


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Stream:
    """One watching console: a bounded queue of encoded messages."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(size)

    def offer(self, text: str | None) -> None:
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            # Too slow to keep up: drop what it has not read and have it reload the whole state.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(encode_message("reload"))


class ApiApp:
    """The engine API over one running engine, served in the engine's own event loop."""

    def __init__(
        self,
        engine: Engine,
        *,
        token: Secret | None,
        read_token: Secret | None = None,
        queue_size: int = STREAM_QUEUE,
        snapshot_interval: float = SNAPSHOT_INTERVAL,
    ) -> None:
        self._engine = engine
        self._commands = CommandHandlers(engine)
        self._token = token.reveal().encode() if token is not None else None
        self._read_token = read_token.reveal().encode() if read_token is not None else None
        self._queue_size = queue_size
        self._snapshot_interval = snapshot_interval
        self._streams: set[_Stream] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._snapshots: asyncio.Task[None] | None = None

    # -- access ---------------------------------------------------------------------------------

    def _access(self, scope: Scope) -> str | None:
        if self._token is None and self._read_token is None:
            return WRITE  # a unix socket without tokens: its file mode decides who connects
        scheme, _, credential = header(scope, b"authorization").partition(b" ")
        if scheme.lower() != b"bearer" or not credential:
            return None
        # Compare against both every time, so timing tells nothing about which one was close.
        full = self._token is not None and hmac.compare_digest(credential, self._token)
        read = self._read_token is not None and hmac.compare_digest(credential, self._read_token)
        return WRITE if full else (READ if read else None)

    # -- ASGI -------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        access = self._access(scope)
        if access is None:
            await send_json(send, 401, {"error": "unauthorized"}, [(b"www-authenticate", b"Bearer")])
            return
        path = scope.get("path", "").removeprefix(API_PREFIX.rstrip("/")).strip("/")
        method = scope.get("method", "GET")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        try:
            if method == "GET" and path in self._READERS:
                document = await self._READERS[path](self, query)
            elif method == "POST" and path.startswith("commands/"):
                if access != WRITE:
                    raise _Refused(403, "this token may only read")
                document = await self._command(path.removeprefix("commands/"), await _read_json(receive))
            else:
                raise _Refused(404, "not found")
        except _Refused as exc:
            await send_json(send, exc.status, {"error": str(exc)})
            return
        except Exception as exc:  # reported to the caller; the engine keeps running
            status = 503 if is_passing_fault(exc) else 500  # 503: the tracking database away, said elsewhere
            if status == 500:
                log.exception("engine API %s %s failed", method, path)
            await send_json(send, status, {"error": describe_error(exc)}, dumps=self._dumps)
            return
        await send_json(send, 200, document, dumps=self._dumps)

    def _dumps(self, document: Any) -> str:
        """What leaves through the API: free of the configured secrets, whatever a registry echoed."""
        return self._engine.redactor.dumps(document)

    # -- reading ----------------------------------------------------------------------------------

    async def _info(self, query: dict[str, list[str]]) -> dict[str, Any]:
        config = self._engine.config
        return {
            "v": WIRE_VERSION,
            "database": config.engine.database_name,
            "primary": config.primary.name,
            "secondaries": self._engine.secondary_names,
            "running": self._engine.running,
            "paused": self._engine.paused,
        }

    async def _snapshot(self, query: dict[str, list[str]]) -> dict[str, Any]:
        return encode_snapshot(await self._engine.read.snapshot())

    async def _rows(self, query: dict[str, list[str]]) -> dict[str, Any]:
        offset = _integer(query, "offset", 0, 0, 1 << 62)
        limit = _integer(query, "limit", PAGE_LIMIT, 1, PAGE_LIMIT)
        sites = query.get("site") or None
        try:
            states = [SyncState(s) for s in query["state"]] if "state" in query else None
        except ValueError:
            raise _Refused(400, f"state: one of {', '.join(SyncState)}") from None
        contains = (query.get("contains") or [""])[0]
        rows = await self._engine.read(
            self._engine.tracking.rows,
            sites=sites,
            states=states,
            contains=contains or None,
            limit=limit + 1,
            offset=offset,
        )
        more = len(rows) > limit
        return {
            "rows": encode_rows(rows[:limit]),
            "next_offset": offset + limit if more else None,
        }

    async def _logs(self, query: dict[str, list[str]]) -> dict[str, Any]:
        limit = _integer(query, "limit", 500, 1, 10_000)
        records = await self._engine.read(self._engine.tracking.recent_log, limit)
        return {"records": [encode_log(r) for r in records]}

    async def _detail(self, query: dict[str, list[str]]) -> dict[str, Any]:
        repository = (query.get("repository") or [""])[0]
        if not repository:
            raise _Refused(400, "repository: required")
        return encode_detail(await self._engine.repository_detail(repository))

    async def _workers(self, query: dict[str, list[str]]) -> dict[str, Any]:
        tracking = self._engine.tracking
        # stale after a lease without a heartbeat (three missed): its leases have run out too
        stale_after = self._engine.config.engine.lease_seconds
        workers, leased = await self._engine.read(lambda: (tracking.workers(), tracking.leased()))
        view = workers_view(workers, leased, tracking.now(), stale_after)
        return encode_workers(view)

    _READERS: dict[str, Callable[[ApiApp, dict[str, list[str]]], Awaitable[dict[str, Any]]]] = {
        "info": _info,
        "snapshot": _snapshot,
        "rows": _rows,
        "logs": _logs,
        "detail": _detail,
        "workers": _workers,
    }

    # -- commands ---------------------------------------------------------------------------------

    async def _command(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Decode the command (wire.py), run it by its handler (handlers.py), encode the answer."""
        try:
            command = decode_command(name, body, secondaries=self._engine.secondary_names)
            answer = await self._commands.handle(command)
        except UnknownCommand as exc:
            raise _Refused(404, str(exc)) from None
        except InvalidCommand as exc:
            raise _Refused(400, str(exc)) from None
        return encode_answer(answer)

    # -- the update stream ------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if scope.get("path", "").rstrip("/") != API_PREFIX + "updates":
            await send({"type": "websocket.close", "code": 4404})
            return
        if self._access(scope) is None:
            await _deny_websocket(scope, send)
            return
        await send({"type": "websocket.accept"})
        stream = _Stream(self._queue_size)
        self._watch(stream)
        try:
            await send({"type": "websocket.send", "text": encode_message("hello")})
            await _pump(stream, receive, send)
        finally:
            self._unwatch(stream)

    def _watch(self, stream: _Stream) -> None:
        self._streams.add(stream)
        if self._unsubscribe is None:
            self._unsubscribe = self._engine.subscribe(self._fan_out)
        if self._snapshots is None or self._snapshots.done():
            self._snapshots = asyncio.ensure_future(self._snapshots_forever())

    def _unwatch(self, stream: _Stream) -> None:
        self._streams.discard(stream)
        if not self._streams:
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            if self._snapshots is not None:
                self._snapshots.cancel()
                self._snapshots = None

    def _fan_out(self, update: Update) -> None:
        text = self._dumps(encode_update(update))
        for stream in list(self._streams):
            stream.offer(text)

    async def _snapshots_forever(self) -> None:
        while self._streams:
            with contextlib.suppress(Exception):  # the database closing under a shutdown
                snapshot = self._engine.redactor.scrub(encode_snapshot(await self._engine.read.snapshot()))
                text = encode_message("snapshot", snapshot=snapshot)
                for stream in list(self._streams):
                    stream.offer(text)
            await asyncio.sleep(self._snapshot_interval)

    def close(self) -> None:
        """End every stream (the engine is going away)."""
        for stream in list(self._streams):
            stream.offer(None)


async def _pump(stream: _Stream, receive: Receive, send: Send) -> None:
    """Send queued messages until the console leaves or the stream is closed."""

    async def until_disconnect() -> None:
        while (await receive())["type"] != "websocket.disconnect":
            pass

    leaving = asyncio.ensure_future(until_disconnect())
    loop = asyncio.get_running_loop()
    sent_at = -STREAM_PACE
    try:
        while True:
            getting = asyncio.ensure_future(stream.queue.get())
            await asyncio.wait([getting, leaving], return_when=asyncio.FIRST_COMPLETED)
            if leaving.done():
                getting.cancel()
                return
            # At most one frame per STREAM_PACE: what arrives meanwhile goes in the same frame.
            wait = sent_at + STREAM_PACE - loop.time()
            if wait > 0:
                await asyncio.wait([leaving], timeout=wait)
                if leaving.done():
                    getting.cancel()
                    return
            texts: list[str] = []
            text = getting.result()
            while text is not None:
                texts.append(text)
                if len(texts) >= STREAM_BATCH or stream.queue.empty():
                    break
                text = stream.queue.get_nowait()
            closing = text is None
            if texts:
                await send({"type": "websocket.send", "text": encode_batch(texts)})
                sent_at = loop.time()
            if closing:
                await send({"type": "websocket.close", "code": 1001})
                return
    except OSError:
        return  # the console went away mid-send
    finally:
        leaving.cancel()


async def _deny_websocket(scope: Scope, send: Send) -> None:
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = json.dumps({"error": "unauthorized"}).encode()
        headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 4401})


def mount_api(api: App, other: App) -> App:
    """One ASGI app: ``/api/v1/`` (and every websocket) to the API, the rest to ``other``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" or str(scope.get("path", "")).startswith(API_PREFIX):
            await api(scope, receive, send)
        else:
            await other(scope, receive, send)

    return app


async def _read_json(receive: Receive) -> dict[str, Any]:
    try:
        body = await read_body(receive, MAX_BODY)
    except ClientGone:
        raise _Refused(400, "the request was cut short") from None
    except BodyTooLarge:
        raise _Refused(413, f"body over {MAX_BODY} bytes") from None
    if not body.strip():
        return {}
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise _Refused(400, "the body is not JSON") from None
    if not isinstance(document, dict):
        raise _Refused(400, "the body must be a JSON object")
    return document


def _integer(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    raw = (query.get(name) or [str(default)])[0]
    # ASCII digits only: str.isdigit() accepts "²" (int() refuses it) and other scripts' digits.
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise _Refused(400, f"{name}: a whole number from {low} to {high}")
    return int(raw)
