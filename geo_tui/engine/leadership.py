"""Who runs the cluster's singleton duties (issue 16): discovery with the periodic reconcile, and
verification. On SQLite one engine per file, which always leads.

On PostgreSQL the leader holds a session ``pg_try_advisory_lock`` on a connection of its own, with
keepalives both ways (`tracking.leadership.KEEPALIVE`): a vanished host's session, and the lock, end
within about 25 s. The others try every few seconds. One that cannot get the lock finds its holder; if
the holder's worker has not beaten for longer than a lease (frozen: SIGSTOP, a suspended VM), it ends
that session and takes the lock (`takeover`); never from a worker that still beats, nor from a
session no worker row names.

A leader frozen and taken over from must not run one more duty on a lock it lost: each duty confirms
the lock before each round (`confirm`), and its writes carry a fence (`tracking.leadership`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .describe import describe_error
from .tracking.leadership import LeaderFence, LockHolder, NotLeader

if TYPE_CHECKING:
    import psycopg

    from .engine import Engine
    from .tracking.postgres import PostgresDatabase

__all__ = ["LEADERSHIP_RETRY", "Leadership", "NotLeader", "Takeover", "takeover"]

LEADERSHIP_RETRY = 3.0  # seconds between a follower's tries of the leadership lock (and the leader's check)
TAKEOVER_WAIT = 5.0  # seconds a takeover waits for the ended session's lock to be free


@dataclass(frozen=True)
class Takeover:
    """What a contender that did not get the lock does about its holder: `take` it over, or wait;
    `reason` in words (empty: nothing worth a line)."""

    take: bool
    reason: str


def takeover(holder: LockHolder | None, now: float, lease_seconds: float) -> Takeover:
    """Whether to end the session of `holder` (None: nobody holds the lock now) and take its place:
    only when its worker is known and has not beaten for longer than a lease."""
    if holder is None:
        return Takeover(False, "")
    if holder.worker is None or holder.heartbeat_at is None:
        who = f"server process {holder.pid} ({holder.application or 'no application name'})"
        return Takeover(
            False, f"the leadership lock is held by {who}, which no worker's row names: waiting for it to end"
        )
    age = now - holder.heartbeat_at
    if age <= lease_seconds:
        return Takeover(False, "")  # slow perhaps, but alive
    return Takeover(True, f"its heartbeat is {age:.0f} s old, longer than the lease ({lease_seconds:g} s)")


class Leadership:
    """Who runs the cluster's singleton duties. ``target`` None (SQLite): this engine, always."""

    def __init__(self, engine: Engine, target: PostgresDatabase | None, worker: str | None) -> None:
        self._engine = engine
        self._target = target
        self._worker = worker
        self._session: psycopg.Connection[Any] | None = None
        self._fence: LeaderFence | None = None
        self._held = asyncio.Event()
        self._lost = asyncio.Event()
        self._unknown_told: int | None = None  # the unnamed holder already logged (once per holder)
        if target is None:
            self._held.set()

    @property
    def leads(self) -> bool:
        return self._held.is_set()

    def start(self, interval: float) -> list[str]:
        """Start, supervised, the tasks of many workers (none on SQLite); their names."""
        engine = self._engine
        if self._target is None:
            return []
        engine._supervisor.start("leadership", self.run_forever, interval=interval, heartbeat=True)
        engine._supervisor.start("leases", engine.leases.run_forever, interval=interval, heartbeat=True)
        return ["leadership", "leases"]

    async def run_forever(self) -> None:
        """Take the lock when free, and keep checking the session that holds it (PostgreSQL only)."""
        try:
            while True:
                if self._session is None:
                    await self._try()
                else:
                    await self._check()
                self._engine._supervisor.beat("leadership")
                await asyncio.sleep(LEADERSHIP_RETRY)
        finally:
            self._drop()

    async def _try(self) -> None:
        from .tracking import leadership as lock
        from .tracking.postgres import application_name

        assert self._target is not None and self._worker is not None
        target, worker, engine = self._target, self._worker, self._engine
        lease = engine.leases.lease_seconds
        holder: LockHolder | None = None
        decision = Takeover(False, "")

        def attempt() -> psycopg.Connection[Any] | None:
            nonlocal holder, decision
            session = lock.open_session(target, application_name("geo-tui leader"))
            try:
                if not lock.try_lock(session):
                    holder = lock.find_holder(session)
                    decision = takeover(holder, engine._clock(), lease)
                    if holder is None or not decision.take:
                        session.close()
                        return None
                    refused = _take_over(session, holder)
                    if refused is not None:
                        decision = Takeover(False, refused)
                        session.close()
                        return None
                # Named in our row; waits for a write of the leader before still in flight (the fence).
                lock.stamp(session, worker)
            except BaseException:
                session.close()
                raise
            return session

        session = await asyncio.to_thread(attempt)
        if session is None:
            if decision.reason and holder is not None and self._unknown_told != holder.pid:
                self._unknown_told = holder.pid  # once per holder, not every few seconds
                engine.log("warning", decision.reason)
            return
        if decision.take and holder is not None:
            engine.log(
                "warning",
                f"took the leadership over from worker {holder.worker}: {decision.reason}; "
                f"its session (server process {holder.pid}) was ended",
            )
        # The verifications a leader before this one left started are this one's to run again.
        await engine._db(engine.tracking.recover_verifications)
        self._session = session
        self._fence = lock.LeaderFence(worker, int(session.info.backend_pid))
        self._lost.clear()
        self._held.set()
        self._unknown_told = None
        engine.log("info", "this worker now runs discovery, the reconcile and verification")

    async def _check(self) -> None:
        assert self._session is not None
        await self._still_held(self._session, "")

    async def _still_held(self, session: psycopg.Connection[Any], then: str) -> bool:
        """Whether `session` holds the lock still; if not (or it failed), the leadership is dropped, with
        one line ending in `then` (what does not happen because of it)."""
        from .tracking.leadership import holds_lock

        try:
            held = await asyncio.to_thread(holds_lock, session)
        except Exception as exc:
            self._lose(f"its session failed ({describe_error(exc)}){then}")
            return False
        if not held:
            self._lose(f"its session no longer holds the lock{then}")
        return held

    async def confirm(self, duty: str) -> LeaderFence | None:
        """Before each round of a duty: the fence its writes carry (None on SQLite), once the session is
        confirmed to hold the lock still; raises NotLeader (the gate waits again) if it does not."""
        if self._target is None:
            return None
        session, fence = self._session, self._fence
        if session is None or fence is None:
            raise NotLeader("this worker does not lead")
        if not await self._still_held(session, f"; {duty} does not run"):
            raise NotLeader(duty)
        return fence

    def _lose(self, why: str) -> None:
        """Drop the leadership, with one line, if this worker still had it; contend again."""
        if self._session is None:
            return
        self._drop()
        self._engine.log("warning", f"lost the leadership: {why}; contending again")

    def release(self) -> None:
        """Let the lock go (at close): the server drops it with the session."""
        self._drop()

    def _drop(self) -> None:
        session, self._session, self._fence = self._session, None, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()  # the server drops the advisory lock with the session
        if self._target is not None:
            self._held.clear()
            self._lost.set()

    def gated(self, name: str, run: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """`run` as a task that runs only while this worker leads (beating `name` while it waits), and
        is cancelled when the leadership is lost; a round that finds it lost (NotLeader) ends it too."""

        async def gate() -> None:
            while True:
                while not self._held.is_set():
                    self._engine._supervisor.beat(name)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._held.wait(), timeout=1.0)
                task = asyncio.ensure_future(run())
                lost = asyncio.ensure_future(self._lost.wait())
                try:
                    await asyncio.wait([task, lost], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    lost.cancel()
                    if not task.done():
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                if task.done() and not task.cancelled():
                    exc = task.exception()
                    if isinstance(exc, NotLeader):
                        self._lose(f"{exc}; {name} stopped")
                        continue
                    task.result()  # a failure of `run` goes to the supervisor

        return gate


def _take_over(session: psycopg.Connection[Any], holder: LockHolder) -> str | None:
    """End `holder`'s session and take the lock on `session` once the server has let it go. None if
    done; else why not, in words (empty: the holder went meanwhile, or another contender was quicker)."""
    import psycopg

    from .tracking import leadership as lock

    try:
        ended = lock.end_holder(session, holder.pid)
    except psycopg.errors.InsufficientPrivilege as exc:
        return (
            f"cannot end the leadership session of worker {holder.worker}, whose heartbeat is older than "
            f"the lease ({' '.join(str(exc).split())}): waiting for it to end; to let a worker take over "
            "from a frozen one, connect every worker as one role, or grant theirs pg_signal_backend"
        )
    if not ended:
        return ""
    deadline = time.monotonic() + TAKEOVER_WAIT
    while not lock.try_lock(session):
        if time.monotonic() > deadline:
            return ""
        time.sleep(0.05)
    return None
