"""Tracking-database writes on a thread of their own, so the event loop never waits on SQLite.

Another process holding the write lock, or a full file system, then delays only the coroutines that
write (issue 12, case 4: one locked database froze the receiver and `/-/health` for seconds). Reads
(`DatabaseReader`) stay on the loop on SQLite: in WAL mode a reader never waits for a writer. On
PostgreSQL they run on threads of their own, each bounded in time: a server that stops answering
(frozen, or its host gone) must not freeze the loop with it (issue 16). A write that fails on such a passing
fault is tried again, with backoff, until it succeeds, its deadline passes, or its caller stops waiting.
Writes run one at a time, in the order they were asked for, except that urgent ones (a push's copy,
and the notifications the receiver stores before its 200: issue 17) go before every ordinary write still
waiting: a push's event, blob locations and tags must not wait behind a reconcile's chunk of thousands
of tags seen, nor behind the event log. On PostgreSQL the
passing faults are a lost connection, a server restarting and the like
(`tracking.dialect.is_passing_fault`): the connection is reopened when the write is tried again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from .budget import for_a_push
from .tracking.dialect import is_passing_fault

__all__ = ["DatabaseBusy", "DatabaseReader", "DatabaseWriter", "Write", "in_place", "is_passing_fault"]

log = logging.getLogger("geo_tui.engine.database")

T = TypeVar("T")
REPORT_EVERY = 10.0  # seconds between two "still waiting" lines in the process log


# How the engine's parts write to the tracking database: ``await write(tracking.method, *args)``.
Write = Callable[..., Awaitable[Any]]


async def in_place(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """A `Write` that runs the call right here, for parts used without an engine (tests, tools)."""
    return fn(*args, **kwargs)


class DatabaseBusy(Exception):
    """A write did not get into the tracking database before its deadline (the last SQLite error says why)."""


class DatabaseReader:
    """Tracking-database reads for an event loop: ``await reader(tracking.method, *args)``.

    In place when `threads` is 0 (SQLite: a WAL read is quicker than a hop to a thread). Otherwise on
    one of `threads` threads, and the caller waits at most `timeout` seconds: then `unanswered(text)`
    is raised (a passing fault) while the thread goes on waiting for the database alone. A read that
    never started by then is dropped."""

    def __init__(
        self, threads: int, timeout: float, unanswered: Callable[[str], Exception] = TimeoutError
    ) -> None:
        self.timeout = timeout
        self._unanswered = unanswered
        self._threads = _ReadingThreads(threads) if threads > 0 else None

    @property
    def threaded(self) -> bool:
        return self._threads is not None

    async def __call__(
        self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> T:
        """``fn(*args, **kwargs)``'s result; on threads, within `timeout` (default: the reader's)."""
        if self._threads is None:
            return fn(*args, **kwargs)
        limit = self.timeout if timeout is None else timeout
        future = asyncio.wrap_future(self._threads.submit(partial(fn, *args, **kwargs)))
        try:
            async with asyncio.timeout(limit) as waited:
                return await future
        except TimeoutError:
            if not waited.expired():
                raise  # the read's own error
            raise self._unanswered(f"the tracking database answered no read in {limit:g} s") from None

    def close(self) -> None:
        """Stop taking reads; threads still waiting on the database are left to end on their own."""
        if self._threads is not None:
            self._threads.close()


class _ReadingThreads:
    """A few daemon threads that run calls: unlike a ThreadPoolExecutor's, a thread waiting on a server
    that never answers does not hold up the process's exit (the interpreter joins an executor's)."""

    def __init__(self, count: int) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._count = count
        for n in range(count):
            threading.Thread(target=self._serve, name=f"geo-tui-read-{n}", daemon=True).start()

    def submit(self, call: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._calls.put((future, call))
        return future

    def close(self) -> None:
        for _ in range(self._count):
            self._calls.put(None)

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue  # its caller stopped waiting before it started
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)


# Lanes of the queue, served lowest first: urgent writes, ordinary writes, then the stop.
_URGENT, _ORDINARY, _STOP = 0, 1, 2


@dataclass
class _Write:
    call: Callable[[], Any]
    deadline: float | None
    finish: Callable[[bool, Any], None]
    abandoned: threading.Event = field(default_factory=threading.Event)


class DatabaseWriter:
    """One thread that runs tracking-database writes for an event loop: ``await writer(fn, *args)``."""

    def __init__(self, *, retry_delay: float = 0.1, max_retry_delay: float = 2.0) -> None:
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        # (lane, sequence, write): FIFO within a lane; None (the stop) after everything queued before it
        self._queue: queue.PriorityQueue[tuple[int, int, _Write | None]] = queue.PriorityQueue()
        self._sequence = itertools.count()
        self._reported = 0.0
        self._fault: str | None = None  # the last passing fault, until a write goes in again
        self._watchers: list[Callable[[str | None], None]] = []
        self._thread = threading.Thread(target=self._run, name="geo-tui-database", daemon=True)
        self._thread.start()

    async def __call__(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        timeout: float | None = None,
        urgent: bool = False,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` on the database thread and return its result. Passing faults are
        retried until ``timeout`` seconds (None: for as long as the caller waits), then DatabaseBusy.
        The writes of a push's copy (`budget.for_a_push`), and those asked for as `urgent`, go ahead of
        the ordinary ones still waiting."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        deadline = time.monotonic() + timeout if timeout is not None else None

        def finish(ok: bool, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(_settle, future, ok, value)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        write = _Write(partial(fn, *args, **kwargs), deadline, finish)
        self._put(_URGENT if urgent or for_a_push() else _ORDINARY, write)
        try:
            if timeout is None:
                return await future
            try:
                # A write queued behind others that wait out a lock must not hold its caller longer.
                async with asyncio.timeout(timeout + 0.5):
                    return await future
            except TimeoutError:
                why = f" ({self._fault})" if self._fault else ""
                raise DatabaseBusy(f"the tracking database took no write for {timeout:.0f} s{why}") from None
        finally:
            if not future.done():
                write.abandoned.set()  # cancelled or timed out: not tried (again) once the thread gets to it

    def submit(self, fn: Callable[..., object], /, *args: Any, timeout: float = 120.0) -> None:
        """Run ``fn(*args)`` on the database thread without waiting (log lines): a failure is logged."""

        def finish(ok: bool, value: Any) -> None:
            if not ok:
                log.warning("a tracking-database write was dropped: %s", _describe(value))

        self._put(_ORDINARY, _Write(partial(fn, *args), time.monotonic() + timeout, finish))

    def watch(self, callback: Callable[[str | None], None]) -> None:
        """Call ``callback(fault)`` on the database thread when writes start failing on a passing fault
        (its description) and ``callback(None)`` when one goes in again."""
        self._watchers.append(callback)

    def _fault_changed(self, fault: str | None) -> None:
        if (fault is None) == (self._fault is None):
            self._fault = fault
            return
        self._fault = fault
        for callback in self._watchers:
            try:
                callback(fault)
            except Exception:  # a watcher's failure must not stop the writes
                log.exception("a tracking-database watcher failed")

    def close(self, timeout: float = 5.0) -> None:
        """Finish the writes queued so far (at most ``timeout`` seconds), then stop the thread."""
        self._put(_STOP, None)
        self._thread.join(timeout)

    def _put(self, lane: int, write: _Write | None) -> None:
        self._queue.put((lane, next(self._sequence), write))

    def _run(self) -> None:
        while True:
            _, _, write = self._queue.get()
            if write is None:
                return
            self._perform(write)

    def _perform(self, write: _Write) -> None:
        delay = self._retry_delay
        while not write.abandoned.is_set():
            try:
                value = write.call()
            except Exception as exc:
                expired = write.deadline is not None and time.monotonic() >= write.deadline
                if not is_passing_fault(exc) or expired:
                    write.finish(False, DatabaseBusy(_describe(exc)) if is_passing_fault(exc) else exc)
                    return
                self._fault_changed(_describe(exc))
                self._report(exc)
                write.abandoned.wait(delay)
                delay = min(delay * 2, self._max_retry_delay)
                continue
            self._fault_changed(None)
            write.finish(True, value)
            return

    def _report(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._reported >= REPORT_EVERY:
            self._reported = now
            log.warning("the tracking database refuses writes (%s); waiting", _describe(exc))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"  # one line (libpq's messages have several)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
