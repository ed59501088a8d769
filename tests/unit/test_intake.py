"""The notification intake (engine/intake.py) on both tracking backends: concurrent requests are stored
in fewer commits than requests, each gets what it queued, every one is in the database before its
answer, and a database that refuses makes each waiting request fail (a 503), never succeed."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import psycopg
import pytest

from geo_tui.config import load_config
from geo_tui.engine import Engine, Tracking
from geo_tui.engine.database import DatabaseBusy
from geo_tui.engine.notifications import RegistryEvent, parse_envelope
from geo_tui.engine.tracking.postgres import PostgresDatabase
from tests.support.postgres import BACKENDS, database_option, query_tracking

REQUESTS = 24


@pytest.fixture(params=BACKENDS)
def tracking_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _config(directory: Path, target: Path | PostgresDatabase) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    database = database_option(target).get("database", str(target))
    path = directory / "config.toml"
    path.write_text(
        f'[engine]\ndatabase = "{database}"\n'
        '[primary]\nname = "primary"\nregistry = "http://127.0.0.1:9"\nauth = "none"\n'
        '[[secondaries]]\nname = "eu"\nregistry = "http://127.0.0.1:10"\nauth = "none"\n'
    )
    os.chmod(path, 0o600)
    return path


def _events(i: int) -> list[RegistryEvent]:
    target = {
        "repository": f"intake/app{i % 5}",
        "tag": f"v{i}",
        "digest": "sha256:" + f"{i:064x}",
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
    }
    pushed = {"id": f"intake-{i}", "action": "push", "target": target}
    deleted = {"id": f"intake-del-{i}", "action": "delete", "target": {"repository": f"intake/gone{i}"}}
    return parse_envelope(json.dumps({"events": [pushed, deleted]}).encode())


def test_concurrent_requests_share_commits_and_each_is_stored_before_its_answer(
    tmp_path: Path, tracking_target: Path | PostgresDatabase
) -> None:
    config_path = _config(tmp_path / "geo", tracking_target)

    async def run() -> tuple[list[int], int]:
        async with Engine(load_config(config_path)) as engine:
            queued = await asyncio.gather(*(engine.accept_notifications(_events(i)) for i in range(REQUESTS)))
            return list(queued), engine.intake.commits

    queued, commits = asyncio.run(run())
    print(f"{REQUESTS} concurrent requests stored in {commits} commits")
    assert queued == [2] * REQUESTS  # each request: its push, and its deletion's whole-repository run
    assert 1 <= commits < REQUESTS, commits  # the first alone, the rest together
    stored = query_tracking(config_path, "SELECT COUNT(*) FROM notifications WHERE event_id LIKE 'intake-%'")
    assert stored == [(2 * REQUESTS,)]
    tags = {t for (t,) in query_tracking(config_path, "SELECT tag FROM push_queue")}
    assert tags == {f"v{i}" for i in range(REQUESTS)}


def test_a_database_that_refuses_fails_every_waiting_request(tmp_path: Path) -> None:
    config_path = _config(tmp_path / "geo", tmp_path / "state" / "tracking.db")

    async def run() -> list[BaseException | int]:
        async with Engine(load_config(config_path)) as engine:

            def refuse(*_args: object, **_kwargs: object) -> list[int]:
                raise DatabaseBusy("the tracking database took no write")

            engine.tracking.record_notification_batches = refuse  # type: ignore[method-assign]
            return list(
                await asyncio.gather(
                    *(engine.accept_notifications(_events(i)) for i in range(5)), return_exceptions=True
                )
            )

    outcomes = asyncio.run(run())
    assert all(isinstance(o, DatabaseBusy) for o in outcomes), outcomes


def test_tracking_commits_are_synchronous_whatever_the_server_default(
    postgres_database: PostgresDatabase,
) -> None:
    """A notification answered 200 after its commit must survive a crash of the server too: the tracking
    connections turn synchronous_commit back on where a DBA turned it off for the database."""
    name = postgres_database.url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_database.url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} SET synchronous_commit = off")
        assert admin.execute("SHOW synchronous_commit").fetchone() == ("on",)  # set before it connected
    with psycopg.connect(postgres_database.url, autocommit=True) as other:
        assert other.execute("SHOW synchronous_commit").fetchone() == ("off",)
    tracking = Tracking(postgres_database)
    try:
        with tracking._tx() as db:
            assert db.execute("SHOW synchronous_commit").fetchone()[0] == "on"
    finally:
        tracking.close()
