"""Pushes waiting for their copy, and the tags the engine last saw on each site (issue 17)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .store import TrackingStore

__all__ = ["PushRecords", "QueuedPush"]


@dataclass(frozen=True)
class QueuedPush:
    """One push a notification named: its tag (None when pushed by digest only) and manifest digest."""

    id: int
    received_at: float
    repository: str
    tag: str | None
    digest: str


class PushRecords(TrackingStore):
    """The push queue (filled by `Records.record_notifications`) and tag -> digest as last seen."""

    def queued_pushes(self, limit: int = 10_000) -> list[QueuedPush]:
        """Pushes waiting for their copy, oldest first."""
        rows = self._query(
            "SELECT id, received_at, repository, tag, digest FROM push_queue ORDER BY id LIMIT ?", (limit,)
        )
        return [
            QueuedPush(
                int(r["id"]), float(r["received_at"]), str(r["repository"]), r["tag"], str(r["digest"])
            )
            for r in rows
        ]

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

    def done_pushes(self, ids: Sequence[int]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM push_queue WHERE id = ?", [(i,) for i in ids])

    def record_tags_seen(self, site: str, repository: str, tags: dict[str, str], *, complete: bool) -> None:
        """Remember tag -> digest as seen on ``site`` now. ``complete``: these are all its tags
        (a whole-repository run read them), so tags not named are forgotten."""
        now = self.now()
        with self._tx() as db:
            if complete:
                db.execute("DELETE FROM tags_seen WHERE site = ? AND repository = ?", (site, repository))
            db.executemany(
                "INSERT INTO tags_seen (site, repository, tag, digest, seen_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (site, repository, tag) DO UPDATE SET digest = excluded.digest, "
                "seen_at = excluded.seen_at",
                [(site, repository, tag, digest, now) for tag, digest in tags.items()],
            )

    def forget_tags_seen(self, site: str, repository: str, *, before: float) -> None:
        """A whole-repository run recorded every tag of ``site`` chunk by chunk since ``before``: the
        tags it did not see are gone."""
        with self._tx() as db:
            db.execute(
                "DELETE FROM tags_seen WHERE site = ? AND repository = ? AND seen_at < ?",
                (site, repository, before),
            )

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
