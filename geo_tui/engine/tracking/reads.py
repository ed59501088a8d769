"""Reading rows and counts from the tracking database, by column name."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .rows import RepositoryRow, SiteCounts, SyncState, from_columns
from .store import TrackingStore

__all__ = ["RowReads"]

_BATCH = 400  # keys per statement (SQLite allows 32766 parameters)


class RowReads(TrackingStore):
    """One row, pages of rows, and per-site counts."""

    def row(self, site: str, repository: str) -> RepositoryRow | None:
        rows = self._query(
            f"SELECT {self._row_columns} FROM repositories WHERE site = ? AND repository = ?",
            (site, repository),
        )
        return RepositoryRow.from_columns(rows[0]) if rows else None

    def rows_of(self, keys: Sequence[tuple[str, str]]) -> list[RepositoryRow]:
        """The rows of `keys` (site, repository) that exist: what another worker changed."""
        found: list[RepositoryRow] = []
        wanted = sorted(set(keys))
        for start in range(0, len(wanted), _BATCH):
            chunk = wanted[start : start + _BATCH]
            values = ", ".join("(?, ?)" for _ in chunk)
            rows = self._query(
                f"SELECT {self._row_columns} FROM repositories WHERE (site, repository) IN (VALUES {values})",
                [v for key in chunk for v in key],
            )
            found.extend(RepositoryRow.from_columns(r) for r in rows)
        return found

    def rows(
        self,
        *,
        sites: Sequence[str] | None = None,
        states: Sequence[SyncState] | None = None,
        limit: int | None = None,
        offset: int = 0,
        contains: str | None = None,
    ) -> list[RepositoryRow]:
        where, params = self._selection(sites, None)
        if states is not None:
            where += f" AND state IN ({','.join('?' * len(states))})"
            params.extend(str(s) for s in states)
        if contains:  # not LIKE: no wildcards to escape in a repository name
            where += f" AND {self.dialect.contains('repository')}"
            params.append(contains)
        sql = f"SELECT {self._row_columns} FROM repositories WHERE {where} ORDER BY site, repository"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params.extend([limit, offset])
        return [RepositoryRow.from_columns(r) for r in self._query(sql, params)]

    def counts(self, sites: Sequence[str]) -> dict[str, SiteCounts]:
        """Per-site counts over the repositories the primary still has."""
        raw = {
            str(r["site"]): r
            for r in self._query(
                f"SELECT site, COUNT(*) AS total, {_COUNTS}, "
                "SUM(COALESCE(bytes, 0)) AS bytes, MIN(oldest_unsynced_event_at) AS oldest_unsynced_event_at "
                "FROM repositories WHERE on_primary = 1 GROUP BY site"
            )
        }
        result: dict[str, SiteCounts] = {}
        for site in sites:
            r = raw.get(site)
            if r is None:
                result[site] = SiteCounts(site, 0, 0, 0, 0, 0, 0, 0, 0, 0, None)
                continue
            counted = {name: int(r[name] or 0) for name in _COUNTED}
            oldest = r["oldest_unsynced_event_at"]
            oldest = float(oldest) if oldest is not None else None
            result[site] = from_columns(
                SiteCounts, {"site": site, **counted, "oldest_unsynced_event_at": oldest}
            )
        return result


def _count(condition: str, name: str) -> str:
    """SQL counting the rows where `condition` holds (both backends: PostgreSQL sums no booleans)."""
    return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END) AS {name}"


_COUNTS = ", ".join(
    _count(condition, name)
    for condition, name in (
        ("state = 'pending'", "pending"),
        ("state = 'started'", "started"),
        ("state = 'synced'", "synced"),
        ("state = 'failed'", "failed"),
        ("verification_state = 'succeeded'", "verified"),
        ("verification_state = 'failed'", "verification_failed"),
        ("verification_state IN ('pending', 'started')", "verification_pending"),
    )
)


# The SiteCounts fields that count rows (or bytes), in the order of its fields.
_COUNTED = tuple(f.name for f in dataclasses.fields(SiteCounts))[1:-1]
