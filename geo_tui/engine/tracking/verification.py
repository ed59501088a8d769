"""Verification in the tracking database: what is due, the deep schedule, and each check's result."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from .rows import RepositoryRow, VerificationState
from .store import TrackingStore

__all__ = ["DEEP_PLAN_BATCH", "VerificationRecords", "deep_offset"]

DEEP_PLAN_BATCH = 1000  # rows given their first deep-verification slot per call of deep_due


def deep_offset(site: str, repository: str, interval: float) -> float:
    """Where in the deep-verification interval a row's first check falls: the same for a name every time,
    and spread evenly over the interval across names."""
    digest = hashlib.sha256(f"{site}\x00{repository}".encode()).digest()
    return interval * int.from_bytes(digest[:8], "big") / 2**64


class VerificationRecords(TrackingStore):
    """Rows by verification state, kept apart from their sync state."""

    def request_verify(
        self, *, sites: Sequence[str] | None = None, repositories: Sequence[str] | None = None
    ) -> int:
        where, params = self._selection(sites, repositories)
        with self._tx() as db:
            return int(
                db.execute(
                    f"UPDATE repositories SET verification_state = 'pending' WHERE {where}", params
                ).rowcount
            )

    def mark_verification(
        self,
        site: str,
        repository: str,
        state: VerificationState,
        *,
        checksum: str | None = None,
        failure: str | None = None,
        depth: str | None = None,
        next_deep_at: float | None = None,
    ) -> None:
        """Record a verification's state; a finished one (succeeded, failed) also records its time and
        ``depth``, and a deep or content one when the schedule looks again (``next_deep_at``)."""
        now = self._clock()
        done = state in (VerificationState.SUCCEEDED, VerificationState.FAILED)
        deep = done and depth in ("deep", "content")
        failure = failure and self._redact(failure)
        params: list[object] = [str(state), checksum, done, now, failure, done, depth, deep, now, deep]
        params += [next_deep_at, site, repository]
        with self._tx() as db:
            db.execute(
                "UPDATE repositories SET verification_state = ?, verification_checksum = COALESCE(?, "
                "verification_checksum), verified_at = CASE WHEN ? THEN ? ELSE verified_at END, "
                "verification_failure = ?, "
                "verification_depth = CASE WHEN ? THEN ? ELSE verification_depth END, "
                "deep_verified_at = CASE WHEN ? THEN ? ELSE deep_verified_at END, "
                "next_deep_at = CASE WHEN ? THEN COALESCE(?, next_deep_at) ELSE next_deep_at END "
                "WHERE site = ? AND repository = ?",
                params,
            )

    def verification_due(
        self, *, sites: Sequence[str] | None = None, limit: int = 1000
    ) -> list[RepositoryRow]:
        sql = (
            f"SELECT {self._row_columns} FROM repositories WHERE on_primary = 1 AND state = 'synced' "
            "AND verification_state = 'pending'"
        )
        params: list[object] = []
        if sites is not None:
            sql += f" AND site IN ({','.join('?' * len(sites))})"
            params.extend(sites)
        sql += " ORDER BY repository LIMIT ?"
        params.append(limit)
        return [RepositoryRow.from_columns(r) for r in self._query(sql, params)]

    def deep_due(
        self, now: float, interval: float, *, sites: Sequence[str] | None = None, limit: int = 2
    ) -> list[RepositoryRow]:
        """Synced rows whose scheduled deep verification has come, the longest overdue first.

        A row gets its first slot at a fixed point of the interval drawn from a hash of its site and name
        (`deep_offset`), so rows synced together (a backfill, an upgrade) are not all due together. Up to
        DEEP_PLAN_BATCH rows are planned per call, so a first call on 100k rows does not hold the database."""
        # unindexed site and state: the planner must walk the next_deep_at index, not every row of a site
        unindexed = self.dialect.unindexed
        where = "1 = 1" if sites is None else f"{unindexed('site')} IN ({','.join('?' * len(sites))})"
        params: list[object] = list(sites or ())
        with self._tx() as db:
            unplanned = db.execute(
                f"SELECT site, repository FROM repositories WHERE next_deep_at IS NULL AND {where} LIMIT ?",
                [*params, DEEP_PLAN_BATCH],
            ).fetchall()
            db.executemany(
                "UPDATE repositories SET next_deep_at = ? WHERE site = ? AND repository = ?",
                [(now + deep_offset(str(s), str(r), interval), s, r) for s, r in unplanned],
            )
        sql = (
            f"SELECT {self._row_columns} FROM repositories WHERE next_deep_at <= ? AND on_primary = 1 "
            f"AND {unindexed('state')} = 'synced' AND verification_state != 'started' AND {where} "
            "ORDER BY next_deep_at LIMIT ?"
        )
        rows = self._query(sql, [now, *params, limit])
        return [RepositoryRow.from_columns(r) for r in rows]

    def verification_depths(self, sites: Sequence[str]) -> dict[str, dict[str, object]]:
        """Per site: repositories by the depth of their last verification ("never" for none yet), and
        the oldest deep or content verification (None if a repository never had one)."""
        result: dict[str, dict[str, object]] = {
            site: {"checksum": 0, "deep": 0, "content": 0, "never": 0, "oldest_deep": None} for site in sites
        }
        for site, depth, count in self._query(
            "SELECT site, COALESCE(verification_depth, 'never'), COUNT(*) FROM repositories "
            "WHERE on_primary = 1 GROUP BY site, verification_depth"
        ):
            if site in result and depth in result[str(site)]:
                result[str(site)][str(depth)] = int(count)
        for site, never, oldest in self._query(
            "SELECT site, SUM(CASE WHEN deep_verified_at IS NULL THEN 1 ELSE 0 END), MIN(deep_verified_at) "
            "FROM repositories "
            "WHERE on_primary = 1 GROUP BY site"
        ):
            if site in result and not never:
                result[str(site)]["oldest_deep"] = oldest
        return result
