"""The tracking database: states, generations, retries, crash recovery, blob locations."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from geo_tui.engine import SyncState, Tracking, VerificationState
from geo_tui.engine.tracking import SiteCounts
from geo_tui.engine.tracking.postgres import PostgresDatabase
from tests.support.postgres import BACKENDS


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=BACKENDS)
def tracking_backend(request: pytest.FixtureRequest) -> str:
    """Every test of `db` (or `tracking_target`) runs on SQLite and on a real PostgreSQL."""
    return str(request.param)


@pytest.fixture
def db(tracking_target: Path | PostgresDatabase, clock: Clock) -> Iterator[Tracking]:
    tracking = Tracking(tracking_target, clock=clock)
    yield tracking
    tracking.close()


def test_real_file_in_wal_mode(tmp_path: Path) -> None:
    db = Tracking(tmp_path / "state" / "tracking.db")
    assert isinstance(db.path, Path) and db.path.exists()
    assert db.journal_mode == "wal"
    with sqlite3.connect(db.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_a_read_only_reader_sees_the_engine_writes_and_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "odd dir #1" / "tracking.db"  # a path that needs quoting in a URI
    writer = Tracking(path)
    writer.ensure_rows("eu", ["a/one", "a/two"])
    reader = Tracking(path, read_only=True)
    try:
        assert [r.repository for r in reader.rows()] == ["a/one", "a/two"]
        writer.ensure_rows("eu", ["a/three"])  # the engine goes on writing while the console reads
        assert len(reader.rows()) == 3
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.ensure_rows("eu", ["a/four"])
    finally:
        reader.close()
        writer.close()
    with pytest.raises(sqlite3.OperationalError):
        Tracking(tmp_path / "missing" / "tracking.db", read_only=True)
    assert not (tmp_path / "missing").exists(), "a reader never creates a database"


def test_new_rows_are_pending_and_due(db: Tracking, clock: Clock) -> None:
    assert db.ensure_rows("eu", ["a/x", "b/y"]) == 2
    assert db.ensure_rows("eu", ["a/x"]) == 0
    due = db.due(clock.now)
    assert [(r.site, r.repository, r.state) for r in due] == [
        ("eu", "a/x", SyncState.PENDING),
        ("eu", "b/y", SyncState.PENDING),
    ]


def test_synced_only_if_no_new_work_arrived(db: Tracking) -> None:
    db.ensure_rows("eu", ["app"])
    generation = db.mark_started("eu", "app")
    assert db.mark_synced("eu", "app", generation, tag_count=3, size=10) is True
    row = db.row("eu", "app")
    assert row is not None and row.state is SyncState.SYNCED and row.tag_count == 3

    generation = db.mark_started("eu", "app")
    db.request_sync(repositories=["app"])  # an event arrives during the run
    assert db.mark_synced("eu", "app", generation, tag_count=3, size=None) is False
    row = db.row("eu", "app")
    assert row is not None and row.state is SyncState.PENDING


def test_the_periodic_reconcile_does_not_invalidate_a_run_in_progress(db: Tracking) -> None:
    db.ensure_rows("eu", ["long", "idle"])
    generation = db.mark_started("eu", "long")  # a run longer than the reconcile interval
    other = db.mark_started("eu", "idle")
    db.mark_synced("eu", "idle", other, tag_count=1, size=1)
    assert db.request_reconcile(sites=["eu"]) == 1  # the synced row is queued again; the running one is not
    assert db.mark_synced("eu", "long", generation, tag_count=2000, size=10) is True
    long, idle = db.row("eu", "long"), db.row("eu", "idle")
    assert long is not None and long.state is SyncState.SYNCED
    assert idle is not None and idle.state is SyncState.PENDING


def test_failed_rows_wait_for_their_retry_time(db: Tracking, clock: Clock) -> None:
    db.ensure_rows("eu", ["app"])
    db.mark_started("eu", "app")
    assert db.mark_failed("eu", "app", "primary: 500", clock.now + 60) == 1
    assert db.due(clock.now) == []
    assert db.next_retry_at() == clock.now + 60
    clock.now += 61
    (row,) = db.due(clock.now)
    assert row.state is SyncState.FAILED and row.retry_count == 1 and row.last_sync_failure == "primary: 500"


def test_a_push_during_a_failed_run_makes_the_row_due_at_once(db: Tracking, clock: Clock) -> None:
    db.ensure_rows("eu", ["pushed", "quiet"])
    pushed, quiet = db.mark_started("eu", "pushed"), db.mark_started("eu", "quiet")
    db.request_sync(sites=["eu"], repositories=["pushed"], event_at=clock.now)  # a push while it runs
    db.mark_failed("eu", "pushed", "eu: 503", clock.now + 3600, pushed)
    db.mark_failed("eu", "quiet", "eu: 503", clock.now + 3600, quiet)
    (row,) = db.due(clock.now)  # the failed run did not see the push: it is not made to wait an hour
    assert row.repository == "pushed" and row.state is SyncState.FAILED
    assert row.retry_count == 1 and row.last_sync_failure == "eu: 503"
    assert db.next_retry_at() == clock.now  # "quiet" waits for its backoff


def test_started_rows_left_by_a_crash_are_picked_up(
    tracking_target: Path | PostgresDatabase, clock: Clock
) -> None:
    path = tracking_target
    first = Tracking(path, clock=clock)
    first.ensure_rows("eu", ["app"])
    first.mark_started("eu", "app")
    first.close()  # the process "dies" with the row in started
    second = Tracking(path, clock=clock)
    assert second.recover_started() == 1
    (row,) = second.due(clock.now)
    assert row.state is SyncState.PENDING
    second.close()


def test_resync_failed_only(db: Tracking, clock: Clock) -> None:
    db.ensure_rows("eu", ["ok", "bad"])
    db.mark_synced("eu", "ok", db.mark_started("eu", "ok"), tag_count=1, size=None)
    db.mark_started("eu", "bad")
    db.mark_failed("eu", "bad", "boom", clock.now + 3600)
    assert db.request_sync(failed_only=True) == 1
    assert [r.repository for r in db.due(clock.now)] == ["bad"]


def test_counts_and_percent(db: Tracking) -> None:
    db.ensure_rows("eu", [f"r{i}" for i in range(3)])
    db.mark_synced("eu", "r0", db.mark_started("eu", "r0"), tag_count=1, size=5)
    db.mark_started("eu", "r1")
    db.mark_failed("eu", "r1", "x", None)
    counts = db.counts(["eu", "us"])
    assert counts["eu"].total == 3 and counts["eu"].synced == 1 and counts["eu"].failed == 1
    assert counts["eu"].percent_synced == 33.33
    assert counts["us"].total == 0 and counts["us"].percent_synced == 100.0


def test_verification_state(db: Tracking) -> None:
    db.ensure_rows("eu", ["app"])
    db.mark_verification("eu", "app", VerificationState.FAILED, checksum="abc", failure="missing: v1")
    row = db.row("eu", "app")
    assert row is not None
    assert row.verification_state is VerificationState.FAILED
    assert row.verification_failure == "missing: v1" and row.verified_at is not None


def test_blob_locations_for_mounts(db: Tracking) -> None:
    db.add_blob_locations("eu", "base", ["sha256:aa", "sha256:bb"])
    assert db.blob_sources("eu", "sha256:aa", exclude="app") == ["base"]
    assert db.blob_sources("eu", "sha256:aa", exclude="base") == []
    assert db.blob_sources("us", "sha256:aa", exclude="app") == []
    db.forget_blob_location("eu", "sha256:aa", "base")
    assert db.blob_sources("eu", "sha256:aa", exclude="app") == []


def test_absent_repositories_are_flagged_not_forgotten(db: Tracking, clock: Clock) -> None:
    db.ensure_rows("eu", ["keep", "gone"])
    assert db.mark_absent_from_primary("eu", {"keep"}) == ["gone"]
    assert [r.repository for r in db.due(clock.now)] == ["keep"]
    assert db.row("eu", "gone") is not None
    assert db.counts(["eu"])["eu"].total == 1


def test_event_log_is_bounded(db: Tracking, monkeypatch: pytest.MonkeyPatch) -> None:
    import geo_tui.engine.tracking.records as tracking_module

    monkeypatch.setattr(tracking_module, "EVENT_LOG_LIMIT", 100)
    for i in range(1000):
        db.log("info", f"line {i}")
    recent = db.recent_log(limit=5000)
    assert len(recent) <= 600
    assert recent[-1].message == "line 999"


def test_percent_synced_never_shows_100_with_one_missing() -> None:
    def percent(synced: int, total: int) -> float:
        return SiteCounts("s", total, total - synced, 0, synced, 0, 0, 0, 0, 0, None).percent_synced

    assert percent(99_999, 100_000) == 99.99
    assert percent(2, 3) == 66.66
    assert percent(57, 100) == 57.0
    assert percent(0, 0) == 100.0


def test_the_database_and_its_sidecars_are_owner_only(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual umask, which would give 0644
    try:
        tracking = Tracking(tmp_path / "state" / "tracking.db")
        tracking.log("info", "a line, so that the write-ahead log and its shared memory exist")
        files = [tmp_path / "state" / name for name in ("tracking.db", "tracking.db-wal", "tracking.db-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: f.stat().st_mode & 0o777 for f in files} == {f.name: 0o600 for f in files}
        tracking.close()

        # A database an older geo-tui left readable (and its sidecars) is narrowed when opened.
        for f in files:
            if f.exists():
                os.chmod(f, 0o644)
        Tracking(files[0]).close()
        assert all(f.stat().st_mode & 0o777 == 0o600 for f in files if f.exists())
    finally:
        os.umask(old_umask)


def test_free_text_is_redacted_before_it_is_stored(tmp_path: Path) -> None:
    secret = "hunter2-but-longer"
    tracking = Tracking(tmp_path / "t.db", redact=lambda text: text.replace(secret, "[redacted]"))
    tracking.ensure_rows("eu", ["app"])
    tracking.mark_failed("eu", "app", f"eu: 500: echo {secret}", None)
    tracking.mark_verification("eu", "app", VerificationState.FAILED, failure=f"echo {secret}")
    tracking.log("error", f"failed: {secret}", site="eu", repository="app")
    row = tracking.row("eu", "app")
    assert row is not None and row.last_sync_failure == "eu: 500: echo [redacted]"
    assert row.verification_failure == "echo [redacted]"
    assert [r.message for r in tracking.recent_log()] == ["failed: [redacted]"]
    tracking.close()
    assert secret.encode() not in (tmp_path / "t.db").read_bytes()


def test_texts_stored_before_redaction_are_redacted_when_reopened(
    tracking_target: Path | PostgresDatabase,
) -> None:
    secret = "hunter2-but-longer"
    old = Tracking(tracking_target)  # a geo-tui from before redaction: stores what it is given
    old.ensure_rows("eu", ["app", "web"])
    old.mark_failed("eu", "app", f"eu: 500: echo {secret}", None)
    old.mark_failed("eu", "web", "eu: 500: nothing secret", None)
    old.log("error", f"failed: {secret}", site="eu", repository="app")
    old.close()
    tracking = Tracking(tracking_target, redact=lambda text: text.replace(secret, "[redacted]"))
    assert tracking.redact_stored() == 2
    assert tracking.redact_stored() == 0  # nothing left to change
    row, other = tracking.row("eu", "app"), tracking.row("eu", "web")
    assert row is not None and row.last_sync_failure == "eu: 500: echo [redacted]"
    assert other is not None and other.last_sync_failure == "eu: 500: nothing secret"
    assert [r.message for r in tracking.recent_log()] == ["failed: [redacted]"]
    tracking.close()
