"""Pushes waiting for their copy, and the tags the engine last saw on each site (issue 17).

With many workers on one PostgreSQL database (issue 16) the push queue is shared out under leases, as
the repositories rows are (`claims`): a worker claims the queued pushes of whole repositories in one
short transaction (`claim_pushes`), never a repository any row of which another worker holds under a
live lease, so a repository's pushes are copied by one worker at a time. It renews the leases while it
copies (`renew_push_leases`), deletes only the rows it still holds when done (`done_pushes`), and a
lease that ran out makes its rows anyone's again. On SQLite (one engine per file) nothing is leased.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from .store import TrackingStore

__all__ = ["PushClaim", "PushRecords", "QueuedPush", "forget_unseen", "seen_in"]

_BATCH = 400  # ids per statement (SQLite allows 32766 parameters)
_COLUMNS = "id, received_at, repository, tag, digest"


def seen_in(db: Any, repository: str, seen: dict[str, dict[str, str]], now: float) -> None:
    """Stamp tag -> digest as seen at ``now`` on each site of ``seen``, within the caller's transaction:
    one statement for up to `_BATCH` rows (a many-row VALUES costs a fraction of a statement per row, or
    of executemany's pipeline, for a chunk of a few tags)."""
    rows = [
        (site, repository, tag, digest, now) for site, tags in seen.items() for tag, digest in tags.items()
    ]
    for start in range(0, len(rows), _BATCH):
        part = rows[start : start + _BATCH]
        db.execute(
            "INSERT INTO tags_seen (site, repository, tag, digest, seen_at) VALUES "
            + ",".join(["(?, ?, ?, ?, ?)"] * len(part))
            + " ON CONFLICT (site, repository, tag) DO UPDATE SET digest = excluded.digest, "
            "seen_at = excluded.seen_at",
            [value for row in part for value in row],
        )


def forget_unseen(db: Any, sites: Sequence[str], repository: str, before: float) -> None:
    """A whole-repository run stamped every tag of these ``sites`` it saw since ``before``: forget the
    others (gone from the site), within the caller's transaction."""
    if sites:
        db.execute(
            f"DELETE FROM tags_seen WHERE site IN ({','.join('?' * len(sites))}) AND repository = ? "
            "AND seen_at < ?",
            [*sites, repository, before],
        )


@dataclass(frozen=True)
class QueuedPush:
    """One push a notification named: its tag (None when pushed by digest only) and manifest digest."""

    id: int
    received_at: float
    repository: str
    tag: str | None
    digest: str


@dataclass(frozen=True)
class PushClaim:
    """What a claim took: the queued pushes of each repository to copy now (oldest first, by the push
    that has waited longest), whether digest-only pushes wait out their grace, and the repositories taken
    from a worker whose lease had run out, with its id."""

    repositories: dict[str, list[QueuedPush]] = field(default_factory=dict)
    waiting: bool = False
    taken_over: dict[str, str] = field(default_factory=dict)


def _push(row: Any) -> QueuedPush:
    return QueuedPush(
        int(row["id"]), float(row["received_at"]), str(row["repository"]), row["tag"], str(row["digest"])
    )


def _choose(
    rows: Sequence[Any], owner: str | None, now: float, *, slots: int, skip: Collection[str], grace: float
) -> PushClaim:
    """The copier's rules, once for both backends: at most `slots` repositories, none in `skip`
    (running here) nor any with a row under another worker's live lease, and digest-only pushes only
    after `grace` seconds (the push that references them may be on its way)."""
    by_repository: dict[str, list[Any]] = {}
    for row in rows:
        by_repository.setdefault(str(row["repository"]), []).append(row)
    chosen: dict[str, list[QueuedPush]] = {}
    taken_over: dict[str, str] = {}
    waiting = False
    for repository, found in by_repository.items():
        if len(chosen) >= slots:
            break
        if repository in skip:
            continue
        others = [r for r in found if r["lease_owner"] is not None and r["lease_owner"] != owner]
        if any(float(r["lease_until"]) > now for r in others):
            continue  # another worker copies this repository now
        if all(r["tag"] is None for r in found) and now - float(found[0]["received_at"]) < grace:
            waiting = True
            continue
        chosen[repository] = [_push(r) for r in found]
        if others:
            taken_over[repository] = str(others[0]["lease_owner"])
    return PushClaim(chosen, waiting, taken_over)


class PushRecords(TrackingStore):
    """The push queue (filled by `Records.record_notifications`) and tag -> digest as last seen."""

    def queued_pushes(self, limit: int = 10_000, *, repository: str | None = None) -> list[QueuedPush]:
        """Pushes waiting for their copy (of `repository`), oldest first, whoever holds them."""
        where, params = ("WHERE repository = ? ", [repository]) if repository is not None else ("", [])
        rows = self._query(f"SELECT {_COLUMNS} FROM push_queue {where}ORDER BY id LIMIT ?", [*params, limit])
        return [_push(r) for r in rows]

    def claim_pushes(
        self,
        owner: str | None,
        now: float,
        *,
        slots: int,
        lease_seconds: float,
        skip: Collection[str] = (),
        grace: float = 0.0,
        limit: int = 10_000,
    ) -> PushClaim:
        """Take the queued pushes of up to `slots` whole repositories for `owner` until ``now +
        lease_seconds`` (see `_choose` for which), in one transaction that other claimers wait for
        (`Dialect.lock_push_claims`). `owner` None (SQLite: one engine per file): the same choice, read
        and not leased."""
        sql = f"SELECT {_COLUMNS}, lease_owner, lease_until FROM push_queue ORDER BY id LIMIT ?"
        if slots <= 0:
            return PushClaim()
        if owner is None:
            return _choose(self._query(sql, (limit,)), None, now, slots=slots, skip=skip, grace=grace)
        if not self._query("SELECT 1 FROM push_queue LIMIT 1"):
            return PushClaim()  # an empty queue (most wakes): no transaction, no turn at the lock
        with self._tx() as db:
            self.dialect.lock_push_claims(db)
            rows = db.execute(sql, (limit,)).fetchall()
            claim = _choose(rows, owner, now, slots=slots, skip=skip, grace=grace)
            ids = [p.id for pushes in claim.repositories.values() for p in pushes]
            for start in range(0, len(ids), _BATCH):
                chunk = ids[start : start + _BATCH]
                db.execute(
                    "UPDATE push_queue SET lease_owner = ?, lease_until = ? "
                    f"WHERE id IN ({','.join('?' * len(chunk))})",
                    [owner, now + lease_seconds, *chunk],
                )
        return claim

    def renew_push_leases(self, owner: str, now: float, lease_seconds: float, ids: Sequence[int]) -> set[int]:
        """The heartbeat of running push copies: extend `owner`'s live leases of `ids` to ``now +
        lease_seconds``. Returns the ids lost: still queued, but no longer this owner's (its lease ran
        out, or another took them). A row done meanwhile is not lost, only gone."""
        lost: set[int] = set()
        with self._tx() as db:
            for start in range(0, len(ids), _BATCH):
                chunk = list(ids[start : start + _BATCH])
                marks = ",".join("?" * len(chunk))
                held = db.execute(
                    "UPDATE push_queue SET lease_until = ? WHERE lease_owner = ? AND lease_until > ? "
                    f"AND id IN ({marks}) RETURNING id",
                    [now + lease_seconds, owner, now, *chunk],
                ).fetchall()
                queued = db.execute(f"SELECT id FROM push_queue WHERE id IN ({marks})", chunk).fetchall()
                lost |= {int(r[0]) for r in queued} - {int(r[0]) for r in held}
        return lost

    def release_pushes(self, owner: str) -> int:
        """`owner` holds no pushes any more (it stopped, or its process is gone): they are anyone's at
        once, without waiting for their leases to run out. Returns how many."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE push_queue SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?", (owner,)
            )
            return int(cur.rowcount)

    def leased_pushes(self, owner: str | None = None) -> list[tuple[int, str, str, float]]:
        """(id, repository, owner, lease_until) of the pushes under a lease (of `owner`), by id."""
        sql = "SELECT id, repository, lease_owner, lease_until FROM push_queue WHERE lease_owner IS NOT NULL"
        params: Sequence[object] = ()
        if owner is not None:
            sql, params = sql + " AND lease_owner = ?", (owner,)
        rows = self._query(sql + " ORDER BY id", params)
        return [(int(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]

    def push_queue_depth(self) -> int:
        (count,) = self._query("SELECT COUNT(*) FROM push_queue")[0]
        return int(count)

    def oldest_queued_push(self) -> float | None:
        (oldest,) = self._query("SELECT MIN(received_at) FROM push_queue")[0]
        return float(oldest) if oldest is not None else None

    def enqueue_pushes(self, pushes: Sequence[QueuedPush]) -> None:
        """Queue pushes again (copied while a whole-repository run was writing the same repository)."""
        with self._tx() as db:
            db.executemany(
                "INSERT INTO push_queue (received_at, repository, tag, digest) VALUES (?, ?, ?, ?)",
                [(p.received_at, p.repository, p.tag, p.digest) for p in pushes],
            )
            if pushes:
                self.dialect.announce(db, "push")

    def done_pushes(self, ids: Sequence[int], *, owner: str | None = None) -> int:
        """Take copied pushes off the queue; with the `owner` of their lease, only those it still holds
        (a worker whose lease was lost leaves them to the one that has them now). Returns how many."""
        held, lease = (" AND lease_owner = ?", [owner]) if owner is not None else ("", [])
        done = 0
        with self._tx() as db:
            for start in range(0, len(ids), _BATCH):
                chunk = list(ids[start : start + _BATCH])
                cur = db.execute(
                    f"DELETE FROM push_queue WHERE id IN ({','.join('?' * len(chunk))}){held}",
                    [*chunk, *lease],
                )
                done += int(cur.rowcount)
        return done

    def record_tags_seen(self, site: str, repository: str, tags: dict[str, str], *, complete: bool) -> None:
        """Remember tag -> digest as seen on ``site`` now. ``complete``: these are all its tags
        (a whole-repository run read them), so tags not named are forgotten."""
        now = self.now()
        with self._tx() as db:
            if complete:
                db.execute("DELETE FROM tags_seen WHERE site = ? AND repository = ?", (site, repository))
            seen_in(db, repository, {site: tags}, now)

    def record_seen(self, repository: str, seen: dict[str, dict[str, str]]) -> None:
        """Remember tag -> digest as seen now on each site of ``seen`` (a chunk of a whole-repository run,
        on the primary and on a secondary), in one transaction."""
        now = self.now()
        with self._tx() as db:
            seen_in(db, repository, seen, now)

    def tags_seen_on(
        self, sites: Sequence[str], repository: str, tags: Sequence[str]
    ) -> dict[tuple[str, str], tuple[str, float]]:
        """(site, tag) -> (digest, when seen) of these tags of one repository on these sites: a push
        copy's look at what it may already have written, without reading the repository's other tags."""
        found: dict[tuple[str, str], tuple[str, float]] = {}
        if not sites:
            return found
        on = ",".join("?" * len(sites))
        for start in range(0, len(tags), _BATCH):
            chunk = list(tags[start : start + _BATCH])
            rows = self._query(
                f"SELECT site, tag, digest, seen_at FROM tags_seen WHERE site IN ({on}) "
                f"AND repository = ? AND tag IN ({','.join('?' * len(chunk))})",
                [*sites, repository, *chunk],
            )
            found.update(
                {(str(r["site"]), str(r["tag"])): (str(r["digest"]), float(r["seen_at"])) for r in rows}
            )
        return found

    def tags_seen(self, repository: str) -> dict[str, tuple[dict[str, str], float]]:
        """Site -> (tag -> digest, when last seen) for one repository, as the engine last saw it."""
        seen: dict[str, tuple[dict[str, str], float]] = {}
        for row in self._query(
            "SELECT site, tag, digest, seen_at FROM tags_seen WHERE repository = ? ORDER BY site, tag",
            (repository,),
        ):
            site = str(row["site"])
            tags, latest = seen.get(site, ({}, 0.0))
            tags[str(row["tag"])] = str(row["digest"])
            seen[site] = (tags, max(latest, float(row["seen_at"])))
        return seen
