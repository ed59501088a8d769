"""What the tracking database's rows mean, as dataclasses read by column name.

A row is built from a mapping of column names to values (`sqlite3.Row`, or a psycopg ``dict_row`` for
a second backend), never from positions: reordering or adding columns in SQL cannot shift a field, and
the engine API's wire (`wire.py`, which sends field names) never depends on the SQL column order.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

__all__ = [
    "LOG_COLUMNS",
    "ROW_COLUMNS",
    "Columns",
    "LogRecord",
    "RepositoryRow",
    "SiteCounts",
    "SyncState",
    "VerificationState",
    "from_columns",
]


class SyncState(enum.StrEnum):
    PENDING = "pending"
    STARTED = "started"
    SYNCED = "synced"
    FAILED = "failed"


class VerificationState(enum.StrEnum):
    PENDING = "pending"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Columns(Protocol):
    """Values by column name: a `sqlite3.Row`, a dict (psycopg's ``dict_row``)."""

    def keys(self) -> Iterable[str]: ...

    def __getitem__(self, name: str, /) -> Any: ...


@dataclass(frozen=True)
class RepositoryRow:
    """The tracked state of one repository on one secondary."""

    site: str
    repository: str
    state: SyncState
    generation: int
    retry_count: int
    retry_at: float | None
    started_at: float | None
    last_synced_at: float | None
    last_sync_failure: str | None
    tag_count: int | None
    bytes: int | None
    verification_state: VerificationState
    verification_checksum: str | None
    verified_at: float | None
    verification_failure: str | None
    on_primary: bool
    oldest_unsynced_event_at: float | None
    # How deep the last verification went (checksum, deep, content; None before the first), when the
    # last deep or content one ran, and whether the next sync must look at the blobs of matching tags.
    verification_depth: str | None = None
    deep_verified_at: float | None = None
    recheck_blobs: bool = False

    @classmethod
    def from_columns(cls, columns: Columns) -> RepositoryRow:
        """A row from its values by column name: names it does not know are ignored, a field with a
        default may be absent, and the enums and the bools are restored."""
        return from_columns(cls, columns)

    @classmethod
    def _from_sql(cls, values: list[Any]) -> RepositoryRow:
        """A row from values in field order (the wire decoder's form: it lines its columns up by name)."""
        return cls.from_columns(dict(zip(_field_names(cls), values, strict=False)))

    @property
    def key(self) -> tuple[str, str]:
        return (self.site, self.repository)


@dataclass(frozen=True)
class SiteCounts:
    """Counts of one secondary's rows, the figures of GitLab's Geo dashboard."""

    site: str
    total: int
    pending: int
    started: int
    synced: int
    failed: int
    verified: int
    verification_failed: int
    verification_pending: int
    bytes: int
    oldest_unsynced_event_at: float | None

    @property
    def percent_synced(self) -> float:
        """Percent synced to 2 decimals, rounded down: 100.0 only when every repository is synced."""
        return (10000 * self.synced // self.total) / 100 if self.total else 100.0


@dataclass(frozen=True)
class LogRecord:
    id: int
    at: float
    level: str
    site: str | None
    repository: str | None
    message: str
    # The worker that logged it (host/pid/start; many workers on PostgreSQL), None with one engine.
    worker: str | None = None


T = TypeVar("T")

# How a stored value becomes a field's value, for the fields SQL cannot hold as they are.
_CONVERT: dict[str, Any] = {
    "state": lambda v: SyncState(str(v)),
    "verification_state": lambda v: VerificationState(str(v)),
    "on_primary": bool,
    "recheck_blobs": bool,
}


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def from_columns(cls: type[T], columns: Columns) -> T:
    """An instance of the dataclass `cls` from values by column name (see `RepositoryRow.from_columns`).
    A missing field without a default raises TypeError naming it."""
    by_position = isinstance(columns, sqlite3.Row)
    key = (cls, tuple(columns.keys()), by_position)
    build = _BUILDERS.get(key)
    if build is None:
        if len(_BUILDERS) >= 256:  # only code names columns, but a caller could pass any mapping
            _BUILDERS.clear()
        build = _BUILDERS[key] = _builder(cls, key[1], by_position)
    return build(columns)  # type: ignore[no-any-return]


# One builder per dataclass and set of column names (a handful: one per SELECT), so that a page of
# 100,000 rows maps names to fields once, not once per row.
_BUILDERS: dict[tuple[type[Any], tuple[str, ...], bool], Callable[[Columns], Any]] = {}


def _builder(cls: type[Any], names: tuple[str, ...], by_position: bool) -> Callable[[Columns], Any]:
    fields = dataclasses.fields(cls)
    for field in fields:
        if field.name not in names and field.default is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}: no value for {field.name}")
    present = [f.name for f in fields if f.name in names]
    # a sqlite3.Row is read by index (its names are matched once, here), a dict by name
    where: list[Any] = [names.index(n) for n in present] if by_position else present
    pick = operator.itemgetter(*where) if len(where) > 1 else lambda row: (row[where[0]],)
    convert = [(i, _CONVERT[n]) for i, n in enumerate(present) if n in _CONVERT]
    positional = len(present) == len(fields)  # else the fields left out take their defaults

    def build(row: Columns) -> Any:
        values = list(pick(row))
        for i, to_field in convert:
            if values[i] is not None:
                values[i] = to_field(values[i])
        return cls(*values) if positional else cls(**dict(zip(present, values, strict=True)))

    return build


# The columns a RepositoryRow and a LogRecord are read from: named once, in any order.
ROW_COLUMNS = _field_names(RepositoryRow)
LOG_COLUMNS = _field_names(LogRecord)
