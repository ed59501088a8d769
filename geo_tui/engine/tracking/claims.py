"""The repositories rows as a queue that many workers share (issue 16): claims with leases, and workers.

A worker claims due rows in one short transaction: they become ``started`` with its id as
``lease_owner`` and a ``lease_until``, which it renews while it copies (outside any transaction). A
row whose lease ran out (its worker died, or lost its database) goes back through the failure path by
`expire_leases`, its retry count one higher. Completion by a worker that no longer holds the lease is
refused (`SyncQueue.mark_synced` and the others take its ``owner``).

On PostgreSQL concurrent claimers skip each other's rows (``FOR UPDATE SKIP LOCKED``) and take turns
per capped site (an advisory lock per site), so a site's cap holds however many race; on SQLite the
write transaction (``BEGIN IMMEDIATE``) already serialises them.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .queue import DUE, DUE_ORDER
from .rows import RepositoryRow, SyncState
from .store import TrackingStore

__all__ = ["LeaseClaims", "WorkerRow", "worker_id"]

_BATCH = 400  # rows per statement (SQLite allows 32766 parameters)

Key = tuple[str, str]  # (site, repository)


def worker_id(started_at: float) -> str:
    """This process's worker id: host, pid and start time (a restarted pid is another worker)."""
    return f"{socket.gethostname()}/{os.getpid()}/{started_at:.3f}"


@dataclass(frozen=True)
class WorkerRow:
    """One worker process as its row holds it."""

    id: str
    started_at: float
    heartbeat_at: float
    listen: str
    working: int
    throughput: float | None = (
        None  # bytes a second it copies, as of its last heartbeat that said (None: never)
    )
    leader: bool = False  # its row names the session that held the leadership lock when it took it


class LeaseClaims(TrackingStore):
    """Claims of due rows under leases, their renewal and expiry, and the workers' rows."""

    def claim_due(
        self,
        owner: str,
        now: float,
        *,
        limit: int,
        lease_seconds: float,
        caps: Mapping[str, int] | None = None,
        sites: Sequence[str] | None = None,
        repositories: Sequence[str] | None = None,
        skip: Collection[str] = (),
        first: set[Key] | None = None,
    ) -> list[RepositoryRow]:
        """Claim up to `limit` due rows, in `due`'s order, for `owner` until ``now + lease_seconds``;
        returns them started, with the generation each run works for. A site in `caps` never has more
        rows started under an unexpired lease than its cap, counted across every claimer. Only rows of
        `sites` and `repositories` (None: all), and none of a repository in `skip` (running here). Adds to
        `first` the keys claimed whose sync never started before (`SyncQueue.never_started`)."""
        caps = caps or {}
        where, chosen = self._selection(sites, repositories)
        if skip:
            where += f" AND repository NOT IN ({','.join('?' * len(skip))})"
            chosen = [*chosen, *sorted(skip)]
        selection = (where, chosen)
        lease_until = now + lease_seconds
        with self._tx() as db:
            room = self._room(db, now, caps)
            claimed: list[RepositoryRow] = []
            full = {site for site, left in room.items() if left <= 0}
            while len(claimed) < limit:
                wanted = limit - len(claimed)
                taken = {(r.site, r.repository) for r in claimed}
                found = self._due_rows(db, now, wanted, full, taken, selection)
                for row in found:
                    if row.site in room:
                        if room[row.site] <= 0:
                            full.add(row.site)
                            continue
                        room[row.site] -= 1
                    claimed.append(row)
                if len(found) < wanted or not any(row.site in full for row in found):
                    break  # the queue ran dry; otherwise a site filled up: look past its rows
            db.executemany(
                "UPDATE repositories SET state = 'started', started_at = ?, lease_owner = ?, "
                "lease_until = ?, "
                "lease_generation = generation WHERE site = ? AND repository = ?",
                [(now, owner, lease_until, r.site, r.repository) for r in claimed],
            )
            if first is not None:
                first.update(self._never_started(db, [(r.site, r.repository) for r in claimed]))
            db.executemany(
                "INSERT INTO started_once (site, repository) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(r.site, r.repository) for r in claimed],
            )
        return [dataclasses.replace(r, state=SyncState.STARTED, started_at=now) for r in claimed]

    def _never_started(self, db: object, keys: list[Key]) -> set[Key]:
        """Those of `keys` no sync ever started for."""
        seen: set[Key] = set()
        for start in range(0, len(keys), _BATCH):
            chunk = keys[start : start + _BATCH]
            values = ", ".join("(?, ?)" for _ in chunk)
            rows = db.execute(  # type: ignore[attr-defined]
                f"SELECT site, repository FROM started_once WHERE (site, repository) IN (VALUES {values})",
                [v for key in chunk for v in key],
            ).fetchall()
            seen.update((str(r[0]), str(r[1])) for r in rows)
        return set(keys) - seen

    def _room(self, db: object, now: float, caps: Mapping[str, int]) -> dict[str, int]:
        """How many more rows each capped site may start, under each site's lock (taken in one order)."""
        room: dict[str, int] = {}
        for site in sorted(caps):
            self.dialect.lock_site(db, site)
            running = db.execute(  # type: ignore[attr-defined]
                "SELECT COUNT(*) FROM repositories WHERE state = 'started' AND site = ? AND lease_until > ?",
                (site, now),
            ).fetchone()
            room[site] = caps[site] - int(running[0])
        return room

    def _due_rows(
        self,
        db: object,
        now: float,
        limit: int,
        full: set[str],
        taken: set[Key],
        selection: tuple[str, list[object]] = ("1 = 1", []),
    ) -> list[RepositoryRow]:
        """The first `limit` due rows with a free (or expired) lease, not of a `full` site nor `taken`,
        within `selection` (a WHERE term and its parameters); locked, on PostgreSQL, until the claim
        commits (and skipped by the other claimers)."""
        where, chosen = selection
        params: list[object] = [now, now, *chosen, *sorted(full), limit + len(taken)]
        sql = self._claim_query(len(full), where)
        rows = db.execute(sql, params).fetchall()  # type: ignore[attr-defined]
        found = [RepositoryRow.from_columns(r) for r in rows]
        return [r for r in found if (r.site, r.repository) not in taken][:limit]

    def _claim_query(self, sites_full: int, where: str = "1 = 1") -> str:
        """The claim's SELECT (parameters: now, now, those of `where`, the full sites, the limit), in
        `due`'s order."""
        sql = (
            f"SELECT {self._row_columns} FROM repositories{self.dialect.using_index('repositories_claim')} "
            f"WHERE {DUE} AND (lease_until IS NULL OR lease_until <= ?) AND {where}"
        )
        if sites_full:
            sql += f" AND site NOT IN ({','.join('?' * sites_full)})"
        return sql + f" ORDER BY {DUE_ORDER} LIMIT ?{self.dialect.skip_locked()}"

    def renew_leases(self, owner: str, now: float, lease_seconds: float, rows: Iterable[Key]) -> set[Key]:
        """The heartbeat of a running copy: extend the leases `owner` still holds of `rows` to ``now +
        lease_seconds``. Returns those; a row missing from it was lost (expired, or taken back) and
        must not be copied on."""
        held: set[Key] = set()
        keys = list(rows)
        with self._tx() as db:
            for start in range(0, len(keys), _BATCH):
                chunk = keys[start : start + _BATCH]
                values = ", ".join("(?, ?)" for _ in chunk)
                found = db.execute(
                    "UPDATE repositories SET lease_until = ? WHERE lease_owner = ? AND state = 'started' "
                    f"AND lease_until > ? AND (site, repository) IN (VALUES {values}) "
                    "RETURNING site, repository",
                    [now + lease_seconds, owner, now, *(v for key in chunk for v in key)],
                ).fetchall()
                held.update((str(r[0]), str(r[1])) for r in found)
        return held

    def expire_leases(
        self, now: float, retry_at_for: Callable[[int], float | None]
    ) -> list[tuple[str, str, str]]:
        """Rows started under a lease that ran out (their worker died or lost the database) fail, as a
        failed copy does: the retry count one higher (never reset), the retry time `retry_at_for(new
        count)`, or now if new work came during the run (as `mark_failed` with its generation), and a
        failure naming the worker. Returns (site, repository, owner) of each."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT site, repository, lease_owner, retry_count, generation, lease_generation "
                "FROM repositories WHERE state = 'started' AND lease_until <= ? AND lease_owner IS NOT NULL"
                f"{self.dialect.skip_locked()}",
                (now,),
            ).fetchall()
            expired = [(str(r[0]), str(r[1]), str(r[2])) for r in rows]
            db.executemany(
                "UPDATE repositories SET state = 'failed', retry_count = retry_count + 1, retry_at = ?, "
                "started_at = NULL, lease_owner = NULL, lease_until = NULL, last_sync_failure = ? "
                "WHERE site = ? AND repository = ? AND lease_owner = ? AND state = 'started'",
                [
                    (
                        now if r[4] != r[5] else retry_at_for(int(r[3]) + 1),
                        self._redact(f"the lease of worker {r[2]} expired: it stopped renewing it")[:2000],
                        r[0],
                        r[1],
                        r[2],
                    )
                    for r in rows
                ],
            )
        return expired

    def leased(self, owner: str | None = None) -> list[tuple[str, str, str, float]]:
        """(site, repository, owner, lease_until) of the rows started under a lease (of `owner`)."""
        sql = (
            "SELECT site, repository, lease_owner, lease_until FROM repositories "
            "WHERE lease_owner IS NOT NULL"
        )
        params: Sequence[object] = ()
        if owner is not None:
            sql, params = sql + " AND lease_owner = ?", (owner,)
        rows = self._query(sql + " ORDER BY site, repository", params)
        return [(str(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]

    # -- workers ---------------------------------------------------------------------------------

    def register_worker(self, worker: str, now: float, listen: str = "") -> None:
        """Add (or refresh) `worker`'s row: started now, with its listen addresses."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO workers (id, started_at, heartbeat_at, listen, working) VALUES (?, ?, ?, ?, 0) "
                "ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, "
                "listen = excluded.listen",
                (worker, now, now, listen),
            )

    def worker_heartbeat(
        self, worker: str, now: float, working: int, throughput: float | None = None
    ) -> bool:
        """Stamp `worker`'s heartbeat, how many repositories it has in hand and (when given) how many
        bytes a second it copies now; False if its row is gone."""
        sql, params = "UPDATE workers SET heartbeat_at = ?, working = ?", [now, working]
        if throughput is not None:
            sql, params = sql + ", throughput = ?", [*params, max(0.0, float(throughput))]
        with self._tx() as db:
            cur = db.execute(sql + " WHERE id = ?", [*params, worker])
            return bool(cur.rowcount)

    def recover_worker(self, worker: str) -> int:
        """A worker known dead (its process is gone) holds nothing: its started rows go back to pending,
        as `recover_started` puts back a dead engine's, and its row goes. Returns how many rows."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE repositories SET state = 'pending', started_at = NULL, retry_at = NULL, "
                "lease_owner = NULL, lease_until = NULL WHERE lease_owner = ? AND state = 'started'",
                (worker,),
            )
            db.execute("DELETE FROM workers WHERE id = ?", (worker,))
            return int(cur.rowcount)

    def remove_worker(self, worker: str) -> None:
        """A worker that stops cleanly takes its row away (the leases it still holds expire as usual)."""
        with self._tx() as db:
            db.execute("DELETE FROM workers WHERE id = ?", (worker,))

    def workers(self) -> list[WorkerRow]:
        rows = self._query(
            "SELECT id, started_at, heartbeat_at, listen, working, throughput, leader_pid FROM workers "
            "ORDER BY id"
        )
        return [
            WorkerRow(
                str(r["id"]),
                float(r["started_at"]),
                float(r["heartbeat_at"]),
                str(r["listen"]),
                int(r["working"]),
                float(r["throughput"]) if r["throughput"] is not None else None,
                r["leader_pid"] is not None,
            )
            for r in rows
        ]
