"""The workers read (issue 16): the workers' rows as `workers_view` builds them on both tracking backends,
their wire encoding, migration 4's throughput, and `geo-tui status`'s workers table."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geo_tui.cli import main
from geo_tui.engine import Tracking
from geo_tui.engine.model import WorkerInfo, WorkersView, workers_view
from geo_tui.engine.tracking import MIGRATIONS, WorkerRow, schema
from geo_tui.engine.tracking.postgres import PostgresDatabase
from geo_tui.engine.wire import WIRE_VERSION, WireError, decode_workers, encode_workers
from geo_tui.figures import age
from tests.support.postgres import BACKENDS

NOW = 1_800_000_000.0
STALE_AFTER = 60.0  # the default lease: a worker is stale after a lease without a heartbeat
ME, OTHER, DEAD = "geo-a/4242/1799990000.000", "geo-b/77/1799990001.000", "geo-c/9/1799000000.000"


@pytest.fixture(params=BACKENDS)
def tracking_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(tracking_target: Path | PostgresDatabase) -> Iterator[Tracking]:
    tracking = Tracking(tracking_target, clock=lambda: NOW)
    yield tracking
    tracking.close()


def register_three(db: Tracking, now: float = NOW) -> None:
    """As of `now`: two live workers (one copying two repositories under leases) and one whose heartbeat
    stopped 185 s ago."""
    db.ensure_rows("eu", ["shop/api", "shop/web", "ops/tools"])
    db.register_worker(ME, now - 100, "127.0.0.1:5001, /run/geo-a.sock")
    db.register_worker(OTHER, now - 100, "10.0.0.2:5001")
    db.register_worker(DEAD, now - 900)
    claimed = db.claim_due(ME, now - 2, limit=2, lease_seconds=60)
    assert len(claimed) == 2
    assert db.worker_heartbeat(ME, now - 2, 2, throughput=3.5 * 1024 * 1024)
    assert db.worker_heartbeat(OTHER, now - 1, 0)  # says nothing of its throughput: unknown
    assert db.worker_heartbeat(DEAD, now - 185, 1, throughput=1000.0)


def test_workers_view_of_real_rows_and_leases(db: Tracking) -> None:
    register_three(db)
    view = workers_view(db.workers(), db.leased(), db.now(), STALE_AFTER)
    by_id = {w.id: w for w in view.workers}
    assert set(by_id) == {ME, OTHER, DEAD} and view.stale_after == STALE_AFTER
    me = by_id[ME]
    assert (me.host, me.pid, me.heartbeat_age, me.stale, me.state) == ("geo-a", 4242, 2.0, False, "live")
    assert me.listen == ("127.0.0.1:5001", "/run/geo-a.sock")
    assert me.in_flight == 2 and me.throughput == 3.5 * 1024 * 1024
    assert sorted(me.repositories) == sorted((r.site, r.repository) for r in db.rows(limit=2))
    assert len(me.repositories) == 2
    other = by_id[OTHER]
    assert other.throughput is None and other.repositories == () and not other.stale
    dead = by_id[DEAD]
    assert (dead.host, dead.pid, dead.heartbeat_age, dead.stale) == ("geo-c", 9, 185.0, True)
    assert dead.state == "stale: no heartbeat for 3 min" and dead.throughput == 1000.0


def test_a_later_heartbeat_without_throughput_keeps_the_last_one(db: Tracking) -> None:
    db.register_worker(ME, NOW)
    db.worker_heartbeat(ME, NOW, 1, throughput=500.0)
    db.worker_heartbeat(ME, NOW + 5, 0)
    db.worker_heartbeat(ME, NOW + 6, 0, throughput=-3.0)  # a clock step: never a negative rate
    assert db.workers() == [WorkerRow(ME, NOW, NOW + 6, "", 0, 0.0)]


def test_migration_4_gives_version_3_workers_an_unknown_throughput(tmp_path: Path) -> None:
    path = tmp_path / "tracking.db"
    raw = sqlite3.connect(path)
    assert schema.migrate(raw, path, MIGRATIONS[:3]) == (0, 3)
    raw.execute(
        "INSERT INTO workers (id, started_at, heartbeat_at, listen, working) VALUES (?, 1, 2, '', 3)", (ME,)
    )
    raw.commit()
    raw.close()
    tracking = Tracking(path)
    try:
        assert tracking.schema_version == MIGRATIONS[-1].version >= 4
        assert tracking.workers() == [WorkerRow(ME, 1.0, 2.0, "", 3, None)]
    finally:
        tracking.close()


# -- the wire ---------------------------------------------------------------------------------------

VIEW = WorkersView(
    (
        WorkerInfo(ME, "geo-a", 4242, NOW - 100, 2.0, ("127.0.0.1:5001",), 2, 1024.0, False, (("eu", "x"),)),
        WorkerInfo(DEAD, "geo-c", 9, NOW - 900, 185.0, (), 0, None, True),
    ),
    30.0,
)


def test_the_workers_round_trip_through_json() -> None:
    document = json.loads(json.dumps(encode_workers(VIEW)))
    assert document["v"] == WIRE_VERSION
    assert document["workers"][0]["repositories"] == [["eu", "x"]]
    assert decode_workers(document) == VIEW


def test_a_newer_engines_fields_are_ignored_and_an_older_ones_repositories_default() -> None:
    document = encode_workers(VIEW)
    document["workers"][0]["cpu"] = 0.5
    del document["workers"][1]["repositories"]
    assert decode_workers(document) == VIEW


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda d: d.update(v=WIRE_VERSION + 1), "wire version"),
        (lambda d: d.pop("v"), "wire version"),
        (lambda d: d["workers"][0].pop("heartbeat_age"), "missing 'heartbeat_age'"),
        (lambda d: d["workers"][0].update(stale="no"), "stale must be true or false"),
        (lambda d: d["workers"][0].update(listen=5), "listen"),
        (lambda d: d["workers"][0].update(throughput="fast"), "throughput"),
        (lambda d: d.update(workers=7), "workers"),
    ],
)
def test_what_a_console_cannot_read_is_a_wire_error_naming_it(change: object, complaint: str) -> None:
    document = json.loads(json.dumps(encode_workers(VIEW)))
    change(document)  # type: ignore[operator]
    with pytest.raises(WireError, match=complaint):
        decode_workers(document)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_decoding_anything_raises_only_wire_errors(data: object) -> None:
    for document in (data, {"v": WIRE_VERSION, "stale_after": 1.0, "workers": data}):
        try:
            decode_workers(document)
        except WireError:
            pass


def test_a_worker_id_without_a_pid_reads_pid_0() -> None:
    view = workers_view([WorkerRow("odd-id", 0.0, NOW, "", 0)], [], NOW, 30.0)
    assert (view.workers[0].host, view.workers[0].pid) == ("odd-id", 0)


def test_age_in_words() -> None:
    assert [age(s) for s in (0.0, 0.99, 1.0, 42.9, 60.0, 185.0, 7200.0, 3 * 86400.0)] == [
        "under 1 s",
        "under 1 s",
        "1 s",
        "42 s",
        "1 min",
        "3 min",
        "2 h",
        "3 d",
    ]


# -- geo-tui status ----------------------------------------------------------------------------------


def status_config(tmp_path: Path, target: Path | PostgresDatabase) -> Path:
    database = target.url if isinstance(target, PostgresDatabase) else str(target)
    path = tmp_path / "geo.toml"
    path.write_text(
        f'[engine]\ndatabase = "{database}"\nlease_seconds = 45\n'  # stale after one lease: 45 s
        '[primary]\nname = "primary"\nregistry = "http://127.0.0.1:9"\nauth = "none"\n'
        '[[secondaries]]\nname = "eu"\nregistry = "http://127.0.0.1:10"\nauth = "none"\n'
    )
    os.chmod(path, 0o600)
    return path


def test_status_prints_the_workers_table(
    tracking_target: Path | PostgresDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tracking = Tracking(tracking_target)
    register_three(tracking, time.time())  # status reads the ages by the real clock
    with tracking._tx() as db:  # geo-b leads: its row names its leadership session (leadership.stamp)
        db.execute("UPDATE workers SET leader_pid = 4321 WHERE id = ?", (OTHER,))
    tracking.close()
    config = status_config(tmp_path, tracking_target)
    assert main(["--config", str(config), "status"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    start = lines.index("workers (stale after 45 s without a heartbeat):")
    assert lines[start + 1].split() == ["HOST", "PID", "HEARTBEAT", "IN", "FLIGHT", "THROUGHPUT", "STATE"]
    table = {line.split()[0]: line for line in lines[start + 2 : start + 5]}
    assert set(table) == {"geo-a", "geo-b", "geo-c"}
    # host, pid, heartbeat age (2 s, or a little more on a busy machine), in flight, throughput, state
    assert re.fullmatch(r"\s+geo-a\s+4242\s+\d+ s ago\s+2\s+3\.5 MiB/s\s+live", table["geo-a"])
    assert table["geo-b"].split()[-3:] == ["-", "live,", "leader"]  # its heartbeat never said its throughput
    assert table["geo-c"].split()[1:4] == ["9", "3", "min"]
    assert table["geo-c"].endswith("STALE: NO HEARTBEAT FOR 3 MIN")
    assert main(["--config", str(config), "status", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    workers = {w["host"]: w for w in document["workers"]}
    assert workers["geo-a"]["in_flight"] == 2 and len(workers["geo-a"]["repositories"]) == 2
    assert workers["geo-c"]["state"] == "stale"
    assert {host: w["leader"] for host, w in workers.items()} == {
        "geo-a": False,
        "geo-b": True,
        "geo-c": False,
    }


def test_status_says_nothing_of_workers_when_none_registered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "tracking.db"
    tracking = Tracking(target)
    tracking.ensure_rows("eu", ["shop/api"])
    tracking.close()
    config = status_config(tmp_path, target)
    assert main(["--config", str(config), "status"]) == 0
    out = capsys.readouterr().out
    assert "worker" not in out.lower() and "eu" in out
    assert main(["--config", str(config), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["workers"] == []
