"""The leadership lock in PostgreSQL (issue 16): the session that holds it, who stands behind that
session, ending a frozen holder's session, and the fence that a leader's duty writes pass.

The lock is a session ``pg_try_advisory_lock(ENGINE_LOCK)`` on a connection of its own (the leadership
session). Its holder stamps its workers row with the session's server process (`stamp`), so a contender
that cannot get the lock finds the worker, and that worker's heartbeat, behind it (`find_holder`).

The fence: a duty's write transaction checks, first, that the worker's row still names the session it
led with and that this session still holds the lock, and keeps a share lock on that row until it
commits (`check_fence`). A worker that takes over stamps the rows in its own transaction, which waits
for that share lock: a write of the old leader commits before the new leader's first duty, or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # psycopg is imported only by the engines on PostgreSQL
    import psycopg

    from .postgres import PostgresDatabase

__all__ = [
    "ENGINE_LOCK",
    "KEEPALIVE",
    "LeaderFence",
    "LockHolder",
    "NotLeader",
    "check_fence",
    "end_holder",
    "find_holder",
    "holds_lock",
    "open_session",
    "stamp",
    "try_lock",
]

# The pg_advisory_lock key ("geotui" and a number) of the leadership (once: of the one engine).
ENGINE_LOCK = 0x67656F7475690002
# pg_locks shows a one-bigint advisory key as classid (high 32 bits), objid (low 32 bits), objsubid 1.
_CLASSID, _OBJID = ENGINE_LOCK >> 32, ENGINE_LOCK & 0xFFFFFFFF
# Advisory locks are per database; pg_locks lists those of every database on the server.
_THE_LOCK = (
    "l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s AND l.objid::bigint = %s "
    "AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)

# Keepalives on the leadership session, both ways, so that a vanished host's session (and the lock with
# it) ends within about 25 s, not after the kernel's default of 2 h: probes after 10 s idle, every 5 s, 3
# missed end it; and data left unacknowledged 25 s ends it too (keepalives wait while data is in flight).
# The server ignores its side on a unix socket, where a vanished host cannot happen.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT, USER_TIMEOUT_MS = 10, 5, 3, 25_000
KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": KEEPALIVE_IDLE,
    "keepalives_interval": KEEPALIVE_INTERVAL,
    "keepalives_count": KEEPALIVE_COUNT,
    "tcp_user_timeout": USER_TIMEOUT_MS,
    "options": (
        f"-c tcp_keepalives_idle={KEEPALIVE_IDLE} -c tcp_keepalives_interval={KEEPALIVE_INTERVAL} "
        f"-c tcp_keepalives_count={KEEPALIVE_COUNT} -c tcp_user_timeout={USER_TIMEOUT_MS}"
    ),
}


class NotLeader(Exception):
    """A leader's duty found that its session no longer holds the leadership lock (the session was
    ended: a takeover from this worker, frozen; a lost connection): it must not run, nor write."""


@dataclass(frozen=True)
class LeaderFence:
    """What a leader's duty writes are checked against: this worker, and the server process of the
    session it leads with."""

    worker: str
    session_pid: int


@dataclass(frozen=True)
class LockHolder:
    """The session that holds the leadership lock: its server process and application name, and the
    worker whose row names it (None: no row or more than one does) with that row's heartbeat."""

    pid: int
    application: str
    worker: str | None
    heartbeat_at: float | None


def open_session(database: PostgresDatabase, application: str) -> psycopg.Connection[Any]:
    """A connection for the leadership lock, with keepalives both ways."""
    return database.connect(application=application, **KEEPALIVE)


def try_lock(session: psycopg.Connection[Any]) -> bool:
    row = session.execute("SELECT pg_try_advisory_lock(%s)", (ENGINE_LOCK,)).fetchone()
    return row is not None and row[0] is True


def holds_lock(session: psycopg.Connection[Any]) -> bool:
    """Whether `session` holds the lock now (raises psycopg's error if the session was ended)."""
    row = session.execute(
        f"SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = pg_backend_pid() AND {_THE_LOCK})",
        (_CLASSID, _OBJID),
    ).fetchone()
    return row is not None and row[0] is True


def stamp(session: psycopg.Connection[Any], worker: str) -> bool:
    """Name `session` (which holds the lock) in `worker`'s row, and no session in any other (their
    stamps are of leaders before). Waits for a fenced write of an earlier leader still in flight.
    False if the worker has no row."""
    cur = session.execute(
        "UPDATE workers SET leader_pid = CASE WHEN id = %s THEN pg_backend_pid() END "
        "WHERE id = %s OR leader_pid IS NOT NULL RETURNING id",
        (worker, worker),
    )
    return any(row[0] == worker for row in cur.fetchall())


def find_holder(session: psycopg.Connection[Any]) -> LockHolder | None:
    """Who holds the lock (None: nobody now)."""
    rows = session.execute(
        "SELECT l.pid, COALESCE(a.application_name, '') AS application, w.id, w.heartbeat_at "
        "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        f"LEFT JOIN workers w ON w.leader_pid = l.pid WHERE {_THE_LOCK}",
        (_CLASSID, _OBJID),
    ).fetchall()
    if not rows:
        return None
    pid, application = int(rows[0]["pid"]), str(rows[0]["application"])
    if len(rows) != 1 or rows[0]["id"] is None:
        return LockHolder(pid, application, None, None)
    return LockHolder(pid, application, str(rows[0]["id"]), float(rows[0]["heartbeat_at"]))


def end_holder(session: psycopg.Connection[Any], pid: int) -> bool:
    """End server process `pid`'s session if it still holds the lock (a pid reused since is left
    alone), and wait up to 5 s for it to go. False if it did not hold it, or could not be ended."""
    row = session.execute(
        f"SELECT bool_or(pg_terminate_backend(l.pid, 5000)) FROM pg_locks l WHERE l.pid = %s AND {_THE_LOCK}",
        (pid, _CLASSID, _OBJID),
    ).fetchone()
    return row is not None and row[0] is True


FENCE_SQL = (
    "SELECT 1 FROM workers w WHERE w.id = ? AND w.leader_pid = ? AND EXISTS (SELECT 1 FROM pg_locks l "
    f"WHERE l.pid = w.leader_pid AND {_THE_LOCK.replace('%s', '?')}) FOR SHARE OF w"
)


def check_fence(db: Any, fence: object | None) -> None:
    """Inside a write transaction on the tracking connection: raise NotLeader unless `fence` (a
    LeaderFence; None: no leader's duty, no check)'s session still leads; else hold its workers row
    (a takeover's `stamp` waits) until the transaction ends."""
    if fence is None:
        return
    assert isinstance(fence, LeaderFence)
    row = db.execute(FENCE_SQL, (fence.worker, fence.session_pid, _CLASSID, _OBJID)).fetchone()
    if row is None:
        raise NotLeader(
            f"a duty's write was refused: its session (server process {fence.session_pid}) no longer "
            "holds the lock"
        )
