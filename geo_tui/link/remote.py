"""`RemoteLink`: the console's `EngineLink` to an engine's API, through the API client (client.py).

It lives on a thread of its own with its own event loop, so the console never waits on the network.
It subscribes to the update stream first, then loads the rows page by page, so nothing that changes
during the load is lost (a streamed row always replaces a loaded one). When the engine goes away the
link says so (the console marks its view stale), retries with backoff, and reloads everything when the
engine is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import WebSocketException

from geo_tui.config import Secret
from geo_tui.engine.describe import describe_error
from geo_tui.engine.tracking import LogRecord, RepositoryRow
from geo_tui.engine.updates import EngineStatus, LogLine
from geo_tui.engine.wire import WireError, decode_message, decode_messages, decode_snapshot

from .client import PAGE_SIZE, EngineApiError, EngineClient
from .link import Batch, CommandResult, EngineCall, EngineRead, LinkState, ReadFailed, _Inbox, _setter

__all__ = ["RemoteLink"]

log = logging.getLogger("geo_tui.remote")

RETRY_FIRST, RETRY_MAX = 0.25, 5.0


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
        self._client: EngineClient | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._connected = threading.Event()
        # Log lines arrive twice around a (re)load: streamed, and in the load's recent lines. Every id up to
        # _log_floor has been shown; while a load runs, the streamed ids are kept to skip them in it.
        self._log_floor = 0
        self._loading = True
        self._streamed_ids: set[int] = set()

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
        async def load(client: EngineClient) -> None:
            detail = await client.detail(repository)
            self._inbox.put(lambda b: b.details.append(detail))

        self._submit(load)

    def read(self, name: str, call: EngineRead) -> None:
        async def run(client: EngineClient) -> None:
            answer: object
            try:
                answer = await call(client)
            except EngineApiError as exc:
                answer = ReadFailed(str(exc))
            except (WireError, ValueError, TypeError) as exc:
                answer = ReadFailed(f"the engine sent what this console cannot read: {exc}")
            self._inbox.put(lambda b: b.reads.__setitem__(name, answer))

        self._submit(run)

    def command(self, call: EngineCall) -> None:
        async def run(client: EngineClient) -> None:
            answer = await call(client)
            self._result(answer.message, answer.ok)

        self._submit(run)

    # -- the link thread --------------------------------------------------------------------------

    def _result(self, message: str, ok: bool = True) -> None:
        self._inbox.put(lambda b: b.results.append(CommandResult(message, ok)))

    def _submit(self, job: Callable[[EngineClient], Awaitable[None]]) -> None:
        loop, client = self._loop, self._client
        if loop is None or loop.is_closed() or client is None:
            self._result("the engine is not reachable", ok=False)
            return

        async def guarded() -> None:
            try:
                await job(client)
            except EngineApiError as exc:
                self._result(str(exc), ok=False)
            except (WireError, ValueError, TypeError) as exc:
                self._result(f"the engine sent what this console cannot read: {exc}", ok=False)

        try:
            asyncio.run_coroutine_threadsafe(guarded(), loop)
        except RuntimeError:
            self._result("the engine is not reachable", ok=False)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._run())
        except Exception as exc:  # never into the UI: the console shows the link as stale
            self._stale(f"the link stopped: {describe_error(exc)}")
        finally:
            loop.close()

    async def _run(self) -> None:
        self._stopping = asyncio.Event()
        if self._stop_requested.is_set():
            return
        self._client = EngineClient(self.target, token=self._token)
        delay = RETRY_FIRST
        try:
            while not self._stopping.is_set():
                try:
                    await self._session(self._client)
                    reason = "the engine closed the connection"
                except EngineApiError as exc:
                    reason = str(exc)
                except (OSError, httpx.HTTPError, WebSocketException, TimeoutError) as exc:
                    reason = f"the engine at {self.target} is not reachable: {describe_error(exc)}"
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

    async def _session(self, client: EngineClient) -> None:
        """One connection: subscribe, load everything, then apply updates until it ends."""
        assert self._stopping is not None
        async with client.updates() as ws:
            kind, _ = decode_message(await ws.recv())
            if kind != "hello":
                raise WireError(f"expected hello, got {kind!r}")
            reload = asyncio.Event()
            reload.set()
            self._loading = True
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
                    await self._reload(client)
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
                        self._saw_log(body.record.id)
                    self._inbox.put_update(body)
                elif kind == "snapshot":
                    self._inbox.put(_setter("snapshot", decode_snapshot(body.get("snapshot"))))
                elif kind == "reload":
                    self._loading = True
                    reload.set()

    def _saw_log(self, record_id: int) -> None:
        if self._loading:  # the load may hold lines older than this one that no one has shown yet
            self._streamed_ids.add(record_id)
        else:
            self._log_floor = max(self._log_floor, record_id)

    async def _reload(self, client: EngineClient) -> None:
        """Load every row page by page, the log lines not yet seen, and the site cards."""
        rows = await self._load_rows(client)
        records = await client.logs(500)
        fresh: list[LogRecord] = [
            r for r in records if r.id > self._log_floor and r.id not in self._streamed_ids
        ]
        self._log_floor = max([self._log_floor, *(r.id for r in records), *self._streamed_ids])
        self._streamed_ids.clear()
        self._loading = False
        snapshot = await client.snapshot()
        self._inbox.put(_setter("all_rows", rows))
        for record in fresh:
            self._inbox.put_update(LogLine(record))
        self._inbox.put(_setter("snapshot", snapshot))
        self._inbox.put_update(EngineStatus(snapshot.running, snapshot.paused))
        self._inbox.put(_setter("link", LinkState(True, f"attached to {self.target}")))
        self._connected.set()

    async def _load_rows(self, client: EngineClient) -> list[RepositoryRow]:
        """Every row, page by page."""
        return await client.all_rows(self._page_size)

    def _stale(self, reason: str) -> None:
        log.info("engine link: %s", reason)
        self._inbox.put(_setter("link", LinkState(False, reason)))
