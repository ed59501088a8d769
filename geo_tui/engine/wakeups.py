"""Waking the engine's parts when work is queued, and knowing whether the tracking database answers.

A part that waits for work (the scheduler, the push copier) waits on a `Wake`: set by whoever queued
work in this process (a receiver's event, a console's resync, a job that ended), by a NOTIFY from the
tracking database (another engine, or any process, committed work: `WakeListener`), or, failing both,
by its polling backstop (``[engine] poll_interval``), which covers a notify lost with a dropped
connection. Each wake is counted by its cause, and a notified one by how long it took from the
committing transaction to the part awake (`geo_tui_wake_seconds`).

`DatabaseState` is the engine's one view of whether the tracking database answers: the database thread,
the listen connection and the scheduler's reads report to it; `/-/health`, `/metrics` and the log show
it (an outage starts and ends with a line), so an engine without its database never stops in silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .tracking import tracking_database

if TYPE_CHECKING:
    from .engine import Engine
    from .listen import WakeListener
    from .metrics import EngineMetrics

__all__ = ["DatabaseState", "Wake", "Wakeups"]


class Wake:
    """An asyncio event that remembers why it was first set since it was last cleared, and when the
    notify that set it was sent: `woke()` after a wait names the cause ("backstop": nothing set it)."""

    def __init__(
        self, part: str, metrics: EngineMetrics | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        # Made on the engine's loop: the event binds to the loop that first waits on it.
        self.part = part
        self._metrics = metrics
        self._clock = clock  # the engine's: a notify is stamped with the database's clock
        self._event = asyncio.Event()
        self._cause: str | None = None
        self._sent: float | None = None

    def set(self, cause: str = "local", sent: float | None = None) -> None:
        if self._cause is None:
            self._cause, self._sent = cause, sent
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()
        self._cause = self._sent = None

    async def wait(self) -> None:
        await self._event.wait()

    def woke(self) -> str:
        """After a wait: why it ended, counted; a notified wake's latency observed."""
        cause = self._cause or "backstop"
        if self._metrics is not None:
            self._metrics.wakeups.labels(self.part, cause).inc()
            if self._sent is not None:
                self._metrics.wake_latency.labels(self.part).observe(max(0.0, self._clock() - self._sent))
        return cause


class DatabaseState:
    """Whether the tracking database answers, as each of its users (writes, reads, listen) last found
    it: down while any finds it down. Call on the event loop; `report(level, message)` gets a line when
    an outage begins and when it ends."""

    def __init__(self, report: Callable[[str, str], None], metrics: EngineMetrics | None = None) -> None:
        self._report = report
        self._metrics = metrics
        self._down: dict[str, str] = {}  # user -> why it found the database down
        self.down_since: float | None = None  # time.monotonic()
        self.outages = 0
        if metrics is not None:
            metrics.database_up.set(1)

    @property
    def up(self) -> bool:
        return self.down_since is None

    def lost(self, user: str, reason: str) -> None:
        self._down[user] = reason
        if self.down_since is not None:
            return
        self.down_since = time.monotonic()
        self.outages += 1
        if self._metrics is not None:
            self._metrics.database_up.set(0)
            self._metrics.database_outages.inc()
        self._report("error", f"the tracking database does not answer ({user}: {reason}); waiting for it")

    def answered(self, user: str) -> None:
        if self._down.pop(user, None) is None or self._down or self.down_since is None:
            return
        lasted = time.monotonic() - self.down_since
        self.down_since = None
        if self._metrics is not None:
            self._metrics.database_up.set(1)
        self._report("info", f"the tracking database answers again after {lasted:.1f} s")

    def describe(self) -> str | None:
        """None while it answers; else how long it has not, and why."""
        if self.down_since is None:
            return None
        why = "; ".join(f"{user}: {reason}" for user, reason in sorted(self._down.items()))
        return f"unreachable for {time.monotonic() - self.down_since:.0f} s ({why})"


class Wakeups:
    """The engine's part that hears of queued work from outside its process (NOTIFY, PostgreSQL only)
    and keeps `database`, the tracking database's state, from what its users find."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.database = DatabaseState(lambda level, message: engine.log(level, message), engine.metrics)
        self.listener: WakeListener | None = None
        self._watching = False

    def start(self) -> None:
        """Hear the database thread's faults; on PostgreSQL, listen for NOTIFY."""
        engine = self._engine
        loop = asyncio.get_running_loop()

        def written(fault: str | None) -> None:  # on the database thread
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody to tell
                loop.call_soon_threadsafe(self._written, fault)

        if not self._watching and engine._writer is not None:
            engine._writer.watch(written)
            self._watching = True
        target = tracking_database(engine.config.engine)
        if self.listener is not None or isinstance(target, Path):
            return  # SQLite: one engine per file, which wakes its own parts
        from .listen import WakeListener
        from .tracking.postgres import application_name

        self.listener = WakeListener(
            target,
            loop,
            self._notified,
            self._listen_state,
            application=application_name("geo-tui listener"),
            on_change=engine.cluster.changed,  # other workers' changes, for this one's watchers
        )
        self.listener.start()

    async def run_forever(self) -> None:
        """`start`, then wait until cancelled (the engine stops), and stop listening."""
        self.start()
        try:
            await asyncio.Event().wait()
        finally:
            listener, self.listener = self.listener, None
            if listener is not None:
                await asyncio.to_thread(listener.stop)

    def _notified(self, work: str, sent: float | None) -> None:
        """A NOTIFY (``sent``: when its transaction sent it), or listening again (None: look anyway)."""
        cause = "notify" if sent is not None else "listen"
        if work == "push":
            self._engine._pushes.wake(cause, sent)
        else:
            self._engine.scheduler.poke(cause, sent)

    def _listen_state(self, reason: str | None) -> None:
        if reason is None:
            self.database.answered("listen")
        else:
            self.database.lost("listen", reason)

    def _written(self, fault: str | None) -> None:
        if fault is None:
            self.database.answered("writes")
        else:
            self.database.lost("writes", fault)
