"""`RemoteLink`: the console's `EngineLink` to an engine running in `geo-tui serve`, over its API.

Like `EngineThread` it lives on a thread of its own with its own event loop, so the console never
waits on the network. It subscribes to the update stream first, then loads the rows page by page,
so nothing that changes during the load is lost (a streamed row always replaces a loaded one).
When the engine goes away the link says so (the console marks its view stale), retries with
backoff, and reloads everything when the engine is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import InvalidStatus, WebSocketException

from geo_tui.config import Secret

from .describe import describe_error
from .link import CHECKSUM, Batch, CommandResult, LinkState, RowKey, _Inbox, _setter
from .tracking import LogRecord, RepositoryRow
from .updates import EngineStatus, LogLine
from .verify import VerificationDepth
from .wire import (
    WireError,
    decode_detail,
    decode_log,
    decode_message,
    decode_messages,
    decode_rows,
    decode_snapshot,
)

__all__ = ["RemoteError", "RemoteLink", "is_unix_target", "run_command"]

log = logging.getLogger("geo_tui.remote")

PAGE_SIZE = 5000
RETRY_FIRST, RETRY_MAX = 0.25, 5.0
REQUEST_TIMEOUT = 30.0
_UNIX_HOST = "http://geo-tui"  # any host will do over a unix socket


def is_unix_target(target: str) -> bool:
    """Whether ``target`` names a unix socket (a path) rather than an http(s):// URL."""
    return not target.startswith(("http://", "https://"))


class _Refused(Exception):
    """The engine answered, but refused (401, 403, ...)."""


class RemoteError(Exception):
    """A command through a running engine's API failed; ``str(e)`` is one line."""


class RemoteLink:
    """An engine reached through its API: ``target`` is an http(s):// URL or a unix socket path."""

    owns_engine = False

    def __init__(
        self,
        target: str,
        *,
        token: Secret | None = None,
        page_size: int = PAGE_SIZE,
        retry_max: float = RETRY_MAX,
    ) -> None:
        self.target = target
        self.mode = f"attached to {target}"
        self._token = token
        self._page_size = page_size
        self._retry_max = retry_max
        self._inbox = _Inbox()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._connected = threading.Event()
        self._last_log_id = 0

    # -- EngineLink -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name="geo-tui-remote", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Detach (the engine keeps running) and join the thread."""
        self._stop_requested.set()
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_connected(self, timeout: float = 15.0) -> bool:
        """For tests and the CLI: wait until the first full load has arrived."""
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def drain(self) -> Batch:
        return self._inbox.drain()

    def load_detail(self, repository: str) -> None:
        async def load() -> None:
            document = await self._request("GET", "detail", params={"repository": repository})
            detail = decode_detail(document)
            self._inbox.put(lambda b: b.details.append(detail))

        self._submit(load)

    def resync(self, keys: Sequence[RowKey] | None = None, *, failed_only: bool = False) -> None:
        self._command("resync", _body(keys, failed_only))

    def verify(self, keys: Sequence[RowKey] | None = None, depth: VerificationDepth = CHECKSUM) -> None:
        body = _body(keys, False)
        if depth is not CHECKSUM:
            body["depth"] = str(depth)

        def check(document: dict[str, Any]) -> str | None:
            # An engine from before depths ignores the key and verifies checksums only: say so, never pass.
            if depth is not CHECKSUM and document.get("depth") != str(depth):
                return f"the engine did not run a {depth} verification (it is older than this console)"
            return None

        self._command("verify", body, timeout=None, check=check)  # a full verify takes a while

    def pause(self) -> None:
        self._command("pause", {})

    def resume(self) -> None:
        self._command("resume", {})

    # -- commands ---------------------------------------------------------------------------------

    def _command(
        self,
        name: str,
        body: dict[str, Any],
        timeout: float | None = REQUEST_TIMEOUT,
        check: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> None:
        async def run() -> None:
            document = await self._request("POST", f"commands/{name}", json=body, timeout=timeout)
            refused = check(document) if check is not None else None
            if refused is not None:
                self._result(refused, ok=False)
                return
            message = str(document.get("message") or f"{name}: done")
            self._result(message, ok=document.get("ok") is not False)

        self._submit(run)

    def _result(self, message: str, ok: bool = True) -> None:
        self._inbox.put(lambda b: b.results.append(CommandResult(message, ok)))

    def _submit(self, job: Callable[[], Awaitable[None]]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or self._client is None:
            self._result("the engine is not reachable", ok=False)
            return

        async def guarded() -> None:
            try:
                await job()
            except _Refused as exc:
                self._result(str(exc), ok=False)
            except (httpx.HTTPError, OSError) as exc:
                self._result(f"the engine is not reachable: {describe_error(exc)}", ok=False)
            except (WireError, ValueError, TypeError) as exc:
                self._result(f"the engine sent what this console cannot read: {exc}", ok=False)

        try:
            asyncio.run_coroutine_threadsafe(guarded(), loop)
        except RuntimeError:
            self._result("the engine is not reachable", ok=False)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        timeout: float | None = REQUEST_TIMEOUT,
    ) -> dict[str, Any]:
        assert self._client is not None
        response = await self._client.request(
            method, f"/api/v1/{path}", params=params, json=json, timeout=timeout
        )
        if response.status_code == 401:
            raise _Refused("the engine refused this console's token (401): check [api] token")
        if response.status_code == 403:
            raise _Refused("this console's token may only read (403)")
        try:
            document = response.json()
        except ValueError:
            raise _Refused(f"the engine answered {response.status_code} without JSON") from None
        if response.status_code != 200 or not isinstance(document, dict):
            error = document.get("error") if isinstance(document, dict) else None
            raise _Refused(f"the engine answered {response.status_code}: {error or 'no detail'}")
        return document

    # -- the link thread --------------------------------------------------------------------------

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._run())
        except Exception as exc:  # never into the UI: the console shows the link as stale
            self._stale(f"the link stopped: {describe_error(exc)}")
        finally:
            loop.close()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token.reveal()}"} if self._token is not None else {}

    async def _run(self) -> None:
        self._stopping = asyncio.Event()
        if self._stop_requested.is_set():
            return
        if is_unix_target(self.target):
            transport = httpx.AsyncHTTPTransport(uds=self.target)
            self._client = httpx.AsyncClient(
                transport=transport, base_url=_UNIX_HOST, headers=self._headers(), trust_env=False
            )
        else:
            self._client = httpx.AsyncClient(
                base_url=self.target.rstrip("/"), headers=self._headers(), trust_env=False
            )
        delay = RETRY_FIRST
        try:
            while not self._stopping.is_set():
                try:
                    await self._session()
                    reason = "the engine closed the connection"
                except _Refused as exc:
                    reason = str(exc)
                except InvalidStatus as exc:
                    status = exc.response.status_code
                    reason = (
                        "the engine refused this console's token (401): check [api] token"
                        if status == 401
                        else f"the engine answered {status} to the update stream"
                    )
                except (OSError, httpx.HTTPError, WebSocketException, TimeoutError) as exc:
                    reason = f"the engine is not reachable: {describe_error(exc)}"
                except (WireError, ValueError, TypeError, KeyError) as exc:
                    reason = f"the engine sent what this console cannot read: {exc}"
                if self._connected.is_set():
                    delay = RETRY_FIRST  # it was up: try again soon
                self._connected.clear()
                if self._stopping.is_set():
                    break
                self._stale(f"{reason}; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(self._retry_max, delay * 2)
        finally:
            await self._client.aclose()

    def _open_stream(self) -> Any:
        options: dict[str, Any] = {
            "additional_headers": self._headers(),
            "open_timeout": 10,
            "ping_interval": 5,
            "ping_timeout": 10,
            "max_size": 16 * 1024 * 1024,
            "compression": None,
        }
        if is_unix_target(self.target):
            return unix_connect(self.target, uri="ws://geo-tui/api/v1/updates", **options)
        parts = urlsplit(self.target)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return connect(f"{scheme}://{parts.netloc}/api/v1/updates", proxy=None, **options)

    async def _session(self) -> None:
        """One connection: subscribe, load everything, then apply updates until it ends."""
        assert self._stopping is not None
        async with self._open_stream() as ws:
            kind, _ = decode_message(await ws.recv())
            if kind != "hello":
                raise WireError(f"expected hello, got {kind!r}")
            reload = asyncio.Event()
            reload.set()
            reader = asyncio.ensure_future(self._read(ws, reload))
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                while True:
                    waiter = asyncio.ensure_future(reload.wait())
                    await asyncio.wait([waiter, reader, stopping], return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if stopping.done():
                        return
                    if reader.done():
                        reader.result()  # raises what ended the stream
                        return
                    reload.clear()
                    await self._reload()
            finally:
                reader.cancel()
                stopping.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    async def _read(self, ws: ClientConnection, reload: asyncio.Event) -> None:
        async for text in ws:
            for kind, body in decode_messages(text):
                if not isinstance(body, dict):
                    if isinstance(body, LogLine):
                        self._last_log_id = max(self._last_log_id, body.record.id)
                    self._inbox.put_update(body)
                elif kind == "snapshot":
                    self._inbox.put(_setter("snapshot", decode_snapshot(body.get("snapshot"))))
                elif kind == "reload":
                    reload.set()

    async def _reload(self) -> None:
        """Load every row page by page, the log lines not yet seen, and the site cards."""
        rows = await self._load_rows()
        logs = await self._request("GET", "logs", params={"limit": 500})
        records = [decode_log(r) for r in logs.get("records") or []]
        fresh: list[LogRecord] = [r for r in records if r.id > self._last_log_id]
        self._last_log_id = max([self._last_log_id, *(r.id for r in records)])
        snapshot = decode_snapshot(await self._request("GET", "snapshot"))
        self._inbox.put(_setter("all_rows", rows))
        for record in fresh:
            self._inbox.put_update(LogLine(record))
        self._inbox.put(_setter("snapshot", snapshot))
        self._inbox.put_update(EngineStatus(snapshot.running, snapshot.paused))
        self._inbox.put(_setter("link", LinkState(True, f"attached to {self.target}")))
        self._connected.set()

    async def _load_rows(self) -> list[RepositoryRow]:
        """Every row, page by page."""
        rows: list[RepositoryRow] = []
        offset: int | None = 0
        while offset is not None:
            page = await self._request("GET", "rows", params={"offset": offset, "limit": self._page_size})
            rows.extend(decode_rows(page.get("rows")))
            next_offset = page.get("next_offset")
            offset = int(next_offset) if next_offset is not None else None
        return rows

    def _stale(self, reason: str) -> None:
        log.info("engine link: %s", reason)
        self._inbox.put(_setter("link", LinkState(False, reason)))


def run_command(target: str, token: Secret | None, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """Run one command on the engine at ``target`` and wait for its answer (for the CLI).
    Raises RemoteError with one line to show."""
    headers = {"Authorization": f"Bearer {token.reveal()}"} if token is not None else {}
    if is_unix_target(target):
        client = httpx.Client(transport=httpx.HTTPTransport(uds=target), base_url=_UNIX_HOST, headers=headers)
    else:
        client = httpx.Client(base_url=target.rstrip("/"), headers=headers, trust_env=False)
    try:
        with client:
            response = client.post(f"/api/v1/commands/{name}", json=body, timeout=None)
    except (httpx.HTTPError, OSError) as exc:
        raise RemoteError(f"cannot reach the running engine at {target}: {describe_error(exc)}") from None
    if response.status_code == 401:
        raise RemoteError(f"the engine at {target} refused the token (401): check [api] token")
    if response.status_code == 403:
        raise RemoteError(f"the engine at {target} lets this token only read (403): use [api] token")
    try:
        document = response.json()
    except ValueError:
        document = None
    if response.status_code != 200 or not isinstance(document, dict):
        error = document.get("error") if isinstance(document, dict) else None
        raise RemoteError(f"the engine at {target} answered {response.status_code}: {error or 'no detail'}")
    return document


def _body(keys: Sequence[RowKey] | None, failed_only: bool) -> dict[str, Any]:
    if keys is not None:
        return {"keys": [list(k) for k in keys]}
    return {"failed": True} if failed_only else {}
