"""The deep verification schedule and what the tracking database keeps of each verification's depth."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from geo_tui.config import ConfigError, load_config
from geo_tui.engine import RepositoryRow, SyncState, Tracking, VerificationState
from geo_tui.engine.deep import sampled
from geo_tui.engine.tracking import deep_offset
from geo_tui.engine.wire import WireError, decode_row, decode_rows, encode_row, encode_rows
from tests.unit.test_tracking import Clock

WEEK = 7 * 86400.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path, clock: Clock) -> Iterator[Tracking]:
    tracking = Tracking(tmp_path / "tracking.db", clock=clock)
    yield tracking
    tracking.close()


def synced(db: Tracking, site: str, names: list[str]) -> None:
    db.ensure_rows(site, names)
    for name in names:
        db.mark_synced(site, name, db.mark_started(site, name), tag_count=1, size=1)


def test_first_deep_checks_spread_evenly_over_the_interval(db: Tracking, clock: Clock) -> None:
    """10,000 repositories synced at once are not all due at once: about a tenth per tenth of the week."""
    names = [f"group/app-{i}" for i in range(10_000)]
    synced(db, "eu", names)
    for _ in range(10):  # 1,000 rows are given their slot per call; none is due yet
        assert db.deep_due(clock.now, WEEK, limit=10_000) == []
    due_per_tenth = []
    for tenth in range(1, 11):
        clock.now = 1_000_000.0 + WEEK * tenth / 10
        rows = db.deep_due(clock.now, WEEK, limit=10_000)
        due_per_tenth.append(len(rows))
        for row in rows:  # each one checked now: its next check is a week on
            db.mark_verification(
                "eu", row.repository, VerificationState.SUCCEEDED, depth="deep", next_deep_at=clock.now + WEEK
            )
    assert sum(due_per_tenth) == 10_000
    assert all(900 <= n <= 1100 for n in due_per_tenth), due_per_tenth


def test_deep_due_caps_each_round_and_skips_rows_not_synced(db: Tracking, clock: Clock) -> None:
    synced(db, "eu", ["a", "b", "c", "d"])
    db.ensure_rows("eu", ["pending/one"])
    clock.now += WEEK + 1
    db.deep_due(clock.now, WEEK)  # plans the slots
    clock.now += WEEK + 1
    assert len(db.deep_due(clock.now, WEEK, limit=2)) == 2
    assert "pending/one" not in {r.repository for r in db.deep_due(clock.now, WEEK, limit=100)}


def test_deep_offset_is_a_function_of_the_name() -> None:
    assert deep_offset("eu", "a/b", WEEK) == deep_offset("eu", "a/b", WEEK)
    assert deep_offset("eu", "a/b", WEEK) != deep_offset("us", "a/b", WEEK)
    assert 0 <= deep_offset("eu", "a/b", WEEK) < WEEK


def test_each_verification_records_its_depth_and_time(db: Tracking, clock: Clock) -> None:
    synced(db, "eu", ["a"])
    db.mark_verification("eu", "a", VerificationState.SUCCEEDED, depth="deep", next_deep_at=clock.now + 10)
    row = db.row("eu", "a")
    assert row is not None
    assert (row.verification_depth, row.verified_at, row.deep_verified_at) == ("deep", clock.now, clock.now)
    deep_at = clock.now
    clock.now += 60
    db.mark_verification("eu", "a", VerificationState.STARTED)
    db.mark_verification("eu", "a", VerificationState.SUCCEEDED, depth="checksum")
    row = db.row("eu", "a")
    assert row is not None
    # the latest verification was a checksum; the last deep one is still known
    assert (row.verification_depth, row.verified_at, row.deep_verified_at) == ("checksum", clock.now, deep_at)


def test_a_blob_recheck_is_asked_until_a_sync_succeeds(db: Tracking) -> None:
    synced(db, "eu", ["a", "b"])
    db.request_sync(sites=["eu"], repositories=["a"], recheck_blobs=True)
    db.request_sync(sites=["eu"], repositories=["a"])  # a later event does not clear it
    row = db.row("eu", "a")
    assert row is not None and row.recheck_blobs and row.state is SyncState.PENDING
    other = db.row("eu", "b")
    assert other is not None and not other.recheck_blobs
    db.mark_synced("eu", "a", db.mark_started("eu", "a"), tag_count=1, size=1)
    row = db.row("eu", "a")
    assert row is not None and not row.recheck_blobs


def test_a_database_from_before_depths_gains_the_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE repositories (site TEXT NOT NULL, repository TEXT NOT NULL, "
            "state TEXT NOT NULL DEFAULT 'pending', generation INTEGER NOT NULL DEFAULT 1, "
            "retry_count INTEGER NOT NULL DEFAULT 0, retry_at REAL, started_at REAL, last_synced_at REAL, "
            "last_sync_failure TEXT, tag_count INTEGER, bytes INTEGER, "
            "verification_state TEXT NOT NULL DEFAULT 'pending', verification_checksum TEXT, "
            "verified_at REAL, verification_failure TEXT, on_primary INTEGER NOT NULL DEFAULT 1, "
            "oldest_unsynced_event_at REAL, "
            "PRIMARY KEY (site, repository)) WITHOUT ROWID"
        )
        old.execute(
            "INSERT INTO repositories (site, repository, state, verification_state, verified_at) "
            "VALUES ('eu', 'a', 'synced', 'succeeded', 5.0)"
        )
    tracking = Tracking(path)
    try:
        row = tracking.row("eu", "a")
        assert row is not None
        assert (row.state, row.verification_state, row.verified_at) == (
            SyncState.SYNCED,
            VerificationState.SUCCEEDED,
            5.0,
        )
        assert (row.verification_depth, row.deep_verified_at, row.recheck_blobs) == (None, None, False)
    finally:
        tracking.close()


def test_sampled_is_reproducible_and_near_its_fraction() -> None:
    digests = [f"sha256:{hashlib.sha256(str(i).encode()).hexdigest()}" for i in range(4000)]
    chosen = [d for d in digests if sampled(d, 0.25)]
    assert chosen == [d for d in digests if sampled(d, 0.25)]
    assert 0.2 < len(chosen) / len(digests) < 0.3
    assert all(sampled(d, 1.0) for d in digests)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, WEEK), (0, 0.0), (3600, 3600.0), (86400.5, 86400.5)],
)
def test_deep_interval_is_read_from_the_verification_table(
    tmp_path: Path, value: float | None, expected: float
) -> None:
    config = load_config(write_config(tmp_path, value))
    assert config.verification.deep_interval == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (30, "verification.deep_interval: must be 0 (off) or at least 60 seconds, got 30"),
        (-1, "verification.deep_interval: must be between 0 and"),
        ('"7d"', "verification.deep_interval: must be a number, got string"),
    ],
)
def test_a_bad_deep_interval_is_named(tmp_path: Path, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, value))
    assert message in str(caught.value)


def write_config(tmp_path: Path, deep_interval: object) -> Path:
    path = tmp_path / "config.toml"
    text = (
        '[primary]\nname = "main"\nregistry = "http://127.0.0.1:5000"\nauth = "none"\n\n'
        '[[secondaries]]\nname = "eu"\nregistry = "http://127.0.0.1:5001"\nauth = "none"\n'
    )
    if deep_interval is not None:
        text += f"\n[verification]\ndeep_interval = {deep_interval}\n"
    path.write_text(text)
    return path


def test_rows_from_an_engine_before_depths_read_with_the_defaults() -> None:
    """Wire version 2 grew compatibly: a row (or a page of rows) without the depth columns still reads."""
    row = RepositoryRow(
        "eu", "a", SyncState.SYNCED, 1, 0, None, None, 5.0, None, 1, 10, VerificationState.SUCCEEDED,
        "sha256:ab", 6.0, None, True, None, "deep", 6.0, True,
    )  # fmt: skip
    page = json.loads(json.dumps(encode_rows([row])))
    assert decode_rows(page) == [row]
    old_columns = page["columns"][:-3]
    old = {"columns": old_columns, "values": [v[:-3] for v in page["values"]]}
    (decoded,) = decode_rows(old)
    assert (decoded.verification_depth, decoded.deep_verified_at, decoded.recheck_blobs) == (
        None,
        None,
        False,
    )
    assert decoded.verified_at == 6.0
    single = {k: v for k, v in json.loads(json.dumps(encode_row(row))).items() if k in old_columns}
    assert decode_row(single).verification_depth is None
    with pytest.raises(WireError, match="missing"):
        decode_row({k: v for k, v in single.items() if k != "verified_at"})
