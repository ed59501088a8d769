"""The PostgreSQL tracking database's reads: a small `psycopg_pool.ConnectionPool` that any thread reads
through (issue 16). The engine reads from threads of its own (`engine.database.DatabaseReader`), never on
its event loop; each read is bounded on the server (``statement_timeout``) and while waiting for a
connection, and fails as a passing fault, as a lost connection does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from .postgres import PostgresDatabase, Row, placeholders

__all__ = ["READ_POOL_SIZE", "READ_TIMEOUT", "PostgresReadPool", "ReadUnanswered"]

# Reads (issue 16): a few pooled connections (`PostgresReadPool`), read from threads, never the loop. A
# read gets a connection and an answer within READ_TIMEOUT seconds each, or fails as a passing fault.
READ_POOL_SIZE = (1, 4)
READ_TIMEOUT = 5.0
# The pool tries to reconnect with a backoff that doubles (1, 2, 4, ... s): after a 17 s outage its next try
# came 14 s after the server was back. It gives up after this many seconds instead, and the next read then
# starts a fresh try at once, so a server back is found within a couple of seconds.
READ_RECONNECT_WINDOW = 4.0
# A reading session on a host that vanished is found dead by TCP: idle within ~11 s (as listen.py's),
# with a query unacknowledged within 15 s; the thread reading it ends then, long after its caller gave up.
READ_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
}

# psycopg_pool warns of each failed try to reconnect, and with no handler of its own the warnings reached a
# serve's output through logging's last resort, unformatted, a line a try: the engine says an outage once
# (wakeups.DatabaseState). A library's logger with a NullHandler still reaches handlers set above it.
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())


class ReadUnanswered(psycopg.OperationalError):
    """A read the tracking database did not answer in time: a server frozen or overloaded, a host gone
    (a passing fault, as a lost connection is)."""


class PostgresReadPool:
    """The engine's reads, on a small `psycopg_pool.ConnectionPool` shared by the threads that read
    (`database.DatabaseReader`): each read takes a connection, checked first, and gives it back. A read
    waits at most `timeout` for a connection (then `PoolTimeout`) and runs at most `timeout` on the server
    (``statement_timeout`` of these sessions); both are passing faults. Reconnecting is the pool's."""

    def __init__(
        self,
        database: PostgresDatabase,
        application: str,
        *,
        size: tuple[int, int] = READ_POOL_SIZE,
        timeout: float = READ_TIMEOUT,
    ) -> None:
        self.database = database
        self.timeout = timeout
        arguments = database.connect_arguments(
            application, options=f"-c statement_timeout={int(timeout * 1000)}", **READ_KEEPALIVES
        )
        self._pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            database.url,  # never carries the password: that is in `arguments`, which the pool never logs
            kwargs=arguments,
            min_size=size[0],
            max_size=size[1],
            timeout=timeout,
            reconnect_timeout=READ_RECONNECT_WINDOW,
            check=ConnectionPool.check_connection,
            name="geo-tui reads",
            open=False,
        )
        # Not waiting for its first connection: the store's writing connection has just shown that the
        # server answers and takes the password, and the first read waits for one anyway.
        self._pool.open(wait=False)

    def read(self, sql: str, params: Sequence[object]) -> list[Any]:
        """The rows of one query. A connection lost under it (a server restarted between the check and
        the query) is tried once more on another. No connection free within `timeout` (every one waits
        on a server that does not answer) is said as the reader's own deadline is, not in the pool's words."""
        try:
            return self._read(sql, params)
        except PoolTimeout:
            raise ReadUnanswered(
                f"the tracking database answered no read in {self.timeout:g} s "
                "(every connection of the read pool was waiting on it)"
            ) from None

    def _read(self, sql: str, params: Sequence[object]) -> list[Any]:
        with self._pool.connection() as conn:
            try:
                return conn.execute(placeholders(sql), list(params)).fetchall()
            except psycopg.OperationalError:
                if not conn.broken:
                    raise  # the server's answer (a statement timeout, ...): a new connection is no cure
        with self._pool.connection() as conn:  # the broken one went back to be replaced
            return conn.execute(placeholders(sql), list(params)).fetchall()

    def stats(self) -> dict[str, int]:
        """The pool's counters (psycopg_pool's names): connections, waiting, errors, ..."""
        return dict(self._pool.get_stats())

    def close(self) -> None:
        self._pool.close(timeout=1.0)
