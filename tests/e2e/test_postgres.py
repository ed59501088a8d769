"""`geo-tui serve` on a PostgreSQL tracking database that crashes and restarts under it."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from geo_tui.config import load_config
from geo_tui.engine.tracking.transfer import TABLES
from tests.e2e.test_serve import SECRET, assert_log_clean, db_query, notification, post, wait_replicated
from tests.e2e.test_sync import run_cli, sync_json
from tests.support.distribution import Distribution, free_port
from tests.support.geo import write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.postgres import PostgresCluster
from tests.support.push import RawPusher
from tests.support.served import Served, wait_until


def test_postgres_crashing_under_serve_loses_no_acknowledged_event(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    own_cluster: PostgresCluster,
) -> None:
    primary, eu = registry_factory("primary"), registry_factory("eu")
    repository = "restart/app"
    first, second = oci_image("pg-restart-1"), oci_image("pg-restart-2")
    port = free_port()
    config = write_geo_config(
        tmp_path / "geo",
        primary,
        [eu],
        key_pair,
        engine={"reconcile_interval": 3600, "database": own_cluster.url(own_cluster.database())},
        notifications={"listen": f"127.0.0.1:{port}", "secret": SECRET},
    )
    with RawPusher.for_registry(primary) as pusher:
        pusher.push_tree(repository, first, "v1")
    served = Served(config, port, tmp_path / "serve.log").start()
    acknowledged: list[str] = []
    try:
        with RawPusher.for_registry(eu) as eu_pusher:
            wait_replicated([eu_pusher], repository, {"v1": first.digest})

        def send(tag: str) -> httpx.Response:
            event_id = f"pg-{tag}-{uuid.uuid4()}"
            response = post(served, {"events": [notification(repository, tag=tag, event_id=event_id)]})
            if response.status_code == 200:
                acknowledged.append(event_id)
            return response

        assert send("v1").status_code == 200
        own_cluster.stop("immediate")  # a crash: the next start replays the WAL
        outage = time.monotonic()
        during: list[httpx.Response] = []
        sender = threading.Thread(target=lambda: during.append(send("v1")))
        sender.start()  # an event while the database is down: held until it is back (or refused)
        time.sleep(2.0)
        own_cluster.start()
        sender.join(30)
        assert during and during[0].status_code in (200, 503), during
        with RawPusher.for_registry(primary) as pusher:
            pusher.push_tree(repository, second, "v2")
        assert send("v2").status_code == 200
        with RawPusher.for_registry(eu) as eu_pusher:
            wait_replicated([eu_pusher], repository, {"v1": first.digest, "v2": second.digest}, timeout=60)
        print(f"replicated a push made after the restart {time.monotonic() - outage:.1f} s after the crash")
        wait_until(
            lambda: httpx.get(served.url + "/-/health", timeout=2).status_code == 200,
            what="healthy again",
        )
        stored = {
            str(event_id)
            for (event_id,) in db_query(
                config.parent, "SELECT event_id FROM notifications WHERE event_id LIKE 'pg-%'"
            )
        }
        assert set(acknowledged) <= stored, f"acknowledged but lost: {set(acknowledged) - stored}"
        assert len(acknowledged) >= 2
        assert served.stop(signal.SIGTERM) == 0
    finally:
        served.stop(signal.SIGKILL)
    assert_log_clean(tmp_path / "serve.log")


# -- geo-tui migrate --to postgresql://... --------------------------------------------------------------


def _sqlite_tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}


def _postgres_tables(url: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(url) as db:
        return {t: sorted((tuple(r) for r in db.execute(f"SELECT * FROM {t}")), key=repr) for t in TABLES}


def test_migrate_moves_every_row_of_a_real_sync_and_refuses_a_second(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    config_for: Callable[..., Path],
    postgres_cluster: PostgresCluster,
    capsys: pytest.CaptureFixture[str],
    local_files: Path,
) -> None:
    for name in ("one", "two", "three"):
        primary_pusher.push_tree(f"moved/{name}", oci_image(f"migrate-{name}"), "v1")
    config = config_for(primary, secondary)
    code, summary = sync_json(capsys, config)
    assert code == 0 and summary["sites"]["secondary"]["synced"] == 3, summary
    sqlite_file = load_config(config).engine.database
    before = _sqlite_tables(sqlite_file)
    assert before["repositories"] and before["event_log"] and before["blob_locations"] and before["tags_seen"]

    url = postgres_cluster.url(postgres_cluster.database())
    code, out, err = run_cli(capsys, "--config", str(config), "migrate", "--to", url)
    assert code == 0, err
    assert f"repositories: {len(before['repositories'])} rows" in out and url in out
    after = _postgres_tables(url)
    for table in TABLES:
        if table == "meta":
            continue
        assert after[table] == before[table], f"{table} differs after the move"
    assert {k for k, _ in before["meta"]} == {k for k, _ in after["meta"]}

    # a second migrate into the now non-empty database: one line, nothing changed
    code, out, err = run_cli(capsys, "--config", str(config), "migrate", "--to", url)
    assert code != 0 and "is not empty" in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert _postgres_tables(url) == after

    # the engine goes on from the moved state: nothing to copy again, and new rows get new ids
    on_postgres = config.with_name("postgres.toml")
    on_postgres.write_text(config.read_text().replace(f'database = "{sqlite_file}"', f'database = "{url}"'))
    os.chmod(on_postgres, 0o600)
    code, summary = sync_json(capsys, on_postgres)
    assert code == 0 and summary["sites"]["secondary"]["synced"] == 3, summary
    moved_ids = {row[0] for row in before["event_log"]}
    new_ids = {row[0] for row in _postgres_tables(url)["event_log"]} - moved_ids
    assert new_ids and min(new_ids) > max(moved_ids)  # type: ignore[operator]
