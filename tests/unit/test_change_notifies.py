"""Migration 7's change notifies on a real PostgreSQL server (issue 16): every statement that changes
repositories rows names them (in payloads under NOTIFY's 8000-byte limit), a lease renewal alone
names nothing, a statement over the limit says "many", a stored log line names its id, and the pause
is stored for every engine and announced."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import psycopg
import pytest

from geo_tui.engine import Tracking
from geo_tui.engine.cluster_view import read_change
from geo_tui.engine.listen import WakeListener
from geo_tui.engine.tracking import PauseState
from geo_tui.engine.tracking.postgres import CHANGE_CHANNEL, CHANGED_KEYS_LIMIT, PostgresDatabase


@pytest.fixture
def tracking_backend() -> str:
    return "postgresql"


@pytest.fixture
def listening(tracking_target: PostgresDatabase) -> Iterator[tuple[Tracking, psycopg.Connection[object]]]:
    tracking = Tracking(tracking_target)
    listener: psycopg.Connection[object] = psycopg.connect(tracking_target.url, autocommit=True)
    listener.execute(f"LISTEN {CHANGE_CHANNEL}")
    try:
        yield tracking, listener
    finally:
        listener.close()
        tracking.close()


def heard(listener: psycopg.Connection[object]) -> list[tuple[str, str, int]]:
    """(kind, body, sender pid) of every notify that arrived."""
    found = []
    for notify in listener.notifies(timeout=0.5):
        kind, sent, body = read_change(notify.payload)
        assert sent is not None and abs(sent - time.time()) < 60
        assert len(notify.payload.encode()) < 8000
        found.append((kind, body, notify.pid))
    return found


def keys(notifies: list[tuple[str, str, int]]) -> list[tuple[str, str]]:
    return [(s, r) for kind, body, _ in notifies if kind == "rows" for s, r in json.loads(body)]


def test_changed_rows_are_named_and_renewals_are_not(
    listening: tuple[Tracking, psycopg.Connection[object]],
) -> None:
    tracking, listener = listening
    tracking.ensure_rows("eu", ["team/a", "team/b"])
    found = heard(listener)
    assert sorted(keys(found)) == [("eu", "team/a"), ("eu", "team/b")]
    assert {pid for _, _, pid in found} == {tracking.writer_pid}  # the writer's own, to skip
    tracking.ensure_rows("eu", ["team/a", "team/b"])  # tracked already: nothing changes
    assert heard(listener) == []
    claimed = tracking.claim_due("w1", time.time(), limit=1, lease_seconds=60)
    assert keys(heard(listener)) == [claimed[0].key]
    assert tracking.renew_leases("w1", time.time(), 60, [claimed[0].key]) == {claimed[0].key}
    assert heard(listener) == []  # the lease's columns alone: nobody's news
    tracking.mark_synced(*claimed[0].key, claimed[0].generation, tag_count=1, size=10, owner="w1")
    assert keys(heard(listener)) == [claimed[0].key]


def test_a_statement_of_many_rows_is_named_in_chunks_and_above_the_limit_is_many(
    listening: tuple[Tracking, psycopg.Connection[object]],
) -> None:
    tracking, listener = listening
    names = [f"group-{i:04d}/" + "long-repository-name-" * 3 for i in range(400)]
    tracking.ensure_rows("eu", names)
    heard(listener)
    assert tracking.request_sync(sites=["eu"]) == 400  # one statement, ~27,000 bytes of keys
    found = heard(listener)
    assert len(found) >= 4 and {kind for kind, _, _ in found} == {"rows"}
    assert sorted(keys(found)) == [("eu", n) for n in sorted(names)]
    tracking.ensure_rows("us", [f"r/{i}" for i in range(CHANGED_KEYS_LIMIT + 1)])
    heard(listener)
    assert tracking.request_sync(sites=["us"]) == CHANGED_KEYS_LIMIT + 1
    assert [kind for kind, _, _ in heard(listener)] == ["many"]


def test_a_stored_log_line_and_the_pause_are_announced(
    listening: tuple[Tracking, psycopg.Connection[object]], tracking_target: PostgresDatabase
) -> None:
    tracking, listener = listening
    record = tracking.log_record("warning", "replication paused", worker="geo-a/12/1.000")
    tracking.store_log(record)
    assert [(kind, body) for kind, body, _ in heard(listener)] == [("log", str(record.id))]
    assert tracking.log_records([record.id, 999]) == [record]
    assert tracking.pause_state() == PauseState(False)
    tracking.set_pause(PauseState(True, "geo-a/12/1.000", 5.0))
    assert [kind for kind, _, _ in heard(listener)] == ["pause"]
    other = Tracking(tracking_target)  # another worker reads the same pause
    try:
        assert other.pause_state() == PauseState(True, "geo-a/12/1.000", 5.0)
        assert other.rows_of([("eu", "none")]) == []
    finally:
        other.close()


def test_the_listener_hands_on_changes_with_their_sender_and_a_resync_after_a_lost_connection(
    tracking_target: PostgresDatabase,
) -> None:
    tracking = Tracking(tracking_target)

    async def run() -> None:
        changes: asyncio.Queue[tuple[str, int | None]] = asyncio.Queue()
        listener = WakeListener(
            tracking_target,
            asyncio.get_running_loop(),
            lambda work, sent: None,
            lambda reason: None,
            on_change=lambda payload, pid: changes.put_nowait((payload, pid)),
        )
        listener.start()
        try:
            assert await asyncio.wait_for(changes.get(), 10) == ("resync", None)  # listening: look anyway
            tracking.ensure_rows("eu", ["team/app"])
            payload, pid = await asyncio.wait_for(changes.get(), 10)
            assert read_change(payload)[0::2] == ("rows", '[["eu", "team/app"]]')
            assert pid == tracking.writer_pid
            with psycopg.connect(tracking_target.url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'geo-tui listener'"
                )
            # what changed while nobody listened is unknown: the watchers must read everything again
            assert await asyncio.wait_for(changes.get(), 10) == ("resync", None)
        finally:
            await asyncio.to_thread(listener.stop)

    try:
        asyncio.run(run())
    finally:
        tracking.close()
