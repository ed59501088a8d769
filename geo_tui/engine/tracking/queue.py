"""The sync queue in the tracking database: discovery, what is due, and each run's state.

A ``generation`` counter is bumped whenever new work is asked for a row (an event, a resync); a sync
marks the row synced only if the generation it started with is still current, so an event that lands
during a copy queues the repository again instead of being lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .pushes import forget_unseen, seen_in
from .rows import RepositoryRow
from .store import TrackingStore

__all__ = ["DUE", "DUE_ORDER", "SyncQueue"]

# What is due, written once (`due`, and the claims of `claims`): pending rows, and failed ones whose retry
# time (the ? parameter; a NULL one never comes) has come. The `state IN` term is the claim index's
# condition (`schema.LEASE_STATEMENTS`, a partial index): a planner uses that index only if it sees it.
DUE = "on_primary = 1 AND state IN ('pending', 'failed') AND (state = 'pending' OR retry_at <= ?)"
# Oldest unsynced event first, then the fewest retries, then by name: the claim index's order.
DUE_ORDER = "COALESCE(oldest_unsynced_event_at, 9e18), retry_count, repository"

# Track a repository (a new row is pending); one the primary had dropped is on it again. Columns of the
# row as it is are named with their table: PostgreSQL's upsert sees `excluded`'s too.
TRACK = (
    "INSERT INTO repositories (site, repository) VALUES (?, ?) ON CONFLICT (site, repository) "
    "DO UPDATE SET on_primary = 1 WHERE repositories.on_primary = 0"
)


# A run that ends gives up its lease (if it had one: see `claims`).
_RELEASE = "lease_owner = NULL, lease_until = NULL"


def _held(owner: str | None) -> tuple[str, tuple[str, ...]]:
    """The condition (and its parameter) that the row is leased to `owner` (None: no condition)."""
    return ("", ()) if owner is None else (" AND lease_owner = ? AND state = 'started'", (owner,))


class SyncQueue(TrackingStore):
    """Rows by sync state (pending, started, synced, failed, as GitLab Geo names them)."""

    # -- discovery -------------------------------------------------------------------------

    def ensure_rows(self, site: str, repositories: Iterable[str], *, fence: object | None = None) -> int:
        """Create pending rows for repositories not tracked yet; mark all given ones as on the primary.
        `fence`: the leader's discovery writes only while it leads (store's `_tx`)."""
        with self._tx(fence) as db:
            tracked = int(db.executemany(TRACK, [(site, repo) for repo in repositories]).rowcount)
            if tracked:
                self.dialect.announce(db, "sync")
            return tracked

    def mark_absent_from_primary(
        self, site: str, present: set[str], *, fence: object | None = None
    ) -> list[str]:
        """Flag rows whose repository the primary's catalog no longer lists. Returns their names."""
        gone = [r for r in self.repository_names(site) if r not in present]
        with self._tx(fence) as db:
            db.executemany(
                "UPDATE repositories SET on_primary = 0 WHERE site = ? AND repository = ?",
                [(site, r) for r in gone],
            )
        return gone

    def repository_names(self, site: str) -> list[str]:
        rows = self._query("SELECT repository FROM repositories WHERE site = ? ORDER BY repository", (site,))
        return [str(r[0]) for r in rows]

    # -- sync state ------------------------------------------------------------------------

    def recover_started(self, *, leased_only_by: str | None = None, verifications: bool = True) -> int:
        """Rows left in ``started`` by a crashed or killed engine go back to pending. Rows under a lease
        are left to their worker (or to `expire_leases` when it ran out) except those of
        `leased_only_by` (this worker's id: a worker restarted with the same id holds nothing). With
        `verifications`, verifications left started too (see `recover_verifications`)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE repositories SET state = 'pending', started_at = NULL, retry_at = NULL, "
                f"{_RELEASE} WHERE state = 'started' AND (lease_owner IS NULL OR lease_owner = ?)",
                (leased_only_by,),
            )
        if verifications:
            self.recover_verifications()
        return int(cur.rowcount)

    def recover_verifications(self) -> None:
        """Verifications left started by a dead engine go back to pending: at start with one engine,
        and when a worker becomes the one that verifies (the leader) with many."""
        with self._tx() as db:
            db.execute(
                "UPDATE repositories SET verification_state = 'pending' WHERE verification_state = 'started'"
            )

    def due(
        self,
        now: float,
        *,
        sites: Sequence[str] | None = None,
        repositories: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[RepositoryRow]:
        """Rows ready to run: pending ones, and failed ones whose retry time has come."""
        where, params = self._selection(sites, repositories)
        sql = f"SELECT {self._row_columns} FROM repositories WHERE {DUE} AND {where}"
        params.insert(0, now)
        sql += f" ORDER BY {DUE_ORDER} LIMIT ?"
        params.append(limit)
        return [RepositoryRow.from_columns(r) for r in self._query(sql, params)]

    def next_retry_at(self, *, sites: Sequence[str] | None = None) -> float | None:
        sql = "SELECT MIN(retry_at) FROM repositories WHERE on_primary = 1 AND state = 'failed'"
        params: list[object] = []
        if sites is not None:
            sql += f" AND site IN ({','.join('?' * len(sites))})"
            params.extend(sites)
        value = self._query(sql, params)[0][0]
        return float(value) if value is not None else None

    def mark_started(self, site: str, repository: str) -> int:
        """Move a row to started; returns the generation this run works for. Remembers, for good,
        that a sync started there (see `never_started`)."""
        now = self._clock()
        with self._tx() as db:
            db.execute(
                "INSERT INTO started_once (site, repository) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (site, repository),
            )
            db.execute(
                "UPDATE repositories SET state = 'started', started_at = ? WHERE site = ? AND repository = ?",
                (now, site, repository),
            )
            row = db.execute(
                "SELECT generation FROM repositories WHERE site = ? AND repository = ?", (site, repository)
            ).fetchone()
        return int(row[0])

    def never_started(self, site: str, repository: str) -> bool:
        """True until the first `mark_started` of (site, repository): this engine never wrote there,
        whatever became of the row since (a crash, a cancel, a resync)."""
        rows = self._query("SELECT 1 FROM started_once WHERE site = ? AND repository = ?", (site, repository))
        return not rows

    def mark_synced(
        self,
        site: str,
        repository: str,
        generation: int,
        *,
        tag_count: int,
        size: int | None,
        owner: str | None = None,
        seen: dict[str, dict[str, str]] | None = None,
        forget: Sequence[str] = (),
        before: float | None = None,
    ) -> bool:
        """Synced only if no new work came during the run; otherwise back to pending. True if synced.
        With the `owner` of a lease (`claims`): only while it holds the row; a lost lease changes nothing.

        A whole-repository run's last tags ``seen`` (site -> tag -> digest) are recorded with it, and the
        tags of the sites to ``forget`` that it did not stamp since ``before`` are forgotten, in the same
        transaction: one write to end a run that changed nothing, instead of five."""
        now = self._clock()
        held, lease = _held(owner)
        with self._tx() as db:
            if seen:
                seen_in(db, repository, seen, now)
            if before is not None:
                forget_unseen(db, forget, repository, before)
            cur = db.execute(
                "UPDATE repositories SET state = 'synced', retry_count = 0, retry_at = NULL, "
                f"started_at = NULL, {_RELEASE}, "
                "last_synced_at = ?, last_sync_failure = NULL, tag_count = ?, bytes = COALESCE(?, bytes), "
                "oldest_unsynced_event_at = NULL, recheck_blobs = 0 "
                f"WHERE site = ? AND repository = ? AND state = 'started' AND generation = ?{held}",
                (now, tag_count, size, site, repository, generation, *lease),
            )
            if cur.rowcount:
                return True
            db.execute(
                f"UPDATE repositories SET state = 'pending', started_at = NULL, {_RELEASE}, tag_count = ? "
                f"WHERE site = ? AND repository = ? AND state = 'started'{held}",
                (tag_count, site, repository, *lease),
            )
            return False

    def mark_failed(
        self,
        site: str,
        repository: str,
        reason: str,
        retry_at: float | None,
        generation: int | None = None,
        *,
        owner: str | None = None,
    ) -> int:
        """Record a failure; returns the new retry count. With the ``generation`` the run worked for: if
        new work came during the run (a push), the row is due now, not after the backoff; the failure
        and its count stay. With the `owner` of a lease: only while it holds the row (else 0, and
        nothing written)."""
        held, lease = _held(owner)
        with self._tx() as db:
            if generation is not None:
                row = db.execute(
                    "SELECT generation FROM repositories WHERE site = ? AND repository = ?",
                    (site, repository),
                ).fetchone()
                if row is not None and int(row[0]) != generation:
                    retry_at = self._clock()
            cur = db.execute(
                "UPDATE repositories SET state = 'failed', retry_count = retry_count + 1, retry_at = ?, "
                f"started_at = NULL, {_RELEASE}, last_sync_failure = ? "
                f"WHERE site = ? AND repository = ?{held}",
                (retry_at, self._redact(reason)[:2000], site, repository, *lease),
            )
            if not cur.rowcount:
                return 0
            row = db.execute(
                "SELECT retry_count FROM repositories WHERE site = ? AND repository = ?", (site, repository)
            ).fetchone()
        return int(row[0]) if row else 0

    def mark_pending(self, site: str, repository: str, *, owner: str | None = None) -> bool:
        """Put a started row back to pending (engine shutting down mid-copy); with the `owner` of a
        lease, only while it holds the row. True if it did."""
        held, lease = _held(owner)
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE repositories SET state = 'pending', started_at = NULL, {_RELEASE} "
                f"WHERE site = ? AND repository = ? AND state = 'started'{held}",
                (site, repository, *lease),
            )
            if cur.rowcount:  # another engine on the database may take it now
                self.dialect.announce(db, "sync")
            return bool(cur.rowcount)

    def request_reconcile(self, *, sites: Sequence[str] | None = None, fence: object | None = None) -> int:
        """Queue the periodic reconcile: every row not running now goes to pending. A run in progress
        keeps its generation: it reads the primary anyway, and bumping it at every interval meant a
        run longer than the interval was never marked synced (issue 17)."""
        where, params = self._selection(sites, None)
        with self._tx(fence) as db:
            cur = db.execute(
                "UPDATE repositories SET generation = generation + 1, retry_at = NULL, retry_count = 0, "
                f"state = 'pending' WHERE {where} AND state != 'started'",
                params,
            )
            if cur.rowcount:
                self.dialect.announce(db, "sync")
            return int(cur.rowcount)

    def request_sync(
        self,
        *,
        sites: Sequence[str] | None = None,
        repositories: Sequence[str] | None = None,
        failed_only: bool = False,
        event_at: float | None = None,
        recheck_blobs: bool = False,
    ) -> int:
        """Queue rows for a sync: bump their generation so a run in progress will run again.
        ``recheck_blobs``: that sync also looks at the blobs of tags that already match (it stays asked
        for until a sync of the row succeeds)."""
        where, params = self._selection(sites, repositories)
        if failed_only:
            where += " AND state = 'failed'"
        oldest, oldest_params = "", []
        if event_at is not None:  # the older of the row's oldest unsynced event and this one
            oldest = (
                ", oldest_unsynced_event_at = CASE WHEN oldest_unsynced_event_at IS NULL "
                "OR oldest_unsynced_event_at > ? THEN ? ELSE oldest_unsynced_event_at END"
            )
            oldest_params = [event_at, event_at]
        with self._tx() as db:
            cur = db.execute(
                "UPDATE repositories SET generation = generation + 1, retry_at = NULL, retry_count = 0, "
                f"{'recheck_blobs = 1, ' if recheck_blobs else ''}"
                f"state = CASE WHEN state = 'started' THEN 'started' ELSE 'pending' END{oldest} "
                f"WHERE {where}",
                [*oldest_params, *params],
            )
            if cur.rowcount:
                self.dialect.announce(db, "sync")
            return int(cur.rowcount)
