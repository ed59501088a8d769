"""How a console talks to an engine: the `EngineLink` interface, and `EngineThread`, which runs an
embedded engine on its own thread and event loop.

A console never waits on the network or the database. It sends commands, which return at once,
and on its own timer it `drain()`s a `Batch` of what changed. The batch is coalesced: the latest
row per (site, repository), capped log lines, summed bytes. Its size is therefore bounded by the
number of rows, however fast the engine runs and however slowly the console drains.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from geo_tui.config import Config

from .describe import describe_error
from .engine import Engine
from .listener import NotificationListener
from .model import EngineSnapshot, RepositoryDetail
from .tracking import LogRecord, RepositoryRow
from .updates import BytesCopied, EngineStatus, LogLine, RepositoryUpdated, SiteHealth, Update
from .verify import VerificationDepth, describe_results

CHECKSUM = VerificationDepth.CHECKSUM

__all__ = ["Batch", "CommandResult", "EngineLink", "EngineThread", "LinkState", "RowKey"]

RowKey = tuple[str, str]
LOG_BACKLOG = 5000
SNAPSHOT_INTERVAL = 1.0


@dataclass(frozen=True)
class CommandResult:
    """The outcome of a command, to show the operator."""

    message: str
    ok: bool = True


@dataclass(frozen=True)
class LinkState:
    """Whether a remote engine is reachable; when it is not, what the console shows is stale."""

    connected: bool
    message: str


@dataclass
class Batch:
    """Everything that changed since the previous drain."""

    rows: list[RepositoryRow] = field(default_factory=list)
    all_rows: list[RepositoryRow] | None = None  # a full load: replaces every row
    logs: list[LogRecord] = field(default_factory=list)
    bytes_by_site: dict[str, int] = field(default_factory=dict)
    health: dict[str, SiteHealth] = field(default_factory=dict)
    snapshot: EngineSnapshot | None = None
    status: EngineStatus | None = None
    details: list[RepositoryDetail] = field(default_factory=list)
    results: list[CommandResult] = field(default_factory=list)
    failure: str | None = None  # the engine stopped on an error
    link: LinkState | None = None  # a remote engine came or went

    def __bool__(self) -> bool:
        return any(
            (
                self.rows,
                self.all_rows is not None,
                self.logs,
                self.bytes_by_site,
                self.health,
                self.snapshot,
                self.status,
                self.details,
                self.results,
                self.failure,
                self.link,
            )
        )


class EngineLink(Protocol):
    """What the console needs of an engine, embedded or remote."""

    mode: str
    owns_engine: bool  # quitting the console stops the engine (else it detaches, the engine runs on)

    def start(self) -> None: ...
    def stop(self, timeout: float = 15.0) -> None: ...
    def drain(self) -> Batch: ...
    def load_detail(self, repository: str) -> None: ...
    def resync(self, keys: Sequence[RowKey] | None = None, *, failed_only: bool = False) -> None: ...
    def verify(self, keys: Sequence[RowKey] | None = None, depth: VerificationDepth = CHECKSUM) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...


class _Inbox:
    """The coalescing buffer between the engine thread and the console."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[RowKey, RepositoryRow] = {}
        self._logs: collections.deque[LogRecord] = collections.deque(maxlen=LOG_BACKLOG)
        self._batch = Batch()

    def put_update(self, update: Update) -> None:
        with self._lock:
            if isinstance(update, RepositoryUpdated):
                self._rows[update.row.key] = update.row
            elif isinstance(update, LogLine):
                self._logs.append(update.record)
            elif isinstance(update, BytesCopied):
                sums = self._batch.bytes_by_site
                sums[update.site] = sums.get(update.site, 0) + update.nbytes
            elif isinstance(update, SiteHealth):
                self._batch.health[update.site] = update
            elif isinstance(update, EngineStatus):
                self._batch.status = update

    def put(self, change: Callable[[Batch], None]) -> None:
        with self._lock:
            change(self._batch)

    def drain(self) -> Batch:
        with self._lock:
            batch, self._batch = self._batch, Batch()
            batch.rows = list(self._rows.values())
            batch.logs = list(self._logs)
            self._rows.clear()
            self._logs.clear()
        if batch.all_rows is not None:  # a full load already holds the latest of every row
            fresh = {r.key: r for r in batch.all_rows}
            fresh.update((r.key, r) for r in batch.rows)
            batch.all_rows, batch.rows = list(fresh.values()), []
        return batch


class EngineThread:
    """An embedded engine on a thread of its own. Every method returns at once; results and
    updates arrive through `drain()`."""

    mode = "embedded"
    owns_engine = True

    def __init__(self, config: Config, *, engine_factory: Callable[[Config], Engine] = Engine) -> None:
        self.config = config
        self._factory = engine_factory
        self._inbox = _Inbox()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: Engine | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._stop_requested = threading.Event()

    @property
    def engine(self) -> Engine | None:
        """The engine itself, for tests; the console uses the methods below."""
        return self._engine

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name="geo-tui-engine", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float = 15.0) -> bool:
        return self._ready.wait(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the engine cleanly (copies in flight finish or stay pending) and join the thread."""
        self._stop_requested.set()
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def drain(self) -> Batch:
        return self._inbox.drain()

    # -- commands: each runs on the engine's loop ---------------------------------------------------

    def load_detail(self, repository: str) -> None:
        async def load(engine: Engine) -> None:
            detail = await engine.repository_detail(repository)
            self._inbox.put(lambda b: b.details.append(detail))

        self._submit(load)

    def resync(self, keys: Sequence[RowKey] | None = None, *, failed_only: bool = False) -> None:
        async def run(engine: Engine) -> None:
            if keys is None:
                count = await engine.resync(failed_only=failed_only)
            else:
                count = 0
                for site, repos in _by_site(keys).items():
                    count += await engine.resync(sites=[site], repositories=repos)
            self._result(f"resync queued for {count} repositor{'y' if count == 1 else 'ies'}")

        self._submit(run)

    def verify(self, keys: Sequence[RowKey] | None = None, depth: VerificationDepth = CHECKSUM) -> None:
        async def run(engine: Engine) -> None:
            if keys is None:
                results = await engine.verify(depth=depth)
            else:
                results = []
                for site, repos in _by_site(keys).items():
                    results += await engine.verify(sites=[site], repositories=repos, depth=depth)
            self._result(describe_results(results, depth), ok=all(r.ok for r in results))

        self._submit(run)

    def pause(self) -> None:
        self._submit(_call(lambda e: e.pause()))

    def resume(self) -> None:
        self._submit(_call(lambda e: e.resume()))

    # -- the engine thread ---------------------------------------------------------------------------

    def _result(self, message: str, ok: bool = True) -> None:
        self._inbox.put(lambda b: b.results.append(CommandResult(message, ok)))

    def _submit(self, job: Callable[[Engine], Awaitable[None]]) -> None:
        if not self._ready.is_set() or self._loop is None or self._engine is None:
            self._result("the engine is not running", ok=False)
            return
        engine = self._engine

        async def guarded() -> None:
            try:
                await job(engine)
            except Exception as exc:  # reported to the operator, never raised into the UI
                self._result(describe_error(exc), ok=False)

        try:
            asyncio.run_coroutine_threadsafe(guarded(), self._loop)
        except RuntimeError:
            self._result("the engine is not running", ok=False)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._run())
        except Exception as exc:
            message = describe_error(exc)
            self._inbox.put(_setter("failure", message))
        finally:
            self._ready.set()
            loop.close()

    async def _run(self) -> None:
        self._stopping = asyncio.Event()
        engine = self._factory(self.config)
        await engine.open()
        unsubscribe = engine.subscribe(self._inbox.put_update)
        listener = NotificationListener(engine, self.config)
        try:
            await engine.start()
            await listener.start()
            self._engine = engine
            rows = engine.rows()
            self._inbox.put(_setter("all_rows", rows))
            self._ready.set()
            if self._stop_requested.is_set():
                self._stopping.set()
            while not self._stopping.is_set():
                self._inbox.put(_setter("snapshot", engine.snapshot()))
                try:
                    await asyncio.wait_for(self._stopping.wait(), SNAPSHOT_INTERVAL)
                except TimeoutError:
                    pass
        finally:
            await listener.stop()
            await engine.close()
            unsubscribe()
            self._engine = None


def _setter(name: str, value: object) -> Callable[[Batch], None]:
    """A change to the next batch that sets one field (bound now, not when the batch is built)."""

    def change(batch: Batch) -> None:
        setattr(batch, name, value)

    return change


def _call(func: Callable[[Engine], None]) -> Callable[[Engine], Awaitable[None]]:
    async def run(engine: Engine) -> None:
        func(engine)

    return run


def _by_site(keys: Sequence[RowKey]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for site, repository in keys:
        grouped.setdefault(site, []).append(repository)
    return grouped
