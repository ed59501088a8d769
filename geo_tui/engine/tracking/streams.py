"""Blob streams in flight across every worker of a PostgreSQL database (issue 16): one stream per
(secondary, digest) in the whole cluster.

A worker about to stream a blob into a secondary takes the (site, digest) row in one statement: the
insert wins if there is no row, and the update wins over a row whose lease ran out (its holder died).
Another worker that finds the row held waits for it to go, then mounts the blob from where it landed.
The holder renews its rows on its heartbeat and removes them when its stream ends; a row that lands
records the blob's location in the same transaction, so a waiter that sees the row gone finds the mount
source. On SQLite (one engine per file) nothing here is used.

On PostgreSQL a take, a look and a finish are one statement each (autocommit, one round trip: 0.12 ms
median on the test cluster), on a connection of their own: never queued behind the engine's other
writes (a reconcile's chunk of tags seen, the event log) on the one writing connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .store import TrackingStore

__all__ = ["BlobStreamRecords"]

_BATCH = 400  # rows per statement

Key = tuple[str, str]  # (site, digest)


class BlobStreamRecords(TrackingStore):
    """The ``blob_streams`` rows: take, look, finish, renew. Thread-safe; call them off the loop."""

    def _stream_connection(self) -> Any:
        """The blob streams' own connection (call with `_stream_lock` held)."""
        if self._stream_db is None:
            from .postgres import PostgresConnection, application_name

            self._stream_db = PostgresConnection(self._db.database, application_name("geo-tui streams"))
        return self._stream_db

    @contextmanager
    def _stream_tx(self) -> Iterator[Any]:
        """A transaction on the blob streams' own connection (PostgreSQL), or the writing one (SQLite)."""
        if self.dialect.name != "postgresql":
            with self._tx() as db:
                yield db
            return
        with self._stream_lock:
            db = self._stream_connection()
            self.dialect.begin(db)
            try:
                yield db
            except BaseException:
                self.dialect.rollback(db)
                raise
            db.execute("COMMIT")

    def _statement(self, sql: str, params: Sequence[object]) -> list[Any]:
        """One statement (with RETURNING) on the blob streams' own connection in autocommit: one round
        trip, its own transaction (PostgreSQL); SQLite's writing connection otherwise. Each statement here
        may run twice after a lost connection: a take by the same owner, or a finish, is the same again."""
        if self.dialect.name != "postgresql":
            with self._tx() as db:
                return list(db.execute(sql, params).fetchall())
        with self._stream_lock:
            return self.dialect.read(self._stream_connection(), sql, params)

    def take_blob_stream(
        self, site: str, digest: str, owner: str, repository: str, now: float, lease_seconds: float
    ) -> str | None:
        """Take the stream of `digest` into `site` for `owner` until ``now + lease_seconds``: None when
        taken (no row, a row run out, or `owner`'s own), else the worker that holds it."""
        taken = self._statement(
            "INSERT INTO blob_streams (site, digest, owner, until, repository) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (site, digest) DO UPDATE SET owner = excluded.owner, until = excluded.until, "
            "repository = excluded.repository "
            "WHERE blob_streams.until <= ? OR blob_streams.owner = excluded.owner "
            "RETURNING owner",
            (site, digest, owner, now + lease_seconds, repository, now),
        )
        if taken:
            return None
        # Named for the log only: a row gone since reads as "another worker", whom the caller waits out.
        holder = self._statement(
            "SELECT owner FROM blob_streams WHERE site = ? AND digest = ?", (site, digest)
        )
        return str(holder[0][0]) if holder else "another worker"

    def blob_stream_holder(self, site: str, digest: str, now: float) -> str | None:
        """The worker streaming `digest` into `site` under a lease still running, or None (a read)."""
        sql = "SELECT owner FROM blob_streams WHERE site = ? AND digest = ? AND until > ?"
        rows = self._statement(sql, (site, digest, now))
        return str(rows[0][0]) if rows else None

    def finish_blob_stream(self, site: str, digest: str, owner: str, landed: str | None) -> None:
        """`owner`'s stream ended: its row goes, and if the blob landed in repository `landed`, that
        location is recorded at once with it (a waiter that sees the row gone can mount it)."""
        delete = "DELETE FROM blob_streams WHERE site = ? AND digest = ? AND owner = ? RETURNING owner"
        key = (site, digest, owner)
        if landed is None:
            self._statement(delete, key)
            return
        record = (
            "INSERT INTO blob_locations (site, digest, repository) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING RETURNING repository"
        )
        if self.dialect.name != "postgresql":
            with self._tx() as db:
                db.execute(record, (site, digest, landed)).fetchall()
                db.execute(delete, key).fetchall()
            return
        # one statement, one transaction: PostgreSQL runs a data-modifying WITH whether it is read or not
        self._statement(f"WITH gone AS ({delete}) {record}", (*key, site, digest, landed))

    def renew_blob_streams(
        self, owner: str, now: float, lease_seconds: float, keys: Iterable[Key]
    ) -> set[Key]:
        """The heartbeat of `owner`'s streams: extend those of `keys` it still holds to ``now +
        lease_seconds`` and return them (one missing ran out and may be another's now), and clear the
        rows of any worker whose lease ran out (a dead worker's, which nobody needed since)."""
        held: set[Key] = set()
        wanted = list(keys)
        with self._stream_tx() as db:
            for start in range(0, len(wanted), _BATCH):
                chunk = wanted[start : start + _BATCH]
                values = ", ".join("(?, ?)" for _ in chunk)
                found = db.execute(
                    "UPDATE blob_streams SET until = ? WHERE owner = ? AND until > ? "
                    f"AND (site, digest) IN (VALUES {values}) RETURNING site, digest",
                    [now + lease_seconds, owner, now, *(v for key in chunk for v in key)],
                ).fetchall()
                held.update((str(r[0]), str(r[1])) for r in found)
            db.execute("DELETE FROM blob_streams WHERE until <= ?", (now,))
        return held

    def blob_streams(self) -> list[tuple[str, str, str, float, str]]:
        """(site, digest, owner, until, repository) of every row, for tests and diagnostics."""
        rows = self._query(
            "SELECT site, digest, owner, until, repository FROM blob_streams ORDER BY site, digest"
        )
        return [(str(r[0]), str(r[1]), str(r[2]), float(r[3]), str(r[4])) for r in rows]
