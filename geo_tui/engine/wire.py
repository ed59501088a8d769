"""The engine API's JSON: rows, log records, snapshots, details, typed updates and commands, both ways.

Every stream message is an object ``{"v": WIRE_VERSION, "type": ..., ...}``. A reader ignores keys it
does not know (a newer engine may add some) and refuses another major version with a `WireError`, so
a console never shows half-understood state. Decoding never raises anything but `WireError`.

Under load the stream sends messages in batches, ``{"v": ..., "type": "batch", "messages": [...]}``
(version 2): one websocket frame, one wakeup of the console's link thread, for many updates.

Commands (``POST commands/<name>``) are the dataclasses `Resync`, `Verify`, `Pause` and `Resume`: the
client encodes one with `encode_command`, the server decodes it with `decode_command`, which refuses a
field the command does not take, a value of the wrong type or range, or a site that is not a secondary,
with an `InvalidCommand` naming the field. A field at its default is not sent, so an engine older than
the field reads the command as it always did. Every command is answered by a `CommandAnswer`.
``GET workers`` answers model.py's `WorkersView`, encoded by `encode_workers`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .deep import VerificationDepth
from .model import EngineSnapshot, RepositoryDetail, SiteSnapshot, SiteTags, WorkerInfo, WorkersView
from .tracking import LogRecord, RepositoryRow, SiteCounts, SyncState, VerificationState
from .updates import BytesCopied, EngineStatus, LogLine, Reload, RepositoryUpdated, SiteHealth, Update

__all__ = [
    "CHILD_READY",
    "WIRE_VERSION",
    "Command",
    "CommandAnswer",
    "InvalidCommand",
    "Pause",
    "Resume",
    "Resync",
    "UnknownCommand",
    "Verify",
    "WireError",
    "decode_answer",
    "decode_command",
    "decode_detail",
    "decode_log",
    "decode_message",
    "decode_messages",
    "decode_row",
    "decode_rows",
    "decode_snapshot",
    "decode_workers",
    "encode_answer",
    "encode_batch",
    "encode_command",
    "encode_detail",
    "encode_log",
    "encode_message",
    "encode_row",
    "encode_rows",
    "encode_snapshot",
    "encode_update",
    "encode_workers",
]

WIRE_VERSION = 2  # 2: batches on the update stream
# The console's own engine (`serve --console-child`) prints this, then its API's address, as its first
# line on stdout: the one thing its parent reads from it before it talks to the API.
CHILD_READY = "geo-tui-engine-ready"
# Version 2 grew compatibly since: a field with a default (a row's verification_depth, deep_verified_at and
# recheck_blobs) may be absent, as from an older engine, and reads as its default; the verify command
# takes a "depth" and its answer names the depth it ran; resync takes "blobs".
T = TypeVar("T")
Json = dict[str, Any]
RowKey = tuple[str, str]  # (site, repository)


class WireError(Exception):
    """A message the console cannot understand (another version, or not what an engine sends)."""


# -- encoding ---------------------------------------------------------------------------------------


def _plain(obj: object) -> Json:
    """A flat dataclass as a JSON object (enums are str subclasses and encode as their value)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}  # type: ignore[arg-type]


def encode_row(row: RepositoryRow) -> Json:
    return _plain(row)


_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(RepositoryRow))
_ROW_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(RepositoryRow) if f.default is not dataclasses.MISSING
}


def encode_rows(rows: list[RepositoryRow]) -> Json:
    """A page of rows as a table (column names once, then one array per row): half the bytes of objects."""
    return {"columns": list(_ROW_FIELDS), "values": [[getattr(r, n) for n in _ROW_FIELDS] for r in rows]}


def decode_rows(data: object) -> list[RepositoryRow]:
    """Rows from `encode_rows`; columns a newer engine adds are ignored, a missing one is a WireError."""
    if not isinstance(data, dict) or not isinstance(data.get("columns"), list):
        raise WireError("rows: expected an object with columns and values")
    columns, values = data["columns"], data.get("values")
    if not isinstance(values, list):
        raise WireError("rows: values must be a list")
    missing = sorted(set(_ROW_FIELDS) - set(columns) - set(_ROW_DEFAULTS))
    if missing:
        raise WireError(f"rows: missing columns {missing}")
    # -1: a column an older engine does not send, read as its default
    where = [columns.index(name) if name in columns else -1 for name in _ROW_FIELDS]
    defaults = [_ROW_DEFAULTS.get(name) for name in _ROW_FIELDS]
    try:
        # _from_sql takes the values in field order and restores the enums and the bools.
        return [
            RepositoryRow._from_sql([v[i] if i >= 0 else d for i, d in zip(where, defaults, strict=True)])
            for v in values
        ]
    except (TypeError, ValueError, IndexError) as exc:
        raise WireError(f"rows: {exc}") from None


def encode_log(record: LogRecord) -> Json:
    return _plain(record)


def _encode_site(site: SiteSnapshot) -> Json:
    data = _plain(site)
    data["health"] = _plain(site.health) if site.health is not None else None
    data["counts"] = _plain(site.counts) if site.counts is not None else None
    data["throughput_history"] = list(site.throughput_history)
    return data


def encode_snapshot(snapshot: EngineSnapshot) -> Json:
    return {
        "sites": [_encode_site(s) for s in snapshot.sites],
        "running": snapshot.running,
        "paused": snapshot.paused,
        "in_flight": snapshot.in_flight,
        "tasks_down": list(snapshot.tasks_down),
    }


def encode_detail(detail: RepositoryDetail) -> Json:
    return {
        "repository": detail.repository,
        "sites": [_plain(s) for s in detail.sites],
        "rows": [encode_row(r) for r in detail.rows],
        "history": [encode_log(r) for r in detail.history],
    }


def encode_update(update: Update) -> Json:
    """A typed engine update as a stream message."""
    if isinstance(update, RepositoryUpdated):
        return {"v": WIRE_VERSION, "type": "row", "row": encode_row(update.row)}
    if isinstance(update, LogLine):
        return {"v": WIRE_VERSION, "type": "log", "record": encode_log(update.record)}
    if isinstance(update, BytesCopied):
        return {"v": WIRE_VERSION, "type": "bytes", **_plain(update)}
    if isinstance(update, SiteHealth):
        return {"v": WIRE_VERSION, "type": "health", **_plain(update)}
    if isinstance(update, Reload):  # the stream's own "reload": the console reads everything again
        return {"v": WIRE_VERSION, "type": "reload", "reason": update.reason}
    return {"v": WIRE_VERSION, "type": "status", **_plain(update)}


def encode_message(kind: str, **body: Any) -> str:
    """Any other stream message (``hello``, ``snapshot``, ``reload``) as text."""
    return json.dumps({"v": WIRE_VERSION, "type": kind, **body})


def encode_batch(texts: list[str]) -> str:
    """Several encoded stream messages as one (each is already JSON text: nothing is encoded twice)."""
    if len(texts) == 1:
        return texts[0]
    return f'{{"v": {WIRE_VERSION}, "type": "batch", "messages": [{",".join(texts)}]}}'


# -- decoding ---------------------------------------------------------------------------------------


def _build(cls: type[T], data: object, convert: Mapping[str, Callable[[Any], Any]] | None = None) -> T:
    if not isinstance(data, dict):
        raise WireError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            if f.default is not dataclasses.MISSING:
                continue  # a field added since (an older engine does not send it): its default
            raise WireError(f"{cls.__name__}: missing {f.name!r}")
        value = data[f.name]
        if convert and f.name in convert and value is not None:
            try:
                value = convert[f.name](value)
            except (TypeError, ValueError, KeyError) as exc:
                raise WireError(f"{cls.__name__}.{f.name}: {exc}") from None
        values[f.name] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise WireError(f"{cls.__name__}: {exc}") from None


def decode_row(data: object) -> RepositoryRow:
    return _build(
        RepositoryRow,
        data,
        {"state": SyncState, "verification_state": VerificationState, "on_primary": bool},
    )


def decode_log(data: object) -> LogRecord:
    return _build(LogRecord, data)


def _decode_site(data: object) -> SiteSnapshot:
    return _build(
        SiteSnapshot,
        data,
        {
            "health": lambda h: _build(SiteHealth, h),
            "counts": lambda c: _build(SiteCounts, c),
            "throughput_history": lambda h: tuple(float(x) for x in h),
        },
    )


def decode_snapshot(data: object) -> EngineSnapshot:
    return _build(
        EngineSnapshot,
        data,
        {
            "sites": lambda sites: tuple(_decode_site(s) for s in sites),
            "tasks_down": lambda names: tuple(str(n) for n in names),
        },
    )


def decode_detail(data: object) -> RepositoryDetail:
    return _build(
        RepositoryDetail,
        data,
        {
            "sites": lambda sites: tuple(_build(SiteTags, s) for s in sites),
            "rows": lambda rows: tuple(decode_row(r) for r in rows),
            "history": lambda logs: tuple(decode_log(r) for r in logs),
        },
    )


_UPDATES: dict[str, Callable[[Json], Update]] = {
    "row": lambda m: RepositoryUpdated(decode_row(m.get("row"))),
    "log": lambda m: LogLine(decode_log(m.get("record"))),
    "bytes": lambda m: _build(BytesCopied, m),
    "health": lambda m: _build(SiteHealth, m),
    "status": lambda m: _build(EngineStatus, m),
}


def decode_message(text: str | bytes) -> tuple[str, Update | Json]:
    """A stream message: ``(type, Update)`` for engine updates, ``(type, body)`` for the others."""
    return _decode_one(_loads(text))


def decode_messages(text: str | bytes) -> list[tuple[str, Update | Json]]:
    """A stream frame, a batch or a single message, as its messages in order."""
    message = _loads(text)
    if isinstance(message, dict) and message.get("type") == "batch" and message.get("v") == WIRE_VERSION:
        inner = message.get("messages")
        if not isinstance(inner, list):
            raise WireError("a batch without a list of messages")
        return [_decode_one(m) for m in inner]
    return [_decode_one(message)]


def _loads(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"not JSON: {exc}") from None


def _decode_one(message: Any) -> tuple[str, Update | Json]:
    if not isinstance(message, dict):
        raise WireError("a message must be a JSON object")
    version = message.get("v")
    if version != WIRE_VERSION:
        raise WireError(f"the engine speaks wire version {version!r}; this console speaks {WIRE_VERSION}")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise WireError("a message without a type")
    decode = _UPDATES.get(kind)
    return (kind, decode(message)) if decode is not None else (kind, message)


# -- workers ----------------------------------------------------------------------------------------


def encode_workers(view: WorkersView) -> Json:
    """The workers (model.py builds them from their rows), in JSON's own types (the redactor walks those)."""
    workers = [{**_plain(w), "listen": list(w.listen), "repositories": [list(k) for k in w.repositories]}
               for w in view.workers]  # fmt: skip
    return {"v": WIRE_VERSION, "stale_after": view.stale_after, "workers": workers}


_WORKER_FIELDS: dict[str, Callable[[Any], Any]] = {
    "listen": lambda addresses: tuple(str(a) for a in addresses),
    "throughput": float,
    "repositories": lambda keys: tuple((str(k[0]), str(k[1])) for k in keys),
}


def _worker(data: object) -> WorkerInfo:
    info = _build(WorkerInfo, data, _WORKER_FIELDS)
    if not isinstance(info.stale, bool) or not isinstance(info.in_flight, int):
        raise WireError("WorkerInfo: stale must be true or false, in_flight a whole number")
    return info


def decode_workers(data: object) -> WorkersView:
    """A `WorkersView` from `encode_workers`; another wire version is a WireError."""
    if not isinstance(data, dict) or data.get("v") != WIRE_VERSION:
        version = data.get("v") if isinstance(data, dict) else None
        raise WireError(f"the engine speaks wire version {version!r}; this console speaks {WIRE_VERSION}")
    return _build(WorkersView, data, {"workers": lambda workers: tuple(_worker(w) for w in workers)})


# -- commands ---------------------------------------------------------------------------------------


class InvalidCommand(WireError):
    """A command with a field of the wrong type or range, a field it does not take, or a site or
    repository the engine does not have: ``str(e)`` names the field."""


class UnknownCommand(WireError):
    """A command name no engine of this version knows."""


@dataclass(frozen=True)
class Command:
    """What a console or the CLI asks an engine to do; ``name`` is its path under ``commands/``."""

    name: ClassVar[str]


@dataclass(frozen=True)
class Resync(Command):
    """Copy again: the given rows, else every row (of ``sites``), or only the failed ones; ``blobs`` looks
    below tags whose digests match (a blob lost from the secondary's storage)."""

    name: ClassVar[str] = "resync"
    keys: tuple[RowKey, ...] | None = None
    failed: bool = False
    sites: tuple[str, ...] | None = None
    blobs: bool = False


@dataclass(frozen=True)
class Verify(Command):
    """Verify the given rows, else every row (of ``sites``), or only the failed ones, at ``depth``;
    ``sample`` is the share of blobs a content verification re-hashes."""

    name: ClassVar[str] = "verify"
    keys: tuple[RowKey, ...] | None = None
    failed: bool = False
    sites: tuple[str, ...] | None = None
    depth: VerificationDepth = VerificationDepth.CHECKSUM
    sample: float = 1.0


@dataclass(frozen=True)
class Pause(Command):
    """Start no new copies (those in flight finish)."""

    name: ClassVar[str] = "pause"


@dataclass(frozen=True)
class Resume(Command):
    """Start copying again."""

    name: ClassVar[str] = "resume"


COMMANDS: dict[str, type[Command]] = {c.name: c for c in (Resync, Verify, Pause, Resume)}


@dataclass(frozen=True)
class CommandAnswer:
    """An engine's answer to a command: whether it went well, one line to show, and what it counted.
    ``depth`` is the verification depth a verify ran (an engine from before depths names none)."""

    ok: bool
    message: str
    count: int | None = None
    depth: str | None = None


def encode_command(command: Command) -> tuple[str, Json]:
    """The command's name and body; fields at their defaults are left out."""
    body: Json = {}
    for f in dataclasses.fields(command):
        value = getattr(command, f.name)
        if value == f.default:
            continue
        if f.name == "keys":
            value = [list(key) for key in value]
        elif isinstance(value, tuple):
            value = list(value)
        body[f.name] = value
    return command.name, body


def decode_command(name: str, body: Json, *, secondaries: Sequence[str]) -> Command:
    """The command ``name`` with ``body``, checked against the engine's ``secondaries``."""
    cls = COMMANDS.get(name)
    if cls is None:
        raise UnknownCommand(f"no command {name!r}")
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(body) - set(fields))
    if unknown:  # a typo must not widen what a command does
        takes = f"takes only {', '.join(fields)}" if fields else "takes no fields"
        raise InvalidCommand(f"{unknown[0]}: unknown field; this command {takes}")
    return cls(**{n: _COMMAND_FIELDS[n](body[n], secondaries) for n in fields if n in body})


def _keys(raw: object, secondaries: Sequence[str]) -> tuple[RowKey, ...] | None:
    if raw is None:
        return None
    pairs = "keys: must be a list of [site, repository] pairs"
    if not isinstance(raw, list):
        raise InvalidCommand(pairs)
    keys: list[RowKey] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise InvalidCommand(pairs)
        if item[0] not in secondaries:
            raise InvalidCommand(f"keys: no secondary named {item[0]!r}")
        keys.append((item[0], item[1]))
    return tuple(keys)


def _sites(raw: object, secondaries: Sequence[str]) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(s, str) and s in secondaries for s in raw):
        raise InvalidCommand(f"sites: a list of secondaries ({', '.join(secondaries)})")
    return tuple(raw)


def _flag(name: str) -> Callable[[object, Sequence[str]], bool]:
    def check(raw: object, secondaries: Sequence[str]) -> bool:
        if not isinstance(raw, bool):  # {"failed": 1} must not read as "not only the failed": everything
            raise InvalidCommand(f"{name}: must be true or false")
        return raw

    return check


def _depth(raw: object, secondaries: Sequence[str]) -> VerificationDepth:
    try:
        return VerificationDepth(raw)  # type: ignore[arg-type]  # anything JSON: refused below unless a depth
    except ValueError:
        raise InvalidCommand(f"depth: one of {', '.join(VerificationDepth)}") from None


def _sample(raw: object, secondaries: Sequence[str]) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= 1:
        raise InvalidCommand("sample: a number above 0 and at most 1")
    return float(raw)


_COMMAND_FIELDS: dict[str, Callable[[object, Sequence[str]], Any]] = {
    "keys": _keys,
    "failed": _flag("failed"),
    "sites": _sites,
    "blobs": _flag("blobs"),
    "depth": _depth,
    "sample": _sample,
}


def encode_answer(answer: CommandAnswer) -> Json:
    """The answer, without the fields it does not carry (a resync names no depth)."""
    return {k: v for k, v in _plain(answer).items() if v is not None}


def decode_answer(data: object) -> CommandAnswer:
    answer = _build(CommandAnswer, data)
    if not isinstance(answer.ok, bool) or not isinstance(answer.message, str):
        raise WireError("CommandAnswer: ok must be true or false, message a string")
    return answer
