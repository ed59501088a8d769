"""A throwaway PostgreSQL cluster for the tests (Debian's `postgresql`), and a fresh database per test.

The cluster is started once per session with `initdb` and `pg_ctl` in a temporary directory, listening
on a free 127.0.0.1 port (and a unix socket in that directory); each test gets its own database, made
from an empty template (``CREATE DATABASE ... TEMPLATE``, a file copy). As root (CI), the cluster runs
as the ``postgres`` user, since PostgreSQL refuses root. Without the binaries a test is skipped locally
and fails in CI (CI=true), like the registries' (see binaries.py).

Connections as ``geo`` are trusted; the role ``geo_pw`` must give its password (scram-sha-256), for the
tests of ``[engine] database_password_file``.

    def test_x(tracking_target): ...      # a Path (SQLite) or a PostgresDatabase, by `tracking_backend`
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
import pytest

from geo_tui.config import load_config
from geo_tui.engine.tracking.postgres import PostgresDatabase

__all__ = [
    "BACKENDS",
    "PASSWORD_ROLE",
    "PostgresCluster",
    "database_option",
    "find_postgres_binary",
    "query_tracking",
]

PASSWORD_ROLE = "geo_pw"
BACKENDS = ("sqlite", "postgresql")
_live: set[PostgresCluster] = set()


@atexit.register
def _stop_leftovers() -> None:
    for cluster in list(_live):
        cluster.stop()


def find_postgres_binary(name: str) -> str:
    """`initdb`, `pg_ctl`, ... from /usr/lib/postgresql/<version>/bin (the newest), or PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version)
    path = found[-1] if found else shutil.which(name)
    if path:
        return path
    message = (
        f"`{name}` of PostgreSQL is not in /usr/lib/postgresql/*/bin nor on PATH. Install it with "
        "`apt-get install -y postgresql` (.ci/run does this on a fresh machine)."
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _version(path: str) -> tuple[int, ...]:
    part = Path(path).parent.parent.name
    return tuple(int(p) for p in part.split(".") if p.isdigit())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """One PostgreSQL server in a temporary directory; `database()` makes a fresh, empty database."""

    def __init__(self) -> None:
        self.initdb = find_postgres_binary("initdb")
        self.pg_ctl = find_postgres_binary("pg_ctl")
        self.directory = Path(tempfile.mkdtemp(prefix="geo-tui-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "log"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self._names = itertools.count(1)
        self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "geo", "--no-sync")
        # Password logins for PASSWORD_ROLE come first; everyone else is trusted, as initdb wrote.
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
            f"local all {PASSWORD_ROLE} scram-sha-256\n" + hba.read_text()
        )
        self.start()
        _live.add(self)
        with self.admin() as db:
            db.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN CREATEDB")
            db.execute("CREATE DATABASE geo_template")

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast``, or ``immediate`` for a crash (the next start replays the WAL)."""
        if self.data.exists():
            subprocess.run(
                [
                    *(["runuser", "-u", "postgres", "--"] if self._as_postgres else []),
                    self.pg_ctl,
                    "-D",
                    str(self.data),
                    "-m",
                    mode,
                    "-w",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
            )

    def server_processes(self) -> list[int]:
        """The postmaster and every process it forked (backends, checkpointer, WAL writer, ...)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True)
        return [postmaster, *(int(pid) for pid in children.stdout.split())]

    @contextmanager
    def frozen(self) -> Iterator[list[int]]:
        """Every process of the server stopped (SIGSTOP) while inside: a server that answers nothing and
        drops nothing, as a storage stall or a suspended VM. Always continued (SIGCONT) on the way out."""
        pids = self.server_processes()
        stopped: list[int] = []
        try:
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
            yield stopped
        finally:
            for pid in stopped:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def remove(self) -> None:
        self.stop()
        _live.discard(self)
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str, user: str = "geo") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def admin(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(database), autocommit=True)

    def database(self, *, owner: str = "geo") -> str:
        """A new empty database's name (owned by `owner`)."""
        name = f"geo_{os.getpid()}_{next(self._names)}"
        with self.admin() as db:
            db.execute(f"CREATE DATABASE {name} TEMPLATE geo_template OWNER {owner}")
        return name


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def local_files(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An engine on PostgreSQL keeps this host's lock record and API socket in the user data dir: a
    test's go in a short temporary directory (a unix socket path has ~107 bytes at most), as
    XDG_DATA_HOME, which platformdirs reads, also in the processes the test starts."""
    directory = Path(tempfile.mkdtemp(prefix="geo-xdg-"))
    monkeypatch.setenv("XDG_DATA_HOME", str(directory))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def own_cluster(local_files: Path) -> Iterator[PostgresCluster]:
    """A cluster of the test's own, which it may stop, restart or freeze without touching the session's."""
    cluster = PostgresCluster()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def postgres_database(postgres_cluster: PostgresCluster, local_files: Path) -> PostgresDatabase:
    """A fresh, empty database of the session's cluster, as the tracking store opens it."""
    return PostgresDatabase(postgres_cluster.url(postgres_cluster.database()))


@pytest.fixture
def tracking_backend() -> str:
    """The tracking database's backend: SQLite unless a module parametrizes it (see BACKENDS)."""
    return "sqlite"


@pytest.fixture
def tracking_target(
    tracking_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Path | PostgresDatabase:
    """Where the tracking database of a test is: a file under tmp_path, or a fresh PostgreSQL database."""
    if tracking_backend == "postgresql":
        database: PostgresDatabase = request.getfixturevalue("postgres_database")
        return database
    return tmp_path / "state" / "tracking.db"


def database_option(target: Path | PostgresDatabase) -> dict[str, str]:
    """The ``[engine]`` keys that point a test's config at `target` (none for SQLite: the default file)."""
    return {"database": target.url} if isinstance(target, PostgresDatabase) else {}


def query_tracking(config: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the tracking database of the config file at `config` from outside the engine (``?``
    placeholders): the SQLite file read-only, or the PostgreSQL database."""
    engine = load_config(config).engine
    if engine.database_url is None:
        with sqlite3.connect(f"file:{engine.database}?mode=ro", uri=True, timeout=10) as db:
            return list(db.execute(sql, params).fetchall())
    with psycopg.connect(engine.database_url, autocommit=True) as pg:
        query = sql.replace("%", "%%").replace("?", "%s")
        return [tuple(row) for row in pg.execute(query, params).fetchall()]
