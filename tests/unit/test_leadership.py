"""The leadership of the singleton duties (issue 16) taken over from a frozen leader, on a real
PostgreSQL server, engine by engine (no registry; the engines are opened, not started, and share a
clock): the takeover decision (fresh, stale or unknown holder), the keepalives of the leadership
session, and the fence that stops a leader taken over from before its next duty write."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from geo_tui.engine import Engine
from geo_tui.engine.leadership import NotLeader, takeover
from geo_tui.engine.tracking import SyncState
from geo_tui.engine.tracking.leadership import ENGINE_LOCK, KEEPALIVE, LeaderFence, LockHolder
from geo_tui.engine.tracking.postgres import PostgresDatabase
from geo_tui.engine.updates import LogLine, Update
from tests.support.postgres import PostgresCluster
from tests.unit.test_workers import LEASE, Clock, config_for, run

NOW = 1_700_000_000.0


# -- the decision, pure ---------------------------------------------------------------------------------


def test_a_holder_whose_heartbeat_is_fresh_is_left_alone() -> None:
    holder = LockHolder(4242, "geo-tui leader", "host/1/1.000", NOW - LEASE + 0.5)
    assert takeover(holder, NOW, LEASE).take is False
    assert takeover(holder, NOW, LEASE).reason == ""  # slow but alive is nobody's news
    at_the_lease = LockHolder(4242, "geo-tui leader", "host/1/1.000", NOW - LEASE)
    assert takeover(at_the_lease, NOW, LEASE).take is False


def test_a_holder_whose_heartbeat_is_older_than_the_lease_is_taken_over_from() -> None:
    holder = LockHolder(4242, "geo-tui leader", "host/1/1.000", NOW - 47.2)
    decision = takeover(holder, NOW, LEASE)
    assert decision.take is True
    assert decision.reason == "its heartbeat is 47 s old, longer than the lease (30 s)"


def test_a_holder_no_worker_names_is_waited_for_and_said_so() -> None:
    holder = LockHolder(4242, "psql", None, None)
    decision = takeover(holder, NOW, LEASE)
    assert decision.take is False
    assert "server process 4242 (psql)" in decision.reason and "no worker's row names" in decision.reason
    assert takeover(None, NOW, LEASE).take is False  # the lock is free: the next try takes it


# -- on a real server -----------------------------------------------------------------------------------


def lines(engine: Engine) -> list[str]:
    found: list[str] = []

    def keep(update: Update) -> None:
        if isinstance(update, LogLine):
            found.append(update.record.message)

    engine.subscribe(keep)
    return found


def stamped(engine: Engine) -> dict[str, int | None]:
    rows = engine.tracking._query("SELECT id, leader_pid FROM workers")
    return {str(r[0]): (int(r[1]) if r[1] is not None else None) for r in rows}


def test_a_fresh_leader_keeps_the_lead_and_a_stale_one_is_taken_over_from(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        said_a, said_b = lines(a), lines(b)
        await a.leadership._try()
        assert a.leadership.leads
        fence = await a.leadership.confirm("discovery")
        assert fence is not None and stamped(a)[a.leases.owner or ""] == fence.session_pid

        clock.now += LEASE - 1  # A has not beaten for most of a lease: slow, perhaps, but alive
        await b.leadership._try()
        assert not b.leadership.leads and a.leadership.leads
        assert await a.leadership.confirm("discovery") == fence  # its session was left alone
        assert not [line for line in said_b if "leadership" in line]

        clock.now += 2  # A's heartbeat is now older than the lease: A is taken for frozen
        await b.leadership._try()
        assert b.leadership.leads
        took = [line for line in said_b if line.startswith("took the leadership over")]
        assert took == [
            f"took the leadership over from worker {a.leases.owner}: its heartbeat is 31 s old, longer "
            f"than the lease (30 s); its session (server process {fence.session_pid}) was ended"
        ]
        b_fence = await b.leadership.confirm("discovery")
        assert b_fence is not None
        assert stamped(b) == {a.leases.owner: None, b.leases.owner: b_fence.session_pid}

        # A thaws: before its next duty round it finds its session ended, and leads no more.
        with pytest.raises(NotLeader):
            await a.leadership.confirm("discovery")
        assert not a.leadership.leads
        lost = [line for line in said_a if line.startswith("lost the leadership")]
        assert len(lost) == 1 and "discovery does not run" in lost[0], said_a
        # A duty write already under way with A's fence is refused, and writes nothing.
        with pytest.raises(NotLeader):
            await a._db(a.tracking.ensure_rows, "eu", ["team/late"], fence=fence)
        assert a.tracking.row("eu", "team/late") is None
        # B's fenced writes go in.
        assert await b._db(b.tracking.ensure_rows, "eu", ["team/new"], fence=b_fence) == 1
        assert await b.leases.tick()  # B beats: its row is fresh
        await a.leadership._try()  # A contends again, and waits
        assert not a.leadership.leads and b.leadership.leads

    run(tmp_path, postgres_database.url, body)


def test_a_lock_held_by_a_session_no_worker_names_is_waited_for(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    stranger = psycopg.connect(postgres_database.url, autocommit=True, application_name="an operator")
    try:
        stranger.execute("SELECT pg_advisory_lock(%s)", (ENGINE_LOCK,))
        pid = stranger.info.backend_pid

        async def body(a: Engine, b: Engine, clock: Clock) -> None:
            said = lines(b)
            clock.now += 10 * LEASE
            for _ in range(3):
                await b.leadership._try()
            assert not b.leadership.leads
            waiting = [line for line in said if "no worker's row names" in line]
            assert waiting == [  # once, not every try
                f"the leadership lock is held by server process {pid} (an operator), which no worker's "
                "row names: waiting for it to end"
            ]
            assert stranger.execute("SELECT 1").fetchone() == (1,)  # never ended
            stranger.execute("SELECT pg_advisory_unlock(%s)", (ENGINE_LOCK,))
            await b.leadership._try()
            assert b.leadership.leads

        run(tmp_path, postgres_database.url, body)
    finally:
        stranger.close()


def test_a_write_of_the_old_leader_in_flight_commits_before_the_new_leader_leads(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    """A duty write that passed its fence holds the old leader's row until it commits: the takeover's
    stamp waits for it, so the write lands before the new leader's first duty, never after."""

    @contextmanager
    def write_held(engine: Engine, fence: LeaderFence, seconds: float) -> Iterator[threading.Event]:
        inside = threading.Event()

        def hold() -> None:
            with engine.tracking._tx(fence) as db:
                db.execute("UPDATE repositories SET state = 'failed' WHERE repository = ?", ("team/app-0",))
                inside.set()
                time.sleep(seconds)

        thread = threading.Thread(target=hold)
        thread.start()
        try:
            yield inside
        finally:
            thread.join()

    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        await a.leadership._try()
        fence = await a.leadership.confirm("discovery")
        assert fence is not None
        clock.now += LEASE + 1
        with write_held(a, fence, 1.5) as inside:
            assert await asyncio.to_thread(inside.wait, 5)
            began = time.monotonic()
            await b.leadership._try()
            waited = time.monotonic() - began
        assert b.leadership.leads
        assert waited > 1.0, waited  # the stamp waited for A's write
        rows = [r for r in b.tracking.rows() if r.repository == "team/app-0"]
        assert rows and all(r.state == SyncState.FAILED for r in rows)  # it went in, before B led
        with pytest.raises(NotLeader):  # and the next one does not
            await a._db(a.tracking.request_reconcile, fence=fence)

    run(tmp_path, postgres_database.url, body)


def test_the_leadership_session_has_keepalives_both_ways(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        await a.leadership._try()
        session = a.leadership._session
        assert session is not None
        server = {
            name: session.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
        }
        assert server == {
            "tcp_keepalives_idle": "10",
            "tcp_keepalives_interval": "5",
            "tcp_keepalives_count": "3",
        }
        assert session.execute("SHOW tcp_user_timeout").fetchone()[0] == "25000"  # type: ignore[index]  (ms)
        client = session.info.get_parameters()
        for name in ("keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"):
            assert client[name] == str(KEEPALIVE[name]), (name, client)

    run(tmp_path, postgres_database.url, body)


def test_a_duty_round_that_finds_the_lead_lost_stops_and_the_gate_waits_again(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    """The duty's own round finds the lead lost (before the leadership's check does): the gate ends it
    with one line and waits; the duty runs no more rounds while another worker leads."""

    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        said = lines(a)
        await a.leadership._try()
        rounds: list[LeaderFence | None] = []
        go = asyncio.Event()

        async def duty() -> None:
            while True:
                rounds.append(await a.leadership.confirm("discovery"))
                await go.wait()
                go.clear()

        gate = asyncio.ensure_future(a.leadership.gated("discovery", duty)())
        try:
            await asyncio.sleep(0.2)
            assert len(rounds) == 1 and rounds[0] is not None
            clock.now += LEASE + 1
            await b.leadership._try()  # A is taken for frozen
            assert b.leadership.leads
            go.set()  # A's duty comes round again
            await asyncio.sleep(0.5)
            assert len(rounds) == 1  # that round did not run
            assert not a.leadership.leads and not gate.done()  # the gate waits for the lead again
            lost = [line for line in said if line.startswith("lost the leadership")]
            assert len(lost) == 1 and "discovery does not run" in lost[0], said
        finally:
            gate.cancel()
            await asyncio.gather(gate, return_exceptions=True)

    run(tmp_path, postgres_database.url, body)


def test_a_worker_of_another_role_cannot_end_a_frozen_leaders_session_and_says_so(
    tmp_path: Path, postgres_cluster: PostgresCluster, local_files: Path
) -> None:
    """Workers that connect as different roles, neither a member of the other nor of pg_signal_backend:
    a stale leader's session cannot be ended, so the contender waits for it and says why once; given
    pg_signal_backend (as the README asks of such a setup), it takes over."""
    suffix = uuid.uuid4().hex[:8]
    role_a, role_b = f"geo_a_{suffix}", f"geo_b_{suffix}"
    with postgres_cluster.admin() as admin:
        for role in (role_a, role_b):
            admin.execute(f"CREATE ROLE {role} LOGIN")
    name = postgres_cluster.database(owner=role_a)
    clock = Clock()

    async def main() -> None:
        a = Engine(config_for(tmp_path / "a", postgres_cluster.url(name, role_a)), clock=clock)
        await a.open()
        with postgres_cluster.admin(name) as admin:  # B may use A's tables, and no more than that
            admin.execute(f"GRANT USAGE ON SCHEMA public TO {role_b}")
            admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role_b}")
            admin.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role_b}")
        b = Engine(config_for(tmp_path / "b", postgres_cluster.url(name, role_b)), clock=clock)
        await b.open()
        said = lines(b)
        try:
            await a.leadership._try()
            assert a.leadership.leads
            fence = await a.leadership.confirm("discovery")
            assert fence is not None
            clock.now += LEASE + 5  # A froze: its heartbeat is older than the lease
            for _ in range(3):
                await b.leadership._try()
            assert not b.leadership.leads
            assert await a.leadership.confirm("discovery") == fence  # A's session was not ended
            waiting = [line for line in said if line.startswith("cannot end the leadership session")]
            assert len(waiting) == 1, said  # once, not every try
            assert f"of worker {a.leases.owner}, whose heartbeat is older than the lease" in waiting[0]
            assert "pg_signal_backend)" in waiting[0]  # the server's reason
            assert waiting[0].endswith(
                ": waiting for it to end; to let a worker take over from a frozen one, connect every "
                "worker as one role, or grant theirs pg_signal_backend"
            )

            with postgres_cluster.admin() as admin:
                admin.execute(f"GRANT pg_signal_backend TO {role_b}")
            await b.leadership._try()
            assert b.leadership.leads
            assert any(line.startswith("took the leadership over from worker") for line in said)
            with pytest.raises(NotLeader):
                await a.leadership.confirm("discovery")
        finally:
            for engine in (b, a):
                await engine.close()

    asyncio.run(main())
