"""The supervisor of the engine's background tasks: nothing stops in silence.

Each task (discovery with its reconcile, the scheduler, verification, health checks, flushing) is a
coroutine that loops for good and marks each unit of work with ``cycle()``. When one raises, the
supervisor logs why, waits a backoff and starts it again, counting the restart. A task that has been
down (crashed and not back through a whole cycle, or stuck inside one) for longer than its interval
is named by `down()`, which `/-/health`, the metrics and the console's header show (issue 12, case 4).

A task started with ``heartbeat=True`` loops every few seconds and marks each round with ``beat()``: one
that is alive but has not got round for longer than its interval (blocked on something that never
answers, outside any cycle) counts as down too. Tasks that sleep long between cycles (discovery waits a
reconcile interval) have no heartbeat: their cycles are what is watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

__all__ = ["Supervisor", "TaskState"]

log = logging.getLogger("geo_tui.engine.supervisor")

RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 60.0
STEADY = 300.0  # a task that ran this long before failing starts again at the first delay


@dataclass
class TaskState:
    name: str
    interval: float
    busy_since: float | None = None
    down_since: float | None = None
    restarts: int = 0
    last_error: str | None = None
    last_progress: float | None = None  # heartbeat tasks: when a round (a beat, or a cycle) last ended


class Supervisor:
    """Runs named forever-tasks, restarting those that fail. ``report(name, message)`` is told of every
    failure (a line for the event log); ``restarted(name)`` counts each restart. A failure for which
    ``reported_elsewhere(exc)`` is true (the tracking database away, an outage already logged once) is
    not reported again: the task is down and restarted as any other, without a line per task per try."""

    def __init__(
        self,
        *,
        report: Callable[[str, str], None],
        restarted: Callable[[str], None],
        describe: Callable[[BaseException], str],
        clock: Callable[[], float] = time.monotonic,
        restart_delay: float = RESTART_DELAY,
        rng: random.Random | None = None,
        reported_elsewhere: Callable[[BaseException], bool] = lambda _exc: False,
    ) -> None:
        self._report = report
        self._reported_elsewhere = reported_elsewhere
        self._restarted = restarted
        self._describe = describe
        self._clock = clock
        self._restart_delay = restart_delay
        self._rng = rng or random.Random()
        self._states: dict[str, TaskState] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(
        self, name: str, run: Callable[[], Awaitable[None]], *, interval: float, heartbeat: bool = False
    ) -> None:
        """Run ``run()`` under supervision; it should call `cycle(name)` around each unit of work.
        ``interval`` is how long it may be down (or busy in one cycle, or, with ``heartbeat``, without a
        `beat`) before `down()` names it."""
        self._states[name] = TaskState(name, interval, last_progress=self._clock() if heartbeat else None)
        self._tasks.append(asyncio.ensure_future(self._supervise(self._states[name], run)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self._states.clear()

    @contextlib.contextmanager
    def cycle(self, name: str) -> Iterator[None]:
        """One unit of a task's work: the task counts as down while it stays inside longer than its
        interval, and as back up once one completes."""
        state = self._states.get(name)
        if state is None:  # not supervised (a one-shot run): nothing to watch
            yield
            return
        state.busy_since = self._clock()
        try:
            yield
        finally:
            state.busy_since = None
        state.down_since = None
        if state.last_progress is not None:
            state.last_progress = self._clock()

    def beat(self, name: str) -> None:
        """A task that does its work without waiting (a `cycle` of no length) got round once more."""
        state = self._states.get(name)
        if state is not None:
            state.down_since = None
            if state.last_progress is not None:
                state.last_progress = self._clock()

    def down(self) -> list[str]:
        """The tasks down (crashed, stuck in one cycle, or with a heartbeat that stopped) for longer than
        their interval, by name."""
        now = self._clock()
        return sorted(s.name for s in self._states.values() if _down(s, now))

    def states(self) -> list[TaskState]:
        return list(self._states.values())

    async def _supervise(self, state: TaskState, run: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        while True:
            started = self._clock()
            try:
                await run()
                raise RuntimeError("the task returned")  # a forever-task that ends is a fault too
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if state.down_since is None:  # down since the cycle that failed began
                    state.down_since = state.busy_since or self._clock()
                state.busy_since = None
                failures = 1 if self._clock() - started >= STEADY else failures + 1
                delay = min(MAX_RESTART_DELAY, self._restart_delay * 2 ** (failures - 1))
                delay *= 0.75 + self._rng.random() / 2
                state.last_error = self._describe(exc)
                message = f"{state.name} task failed: {state.last_error}; restarting in {delay:.1f} s"
                if self._reported_elsewhere(exc):
                    log.debug("%s (reported elsewhere)", message)
                else:
                    try:
                        self._report(state.name, message)
                    except Exception:  # the report goes to the database, which may be what failed
                        log.exception("could not report the failure of the %s task", state.name)
            await asyncio.sleep(delay)
            state.restarts += 1
            self._restarted(state.name)


def _down(state: TaskState, now: float) -> bool:
    if any(t is not None and now - t > state.interval for t in (state.down_since, state.busy_since)):
        return True
    # inside a cycle, the cycle's own age is what counts (above)
    stalled = state.last_progress is not None and now - state.last_progress > state.interval
    return stalled and state.busy_since is None
