"""LISTEN on the tracking database's wake channel (PostgreSQL): a NOTIFY wakes the engine's parts.

Every transaction that queues work (`PostgresDialect.announce`) sends a NOTIFY when it commits; each
engine listens on a connection of its own, on a thread of its own, so a wake never waits on the
event loop's other work nor on the database thread's writes (see `wakeups` for what a wake does).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import psycopg

from .tracking.postgres import CHANGE_CHANNEL, WAKE_CHANNEL, PostgresDatabase, read_wake_payload

__all__ = ["WakeListener"]

LISTEN_RETRY = 0.2  # seconds before the first reconnect of a lost listen connection; doubles to:
LISTEN_MAX_RETRY = 2.0
LISTEN_POLL = 0.5  # how often the listening thread looks whether it should stop
# A half-open connection (the database's host gone) is found by TCP keepalives within ~11 s.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}


class WakeListener:
    """A thread with a connection of its own that LISTENs on the tracking database's wake channel and
    calls ``on_wake(work, sent)`` on the loop for each NOTIFY ("push" or "sync"; ``sent`` by the
    server's clock). A lost connection is reported (``on_state(reason)``; None once listening again) and
    reopened with backoff; once listening again it wakes everything (``on_wake("sync", None)`` and
    ``on_wake("push", None)``), as notifies sent meanwhile went nowhere.

    On the same connection it LISTENs on the change channel (rows changed, log lines stored, the pause
    changed: migration 7's triggers) and calls ``on_change(payload, pid)`` (``pid``: the notifying
    backend's); once listening again, ``on_change("resync", None)``: what changed meanwhile is unknown."""

    def __init__(
        self,
        database: PostgresDatabase,
        loop: asyncio.AbstractEventLoop,
        on_wake: Callable[[str, float | None], None],
        on_state: Callable[[str | None], None],
        *,
        application: str = "geo-tui listener",
        on_change: Callable[[str, int | None], None] | None = None,
    ) -> None:
        self._database = database
        self._loop = loop
        self._on_wake = on_wake
        self._on_state = on_state
        self._on_change = on_change
        self._application = application
        self._stop = threading.Event()
        self.listening = threading.Event()
        self.reconnects = 0
        self._thread = threading.Thread(target=self._run, name="geo-tui-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self._stop.set()

    def _run(self) -> None:
        delay = LISTEN_RETRY
        while not self._stop.is_set():
            try:
                self._listen()
                return
            except (psycopg.Error, OSError) as exc:
                if self.listening.is_set():  # it had listened: a new outage starts at the first delay
                    delay = LISTEN_RETRY
                self.listening.clear()
                reason = " ".join(str(exc).split()) or type(exc).__name__
                self._call(self._on_state, f"listen connection lost: {reason}")
            self._stop.wait(delay)
            delay = min(delay * 2, LISTEN_MAX_RETRY)
            self.reconnects += 1

    def _listen(self) -> None:
        with self._database.connect(application=self._application, **KEEPALIVES) as conn:
            conn.execute(f"LISTEN {WAKE_CHANNEL}")
            if self._on_change is not None:
                conn.execute(f"LISTEN {CHANGE_CHANNEL}")
            self.listening.set()
            self._call(self._on_state, None)
            for work in ("sync", "push"):  # what was committed while nobody listened
                self._call(self._on_wake, work, None)
            if self._on_change is not None:
                self._call(self._on_change, "resync", None)
            while not self._stop.is_set():
                for notify in conn.notifies(timeout=LISTEN_POLL):
                    if notify.channel == CHANGE_CHANNEL and self._on_change is not None:
                        self._call(self._on_change, notify.payload, notify.pid)
                    else:
                        self._call(self._on_wake, *read_wake_payload(notify.payload))
