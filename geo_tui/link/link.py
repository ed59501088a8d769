"""How a console talks to an engine: the `EngineLink` interface, what it hands over (`Batch`), and the
buffer that coalesces it. Its one implementation is remote.py's `RemoteLink` (and spawned.py's
`SpawnedEngine`, the console's own engine in a child process): every engine is reached through its API.

A console never waits on the network or the database. It sends commands, which return at once,
and on its own timer it `drain()`s a `Batch` of what changed. The batch is coalesced: the latest
row per (site, repository), capped log lines, summed bytes. Its size is therefore bounded by the
number of rows, however fast the engine runs and however slowly the console drains.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from geo_tui.engine.model import EngineSnapshot, RepositoryDetail
from geo_tui.engine.tracking import LogRecord, RepositoryRow
from geo_tui.engine.updates import BytesCopied, EngineStatus, LogLine, RepositoryUpdated, SiteHealth, Update
from geo_tui.engine.wire import CommandAnswer, RowKey

if TYPE_CHECKING:
    from .client import EngineClient

__all__ = [
    "Batch",
    "CommandResult",
    "EngineCall",
    "EngineLink",
    "EngineRead",
    "LinkState",
    "ReadFailed",
    "RowKey",
]

LOG_BACKLOG = 5000
# A command for the link to run: a call of one of the API client's command methods.
EngineCall = Callable[["EngineClient"], Awaitable[CommandAnswer]]
# A read for the link to run: a call of one of the API client's read methods (say ``client.workers()``).
EngineRead = Callable[["EngineClient"], Awaitable[object]]


@dataclass(frozen=True)
class ReadFailed:
    """A read that got no answer: why, in one line (the console shows it where the answer would be)."""

    message: str


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
    reads: dict[str, object] = field(default_factory=dict)  # the latest answer (or ReadFailed) per read
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
                self.reads,
                self.failure,
                self.link,
            )
        )


class EngineLink(Protocol):
    """What the console needs of an engine: its own (a child process) or one it attached to."""

    mode: str
    owns_engine: bool  # quitting the console stops the engine (else it detaches, the engine runs on)

    def start(self) -> None: ...
    def stop(self, timeout: float = 15.0) -> None: ...
    def drain(self) -> Batch: ...
    def load_detail(self, repository: str) -> None: ...

    def read(self, name: str, call: EngineRead) -> None:
        """Run ``call`` on the link's own loop; its answer (or a `ReadFailed`) arrives in a later batch
        as ``reads[name]``. Adding a read to the API needs nothing new here."""
        ...

    def command(self, call: EngineCall) -> None:
        """Run ``call`` (say ``lambda engine: engine.pause()``) on the link's own loop; its answer, or
        why there is none, arrives as a `CommandResult` in a later batch."""
        ...


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


def _setter(name: str, value: object) -> Callable[[Batch], None]:
    """A change to the next batch that sets one field (bound now, not when the batch is built)."""

    def change(batch: Batch) -> None:
        setattr(batch, name, value)

    return change
