"""What other workers changed, brought to this worker's watchers (issue 16: a console attached to any
worker shows the cluster's state), and the pause every worker shares.

Each engine tells its own watchers what it changes (`Recorder.row_changed`, `Engine.log`). On
PostgreSQL the tracking database also announces every change of a repositories row and every log line
stored (migration 7's triggers, on `postgres.CHANGE_CHANNEL`), and `WakeListener` hands each notify
here with the backend that sent it. A notify from this worker's own writing connection is news to
nobody; another's names the rows (or the log line) to read again, and they are read in one query per
batch and broadcast as `RepositoryUpdated` and `LogLine`. A statement that changed more than
`CHANGED_KEYS_LIMIT` rows, and listening again after a lost connection, send the watchers a `Reload`:
each reads everything again once. All of it only while someone watches: the cost follows the changes
announced, never the repository count.

The pause lives in the database (meta ``paused``): pausing through any worker pauses them all, a worker
started later starts paused, and each hears of a change by its notify (or re-reads it on `resync`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from .describe import describe_error
from .tracking import PauseState
from .updates import EngineStatus, LogLine, Reload, RepositoryUpdated

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["ClusterView", "read_change"]

log = logging.getLogger("geo_tui.engine")

Key = tuple[str, str]
RETRY = 1.0  # seconds before a re-read that failed (the database away) is tried again


def read_change(payload: str) -> tuple[str, float | None, str]:
    """(kind, when sent, the rest) of a change notify: "rows", "many", "log", "pause", or "resync"."""
    kind, _, rest = payload.partition(" ")
    sent, _, body = rest.partition(" ")
    try:
        return kind, float(sent), body
    except ValueError:
        return kind, None, body


class ClusterView:
    """Turns change notifies into updates for this engine's watchers, and keeps `engine.paused`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._keys: set[Key] = set()
        self._log_ids: set[int] = set()
        self._reload = False
        self._pause = False
        self._oldest: float | None = None  # the sent time of the oldest notify not yet shown
        self._task: asyncio.Task[None] | None = None

    # -- the pause -------------------------------------------------------------------------------

    def load_pause(self) -> None:
        """At open: start paused if the cluster is (a worker started during a maintenance stays idle)."""
        state = self._engine.tracking.pause_state()
        self._engine.paused = state.paused
        self._engine.pause_state = state

    async def set_pause(self, paused: bool) -> PauseState:
        """Pause or resume every worker on the database: stored, then announced to all."""
        engine = self._engine
        state = PauseState(paused, engine.leases.owner, engine._clock())
        await engine._db(engine.tracking.set_pause, state)
        self._apply_pause(state)
        return state

    def _apply_pause(self, state: PauseState) -> None:
        engine = self._engine
        changed = state.paused != engine.paused
        engine.paused, engine.pause_state = state.paused, state
        if changed:
            engine._emit(EngineStatus(engine.running, state.paused))
            if not state.paused:
                engine._poke()
                engine._pushes.wake("local", None)

    # -- notifies --------------------------------------------------------------------------------

    def changed(self, payload: str, pid: int | None) -> None:
        """A change notify (on the loop); ``pid``: the backend that sent it (None: listening again)."""
        kind, sent, body = read_change(payload)
        if kind in ("pause", "resync"):
            self._pause = True
        if kind in ("many", "resync"):
            self._reload = True
        elif kind in ("rows", "log"):
            if pid is not None and pid == self._engine.tracking.writer_pid:
                return  # this worker's own change: its watchers were told as it made it
            if not self._engine._broadcast.watched:
                return  # nobody to tell: a watcher that comes reads everything first
            try:
                if kind == "rows":
                    self._keys.update((str(s), str(r)) for s, r in json.loads(body))
                else:
                    self._log_ids.add(int(body))
            except (ValueError, TypeError):
                log.warning("a change notify this engine cannot read: %.200s", payload)
                return
        elif kind not in ("pause", "resync"):
            return
        if sent is not None and (self._oldest is None or sent < self._oldest):
            self._oldest = sent
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._show())

    async def _show(self) -> None:
        """Read what was named and tell the watchers, until nothing is left: what arrives while a read
        runs goes in the next one."""
        engine = self._engine
        while self._keys or self._log_ids or self._reload or self._pause:
            keys, self._keys = self._keys, set()
            ids, self._log_ids = self._log_ids, set()
            reload, self._reload = self._reload, False
            pause, self._pause = self._pause, False
            oldest, self._oldest = self._oldest, None
            tracking = engine.tracking
            try:
                state = await asyncio.to_thread(tracking.pause_state) if pause else None
                rows = await asyncio.to_thread(tracking.rows_of, sorted(keys)) if keys else []
                records = await asyncio.to_thread(tracking.log_records, sorted(ids)) if ids else []
            except Exception as exc:  # the database away: try again, the notifies are not lost
                log.warning("reading what other workers changed failed: %s", describe_error(exc))
                self._keys |= keys
                self._log_ids |= ids
                self._reload, self._pause = self._reload or reload, self._pause or pause
                await asyncio.sleep(RETRY)
                continue
            if state is not None:
                self._apply_pause(state)
            if reload:
                engine._emit(Reload("other workers changed many rows"))
            for row in rows:
                engine._emit(RepositoryUpdated(row))
            for record in records:
                engine._emit(LogLine(record))
            if oldest is not None and (rows or records):
                engine.metrics.cluster_change_latency.observe(max(0.0, engine._clock() - oldest))
