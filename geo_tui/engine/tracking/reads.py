"""Reading rows and counts from the tracking database, by column name."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .rows import RepositoryRow, SiteCounts, SyncState, from_columns
from .store import TrackingStore

__all__ = ["RowReads"]


class RowReads(TrackingStore):
    """One row, pages of rows, and per-site counts."""

    def row(self, site: str, repository: str) -> RepositoryRow | None:
        rows = self._query(
            f"SELECT {self._row_columns} FROM repositories WHERE site = ? AND repository = ?",
            (site, repository),
        )
        return RepositoryRow.from_columns(rows[0]) if rows else None

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
        if contains:  # instr, not LIKE: no wildcards to escape in a repository name
            where += " AND instr(repository, ?) > 0"
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
                "SELECT site, COUNT(*) AS total, SUM(state = 'pending') AS pending, "
                "SUM(state = 'started') AS started, SUM(state = 'synced') AS synced, "
                "SUM(state = 'failed') AS failed, SUM(verification_state = 'succeeded') AS verified, "
                "SUM(verification_state = 'failed') AS verification_failed, "
                "SUM(verification_state IN ('pending', 'started')) AS verification_pending, "
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


# The SiteCounts fields that count rows (or bytes), in the order of its fields.
_COUNTED = tuple(f.name for f in dataclasses.fields(SiteCounts))[1:-1]
