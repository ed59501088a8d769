"""What the tracking database keeps beside the rows: received notifications, where blobs are, the
event log, and the redaction of free text already stored."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .queue import TRACK as _TRACK
from .rows import LOG_COLUMNS, LogRecord, from_columns
from .store import TrackingStore

__all__ = ["EVENT_LOG_LIMIT", "NotificationBatch", "PauseState", "Records"]

EVENT_LOG_LIMIT = 10_000
_LOG = ", ".join(LOG_COLUMNS)

# The columns holding free text (from registries' answers): what `redact` applies to.
_FREE_TEXT = (
    ("repositories", "site, repository", "last_sync_failure"),
    ("repositories", "site, repository", "verification_failure"),
    ("event_log", "id", "message"),
)
_LOG_ID_TRIES = 5  # another worker may take the next free id between our look and our insert
_BATCH = 400  # ids per statement
PAUSE_KEY = "paused"  # meta: replication paused for every worker on the database, by whom and since when


@dataclass(frozen=True)
class PauseState:
    """Whether replication is paused on the database (every worker), who paused it last and when."""

    paused: bool
    by: str | None = None
    at: float | None = None


@dataclass(frozen=True)
class NotificationBatch:
    """What one notification request stores (see `Records.record_notifications`)."""

    events: Sequence[tuple[str, str, str, str | None, str | None]]  # (id, action, repository, tag, digest)
    rows: Iterable[tuple[str, str]]  # (site, repository) queued for a whole-repository run
    received_at: float
    pushes: Sequence[tuple[str, str | None, str]] = ()  # (repository, tag, digest) queued for a copy
    push_rows: Iterable[tuple[str, str]] = ()  # (site, repository) tracked, not queued


class Records(TrackingStore):
    """Notifications, blob locations and the event log."""

    def record_notifications(
        self,
        events: Sequence[tuple[str, str, str, str | None, str | None]],
        rows: Iterable[tuple[str, str]],
        received_at: float,
        pushes: Sequence[tuple[str, str | None, str]] = (),
        push_rows: Iterable[tuple[str, str]] = (),
    ) -> int:
        """Store received events, queue their (site, repository) rows for a whole-repository run and
        their ``pushes`` (repository, tag, digest) for a copy of what they name, in one transaction:
        once this returns, a killed process still replicates them after a restart. ``push_rows`` are
        tracked (created if new) without queueing a run. Returns rows and pushes queued."""
        return self.record_notification_batches(
            [NotificationBatch(events, rows, received_at, pushes, push_rows)]
        )[0]

    def record_notification_batches(self, batches: Sequence[NotificationBatch]) -> list[int]:
        """`record_notifications` of several requests in one transaction (one commit, one NOTIFY each
        kind): what each queued, in order."""
        queued: list[int] = []
        with self._tx() as db:
            for batch in batches:
                queued.append(self._record(db, batch))
            if any(b.pushes for b in batches):
                self.dialect.announce(db, "push")
            if any(n > len(b.pushes) for n, b in zip(queued, batches, strict=True)):
                self.dialect.announce(db, "sync")
        return queued

    def _record(self, db: Any, batch: NotificationBatch) -> int:
        received_at = batch.received_at
        db.executemany(
            "INSERT INTO notifications (received_at, event_id, action, repository, tag, digest) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(received_at, *event) for event in batch.events],
        )
        db.executemany(
            "INSERT INTO push_queue (received_at, repository, tag, digest) VALUES (?, ?, ?, ?)",
            [(received_at, *push) for push in batch.pushes],
        )
        db.executemany(_TRACK, list(batch.push_rows))
        queued = db.executemany(
            "INSERT INTO repositories (site, repository, oldest_unsynced_event_at) VALUES (?, ?, ?) "
            "ON CONFLICT (site, repository) DO UPDATE SET generation = repositories.generation + 1, "
            "retry_at = NULL, retry_count = 0, on_primary = 1, "
            "state = CASE WHEN repositories.state = 'started' THEN 'started' ELSE 'pending' END, "
            "oldest_unsynced_event_at = CASE WHEN repositories.oldest_unsynced_event_at IS NULL "
            "OR repositories.oldest_unsynced_event_at > excluded.oldest_unsynced_event_at "
            "THEN excluded.oldest_unsynced_event_at ELSE repositories.oldest_unsynced_event_at END",
            [(site, repo, received_at) for site, repo in batch.rows],
        ).rowcount + len(batch.pushes)
        self._notification_inserts += len(batch.events)
        if self._notification_inserts >= 1000:
            self._notification_inserts = 0
            db.execute(
                "DELETE FROM notifications WHERE id <= (SELECT MAX(id) FROM notifications) - ?",
                (EVENT_LOG_LIMIT,),
            )
        return int(queued)

    # -- blob locations ----------------------------------------------------------------------

    def add_blob_locations(self, site: str, repository: str, digests: Iterable[str]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT INTO blob_locations (site, digest, repository) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [(site, d, repository) for d in digests],
            )

    def blob_sources(self, site: str, digest: str, *, exclude: str, limit: int = 3) -> list[str]:
        """Repositories on ``site`` known to hold ``digest``: candidates for a cross-repository mount."""
        rows = self._query(
            "SELECT repository FROM blob_locations WHERE site = ? AND digest = ? AND repository != ? LIMIT ?",
            (site, digest, exclude, limit),
        )
        return [str(r[0]) for r in rows]

    def forget_blob_location(self, site: str, digest: str, repository: str) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM blob_locations WHERE site = ? AND digest = ? AND repository = ?",
                (site, digest, repository),
            )

    def redact_stored(self) -> int:
        """Apply `redact` to the free text already stored, which a geo-tui from before redaction may have
        written; returns how many texts changed. Only failure reasons and the capped event log hold free
        text, so this costs what they hold, not the repository count."""
        changed = 0
        with self._tx() as db:
            for table, key, column in _FREE_TEXT:
                rows = db.execute(f"SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL")
                updates = [
                    (clean, *tuple(row)[:-1])
                    for row in rows.fetchall()
                    if (clean := self._redact(str(row[-1]))) != row[-1]
                ]
                where = " AND ".join(f"{name.strip()} = ?" for name in key.split(","))
                db.executemany(f"UPDATE {table} SET {column} = ? WHERE {where}", updates)
                changed += len(updates)
        return changed

    # -- event log ---------------------------------------------------------------------------

    def log(
        self, level: str, message: str, *, site: str | None = None, repository: str | None = None
    ) -> LogRecord:
        record = self.log_record(level, message, site=site, repository=repository)
        self.store_log(record)
        return record

    def log_record(
        self,
        level: str,
        message: str,
        *,
        site: str | None = None,
        repository: str | None = None,
        worker: str | None = None,
    ) -> LogRecord:
        """A new event-log record with the next id and the message redacted, not stored yet (`store_log`)."""
        message = self._redact(message)
        with self._id_lock:
            self._next_log_id += 1
            return LogRecord(self._next_log_id, self._clock(), level, site, repository, message, worker)

    def store_log(self, record: LogRecord) -> None:
        """Store `record`; if its id was taken (many workers share a PostgreSQL database, each numbering
        its own lines), under the next id free, numbering on from there."""
        record_id = record.id
        with self._tx() as db:
            for _ in range(_LOG_ID_TRIES):
                cur = db.execute(
                    "INSERT INTO event_log (id, at, level, site, repository, message, worker) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (
                        record_id,
                        record.at,
                        record.level,
                        record.site,
                        record.repository,
                        record.message,
                        record.worker,
                    ),
                )
                if cur.rowcount:
                    break
                top = db.execute("SELECT MAX(id) FROM event_log").fetchone()
                with self._id_lock:
                    self._next_log_id = max(self._next_log_id, int(top[0] or 0)) + 1
                    record_id = self._next_log_id
            self._log_inserts += 1
            if self._log_inserts % 500 == 0:
                db.execute("DELETE FROM event_log WHERE id <= ?", (record_id - EVENT_LOG_LIMIT,))

    def repository_log(self, repository: str, limit: int = 200) -> list[LogRecord]:
        rows = self._query(
            f"SELECT {_LOG} FROM event_log WHERE repository = ? ORDER BY id DESC LIMIT ?",
            (repository, limit),
        )
        return [from_columns(LogRecord, r) for r in reversed(rows)]

    def recent_log(self, limit: int = 500) -> list[LogRecord]:
        rows = self._query(
            f"SELECT {_LOG} FROM event_log ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [from_columns(LogRecord, r) for r in reversed(rows)]

    def log_records(self, ids: Sequence[int]) -> list[LogRecord]:
        """The stored lines of `ids` (those still kept), oldest first: what another worker logged."""
        found: list[LogRecord] = []
        wanted = sorted(set(ids))
        for start in range(0, len(wanted), _BATCH):
            chunk = wanted[start : start + _BATCH]
            rows = self._query(
                f"SELECT {_LOG} FROM event_log WHERE id IN ({','.join('?' * len(chunk))})", chunk
            )
            found.extend(from_columns(LogRecord, r) for r in rows)
        return sorted(found, key=lambda r: (r.at, r.id))

    # -- pause -------------------------------------------------------------------------------

    def pause_state(self) -> PauseState:
        """Whether replication is paused for every engine on this database (none stored: not paused)."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (PAUSE_KEY,))
        if not rows:
            return PauseState(False)
        try:
            value = json.loads(str(rows[0][0]))
            return PauseState(bool(value["paused"]), value.get("by"), value.get("at"))
        except (ValueError, KeyError, TypeError):
            return PauseState(False)

    def set_pause(self, state: PauseState) -> None:
        """Pause or resume replication for every engine on this database, and tell them (NOTIFY)."""
        value = json.dumps({"paused": state.paused, "by": state.by, "at": state.at})
        with self._tx() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (PAUSE_KEY, value),
            )
            self.dialect.changed(db, "pause")
