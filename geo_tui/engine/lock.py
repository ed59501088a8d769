"""One engine per tracking database: an exclusive claim on ``<database>.lock``.

The claim is a ``flock`` on the lock file, so the kernel drops it when the holder dies, even after
``kill -9``. The holder writes a small JSON record into the file (pid, host, command, where its API
listens) so that whoever is refused can say who holds the database and how to attach to it.

On PostgreSQL many workers share one database (issue 16): `SharedClaim` holds nothing, and each worker
registers its own row instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from geo_tui.config.model import EngineConfig

if TYPE_CHECKING:
    from .tracking.postgres import PostgresDatabase

__all__ = [
    "DatabaseClaim",
    "DatabaseInUse",
    "Holder",
    "SharedClaim",
    "claim_for",
    "lock_path",
    "read_holder",
]

MAX_RECORD = 64 * 1024
# A reader probing the lock holds it for a moment; a claim retries this long before it refuses.
CLAIM_PATIENCE = 0.3


def lock_path(database: Path) -> Path:
    """The lock file of a tracking database."""
    return database.with_name(database.name + ".lock")


@dataclass(frozen=True)
class Holder:
    """Who holds a tracking database, as the holder itself wrote it."""

    pid: int
    hostname: str
    command: str
    started_at: float
    listen: tuple[str, ...] = ()
    api: str | None = None  # an http:// URL or a unix socket path to attach to

    def describe(self, database: Path | str) -> str:
        """The one-line refusal: who holds ``database``, where it listens, and how to attach."""
        where = f" listening on {', '.join(self.listen)}" if self.listen else ""
        who = f" (pid {self.pid} on {self.hostname})" if self.pid else ""
        text = f"tracking database {database} is in use by {self.command}{who}{where}"
        if self.api:
            return f"{text}; attach with `geo-tui --attach {self.api}`"
        return f"{text}; it offers no API to attach to: stop it first"


# Held, but the record is not (yet) written or unreadable.
UNKNOWN_HOLDER = Holder(0, "?", "another geo-tui process", 0.0)


class DatabaseInUse(Exception):
    """Another process holds the tracking database. ``str(e)`` is the one-line refusal."""

    def __init__(self, database: Path | str, holder: Holder) -> None:
        self.database = database
        self.holder = holder
        super().__init__(holder.describe(database))


class DatabaseClaim:
    """The exclusive claim on one tracking database, held from `acquire` until `release` (or death)."""

    def __init__(self, database: Path, command: str) -> None:
        self.database = Path(database)
        self.path = lock_path(self.database)
        self.command = command
        self._fd: int | None = None
        self._holder: Holder | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def holder(self) -> Holder | None:
        return self._holder

    def acquire(self) -> None:
        """Take the claim or raise DatabaseInUse naming the holder."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # 0644: the record holds no secret, and other users' consoles may read where to attach.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + CLAIM_PATIENCE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() > deadline:
                    holder = _parse(_read_fd(fd))
                    os.close(fd)
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    raise DatabaseInUse(self.database, holder or UNKNOWN_HOLDER) from None
                time.sleep(0.02)
        self._fd = fd
        self._holder = Holder(os.getpid(), socket.gethostname(), self.command, time.time())
        self._write()

    def advertise(self, *, listen: tuple[str, ...] = (), api: str | None = None) -> None:
        """Record where this holder listens and where consoles attach."""
        if self._holder is None:
            return
        self._holder = Holder(
            self._holder.pid, self._holder.hostname, self.command, self._holder.started_at, listen, api
        )
        self._write()

    def release(self) -> None:
        """Give the claim up (the record is emptied so it never names a process gone)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing drops the flock

    def _write(self) -> None:
        assert self._fd is not None and self._holder is not None
        data = json.dumps(asdict(self._holder)).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)


class SharedClaim(DatabaseClaim):
    """A PostgreSQL tracking database is shared by many workers (issue 16): no engine holds it whole.
    Each worker has its row in the database instead (`tracking.claims`), and the duties that must run
    once per cluster go to the holder of a session advisory lock (`engine.leadership.Leadership`)."""

    def __init__(self, local: Path, target: PostgresDatabase, command: str) -> None:
        super().__init__(local, command)
        self.target = target
        self._taken = False

    @property
    def held(self) -> bool:
        return self._taken

    def acquire(self) -> None:
        self._taken = True

    def advertise(self, *, listen: tuple[str, ...] = (), api: str | None = None) -> None:
        """Nothing to record: each worker's row says where it listens."""

    def release(self) -> None:
        self._taken = False


def claim_for(engine: EngineConfig, command: str) -> DatabaseClaim:
    """The claim an engine takes on the tracking database of ``[engine]``."""
    if engine.database_url is None:
        return DatabaseClaim(engine.database, command)
    from .tracking import tracking_database
    from .tracking.postgres import PostgresDatabase

    target = tracking_database(engine)
    assert isinstance(target, PostgresDatabase)
    return SharedClaim(engine.database, target, command)


def read_holder(database: Path) -> Holder | None:
    """The live holder of ``database``, or None when nobody holds it (a stale record is ignored)."""
    path = lock_path(Path(database))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            # A shared lock succeeds only when nobody holds the exclusive claim.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return _parse(_read_fd(fd)) or UNKNOWN_HOLDER
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_fd(fd: int) -> bytes:
    try:
        return os.pread(fd, MAX_RECORD, 0)
    except OSError:
        return b""


def _parse(data: bytes) -> Holder | None:
    """The holder record, or None if it is empty or not what a holder writes (never raises)."""
    try:
        raw = json.loads(data)
        listen = raw.get("listen") or []
        api = raw.get("api")
        return Holder(
            pid=int(raw["pid"]),
            hostname=str(raw["hostname"]),
            command=str(raw["command"]),
            started_at=float(raw["started_at"]),
            listen=tuple(str(item) for item in listen),
            api=str(api) if api else None,
        )
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
