"""Many workers on one PostgreSQL tracking database (issue 16), engine by engine on a real server (no
registry: rows are tracked by hand, and a job is a task that waits): claims by slot and cap, renewals
that cancel a job whose lease was lost (and only then), the expiry sweep, recovery at start that leaves
live leases alone, the workers' rows, and the leadership of the singleton duties."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import tomli_w

from geo_tui.config import Config, load_config
from geo_tui.engine import Engine
from geo_tui.engine.failure import Failure
from geo_tui.engine.tracking import SyncState, VerificationState
from geo_tui.engine.tracking.postgres import PostgresDatabase
from geo_tui.engine.updates import LogLine

LEASE = 30.0
REPOSITORIES = [f"team/app-{i}" for i in range(6)]


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def config_for(
    directory: Path, database: str | None, *, concurrency: int = 2, eu_cap: int | None = None
) -> Config:
    directory.mkdir(parents=True, exist_ok=True)
    engine: dict[str, Any] = {"repository_concurrency": concurrency, "lease_seconds": LEASE}
    engine["database"] = database or str(directory / "tracking.db")
    eu: dict[str, Any] = {"name": "eu", "registry": "http://127.0.0.1:10"}
    if eu_cap is not None:
        eu["max_repositories"] = eu_cap
    data = {
        "engine": engine,
        "primary": {"name": "primary", "registry": "http://127.0.0.1:9"},
        "secondaries": [eu, {"name": "us", "registry": "http://127.0.0.1:11"}],
    }
    path = directory / "config.toml"
    path.write_text(tomli_w.dumps(data))
    os.chmod(path, 0o600)
    return load_config(path)


def run(
    tmp_path: Path,
    database: str | None,
    body: Callable[[Engine, Engine, Clock], Awaitable[None]],
    **options: Any,
) -> None:
    """Two engines (workers A and B, each its own host folder) on one database, sharing a clock."""
    clock = Clock()

    async def main() -> None:
        a = Engine(config_for(tmp_path / "a", database, **options), clock=clock)
        b = Engine(config_for(tmp_path / "b", database, **options), clock=clock)
        await a.open()
        await a._db(a.tracking.ensure_rows, "eu", REPOSITORIES)
        await a._db(a.tracking.ensure_rows, "us", REPOSITORIES)
        await b.open()
        try:
            await body(a, b, clock)
        finally:
            for engine in (a, b):
                for job in engine.scheduler.jobs.values():
                    job.cancel()
                await engine.close()

    asyncio.run(main())


async def claim(engine: Engine) -> dict[str, list[tuple[str, str]]]:
    """One round of the scheduler's claims, with a waiting task as each repository's job."""
    groups = await engine.scheduler._due(engine._standing)
    for repository in groups:
        engine.scheduler.jobs[repository] = asyncio.ensure_future(asyncio.sleep(600))
    return {repository: sorted(row.key for row in rows) for repository, rows in groups.items()}


def leases(engine: Engine) -> dict[tuple[str, str], str]:
    return {(site, repo): owner for site, repo, owner, _ in engine.tracking.leased()}


def test_workers_claim_a_job_per_free_slot_and_never_the_same_row(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        assert a.leases.owner and b.leases.owner and a.leases.owner != b.leases.owner
        first = await claim(a)
        assert len(first) == 2  # repository_concurrency: one job per slot, each with both secondaries' rows
        assert all(sites == [("eu", r), ("us", r)] for r, sites in first.items())
        second = await claim(b)
        assert len(second) == 2 and not set(first) & set(second)
        held = leases(a)
        assert len(held) == 8
        assert {k for k, owner in held.items() if owner == a.leases.owner} == {
            k for keys in first.values() for k in keys
        }
        assert await claim(a) == {}  # its slots are full: nothing more claimed, nothing given back
        unclaimed = [r for r in a.tracking.rows(states=[SyncState.PENDING])]
        assert len(unclaimed) == 4 and all(r.repository not in {*first, *second} for r in unclaimed)

    run(tmp_path, postgres_database.url, body)


def test_a_secondarys_cap_holds_across_workers(tmp_path: Path, postgres_database: PostgresDatabase) -> None:
    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        await claim(a)
        await claim(b)
        started = [k for k in leases(a) if k[0] == "eu"]
        assert len(started) == 1, started  # max_repositories = 1, whoever claims
        assert len([k for k in leases(a) if k[0] == "us"]) == 4

    run(tmp_path, postgres_database.url, body, eu_cap=1)


def test_a_lost_lease_cancels_its_job_which_then_marks_nothing(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        claimed = await claim(a)
        repository = sorted(claimed)[0]
        job = a.scheduler.jobs[repository]
        clock.now += LEASE + 1  # A stalled past its lease: B sweeps its rows and claims them again
        await b.leases.sweep()
        row = b.tracking.row("eu", repository)
        assert row is not None and row.state == SyncState.FAILED and row.retry_count == 1
        await b._db(b.tracking.request_sync, repositories=[repository])  # new work: due at once
        assert repository in await claim(b)
        await a.leases.beat()
        await asyncio.sleep(0)
        assert job.cancelled()
        # A's late completion is refused: the row stays B's.
        assert not a.tracking.mark_synced("eu", repository, 0, tag_count=1, size=None, owner=a.leases.owner)
        failure = Failure("secondary", "http_500", "secondary eu: 500")
        await a.recorder.failed("us", repository, failure, a._standing)
        row = a.tracking.row("us", repository)
        assert (
            row is not None and row.state == SyncState.STARTED and "500" not in (row.last_sync_failure or "")
        )
        assert leases(a)[("eu", repository)] == b.leases.owner
        assert leases(a)[("us", repository)] == b.leases.owner

    run(tmp_path, postgres_database.url, body)


def test_a_run_recorded_while_the_lease_is_renewed_is_no_loss(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        claimed = await claim(a)
        repository = sorted(claimed)[0]
        job = a.scheduler.jobs[repository]
        row = a.tracking.row("eu", repository)
        assert row is not None
        renew = a.tracking.renew_leases

        def recorded_meanwhile(*args: Any) -> set[tuple[str, str]]:
            # eu's copy is recorded while the renewal runs (its lease goes with it); us still copies.
            assert a.tracking.mark_synced(
                "eu", repository, row.generation, tag_count=1, size=None, owner=a.leases.owner
            )
            held = renew(*args)
            a.scheduler.settled(("eu", repository))
            return held

        a.tracking.renew_leases = recorded_meanwhile  # type: ignore[method-assign]
        clock.now += LEASE / 2
        await a.leases.beat()
        await asyncio.sleep(0)
        assert not job.done()
        until = {(s, r): u for s, r, _, u in a.tracking.leased()}
        assert until[("us", repository)] == clock.now + LEASE  # renewed

    run(tmp_path, postgres_database.url, body)


def test_an_expired_lease_fails_its_row_with_the_retry_count_one_higher(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        claimed = sorted(await claim(a))
        with a.tracking._tx() as db:
            db.execute("UPDATE repositories SET retry_count = 2 WHERE repository = ?", (claimed[0],))
        clock.now += LEASE + 1
        await b.leases.sweep()
        row = b.tracking.row("eu", claimed[0])
        assert row is not None and row.state == SyncState.FAILED
        assert row.retry_count == 3  # never reset
        assert row.retry_at is not None and row.retry_at > clock.now + 15
        assert row.last_sync_failure is not None and a.leases.owner in row.last_sync_failure
        assert not leases(a)
        assert b.leases.expired == 4

    run(tmp_path, postgres_database.url, body)


def test_a_starting_worker_leaves_another_workers_live_leases_alone(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        claimed = await claim(a)
        c = Engine(config_for(tmp_path / "c", postgres_database.url), clock=clock)
        await c.open()  # recover_started and a sweep: A's leases are live
        try:
            held = leases(a)
            assert len(held) == 4 and set(held.values()) == {a.leases.owner}
            assert {r.repository for r in c.tracking.rows(states=[SyncState.STARTED])} == set(claimed)
            workers = {w.id for w in c.tracking.workers()}
            assert workers == {a.leases.owner, b.leases.owner, c.leases.owner}
        finally:
            await c.close()
        assert c.leases.owner not in {w.id for w in a.tracking.workers()}  # a clean stop removes it

    run(tmp_path, postgres_database.url, body)


def test_one_worker_leads_and_another_takes_over_when_it_goes(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        assert not a.leadership.leads and not b.leadership.leads
        await a.leadership._try()
        await b.leadership._try()
        assert a.leadership.leads and not b.leadership.leads
        ran: list[str] = []

        async def duty() -> None:
            ran.append("b")
            await asyncio.sleep(600)

        gate = asyncio.ensure_future(b.leadership.gated("discovery", duty)())
        await asyncio.sleep(0.05)
        assert ran == []  # B's duties wait while A leads
        a.leadership._drop()  # A's session ends (a crash closes it too): the server drops the lock
        await b.leadership._try()
        assert b.leadership.leads
        await asyncio.sleep(1.2)
        assert ran == ["b"]
        b.leadership._drop()
        await asyncio.sleep(0.05)
        gate.cancel()
        await asyncio.gather(gate, return_exceptions=True)

    run(tmp_path, postgres_database.url, body)


def test_on_sqlite_one_engine_leads_and_claims_without_leases(tmp_path: Path) -> None:
    async def main() -> None:
        engine = Engine(config_for(tmp_path, None), clock=Clock())
        await engine.open()
        try:
            assert engine.leases.owner is None and engine.leadership.leads
            await engine._db(engine.tracking.ensure_rows, "eu", REPOSITORIES)
            groups = await engine.scheduler._due(engine._standing)
            assert len(groups) == 2
            assert engine.tracking.leased() == []  # rows are started by the job, as before
            assert engine.tracking.workers() == []
        finally:
            await engine.close()

    asyncio.run(main())


def test_a_dead_worker_of_this_host_gives_its_rows_back_at_once(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    probe = subprocess.Popen(["true"])
    probe.wait()
    dead = f"{socket.gethostname()}/{probe.pid}/1.000"
    elsewhere = f"another-host/{probe.pid}/1.000"

    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        first, second = sorted(await claim(a))
        with a.tracking._tx() as db:  # as a killed worker of this host, and one of another host, left them
            db.execute("UPDATE repositories SET lease_owner = ? WHERE repository = ?", (dead, first))
            db.execute("UPDATE repositories SET lease_owner = ? WHERE repository = ?", (elsewhere, second))
        a.tracking.register_worker(dead, clock.now)
        c = Engine(config_for(tmp_path / "c", postgres_database.url), clock=clock)
        await c.open()
        try:
            rows = {r.site: r for r in c.tracking.rows() if r.repository == first}
            assert all(r.state == SyncState.PENDING and r.retry_count == 0 for r in rows.values()), rows
            held = leases(c)
            assert ("eu", first) not in held and held[("eu", second)] == elsewhere  # its lease runs out
            assert dead not in {w.id for w in c.tracking.workers()}
        finally:
            await c.close()

    run(tmp_path, postgres_database.url, body)


def test_rows_claimed_beyond_the_free_slots_are_given_back(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        with a.tracking._tx() as db:  # only eu's rows are due: a claim of 4 rows names 4 repositories
            db.execute("UPDATE repositories SET state = 'synced' WHERE site = 'us'")
        claimed = await claim(a)
        assert len(claimed) == 2 and all(keys == [("eu", r)] for r, keys in claimed.items())
        assert set(leases(a)) == {("eu", r) for r in claimed}
        pending = {r.repository for r in a.tracking.rows(sites=["eu"], states=[SyncState.PENDING])}
        assert pending == set(REPOSITORIES) - set(claimed)

    run(tmp_path, postgres_database.url, body)


def test_a_worker_whose_heartbeat_cannot_reach_the_database_for_a_lease_stops_its_copies(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        claimed = await claim(a)
        jobs = [a.scheduler.jobs[r] for r in claimed]
        assert await a.leases.tick()

        def unreachable(*args: Any) -> set[tuple[str, str]]:
            raise OSError("connection refused")

        a.tracking.renew_leases = unreachable  # type: ignore[method-assign]
        clock.now += LEASE / 2
        assert not await a.leases.tick()
        await asyncio.sleep(0)
        assert not any(job.done() for job in jobs)  # the leases may still be ours: copies go on
        clock.now += LEASE / 2
        assert not await a.leases.tick()
        await asyncio.sleep(0)
        assert all(job.cancelled() for job in jobs)  # a whole lease without a heartbeat: they stop

    run(tmp_path, postgres_database.url, body)


def test_verifications_left_started_are_the_new_leaders_to_recover(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        await a.leadership._try()
        a.tracking.mark_verification("eu", REPOSITORIES[0], VerificationState.STARTED)  # A verifies
        c = Engine(config_for(tmp_path / "c", postgres_database.url), clock=clock)
        await c.open()  # a worker that starts meanwhile leaves A's verification alone
        try:
            row = c.tracking.row("eu", REPOSITORIES[0])
            assert row is not None and row.verification_state == VerificationState.STARTED
            a.leadership._drop()  # A goes; B takes over, and runs the verification again
            await b.leadership._try()
            row = c.tracking.row("eu", REPOSITORIES[0])
            assert row is not None and row.verification_state == VerificationState.PENDING
        finally:
            await c.close()

    run(tmp_path, postgres_database.url, body)


# -- push copies shared out (issue 16) ------------------------------------------------------------------

DIGEST = "sha256:" + "b" * 64


def queue_pushes(engine: Engine, clock: Clock, *repositories: str) -> None:
    """Pushes as a worker's receiver stores them, received a second ago."""
    pushes = [(repository, "v1", DIGEST) for repository in repositories]
    engine.tracking.record_notifications([], [], clock.now - 1, pushes=pushes)


async def claim_pushes(engine: Engine) -> list[str]:
    """One round of the push copier's claims, with a waiting task as each repository's job."""
    copier = engine._pushes
    found = await copier._claim()
    for repository, queued in found.repositories.items():
        copier._held[repository] = [p.id for p in queued]
        copier.running[repository] = asyncio.ensure_future(asyncio.sleep(600))
    return sorted(found.repositories)


def test_push_copies_are_shared_out_and_a_lost_push_lease_cancels_its_job(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        logged: list[str] = []
        a.subscribe(
            lambda update: logged.append(update.record.message) if isinstance(update, LogLine) else None
        )
        queue_pushes(a, clock, *REPOSITORIES[:3])
        assert await claim_pushes(a) == REPOSITORIES[:2]  # two slots
        assert await claim_pushes(b) == [REPOSITORIES[2]]  # never a repository A copies
        jobs = dict(a._pushes.running)
        clock.now += LEASE / 2
        await a.leases.beat()  # renewed: nothing lost
        await asyncio.sleep(0)
        assert not any(job.done() for job in jobs.values())
        assert {u for _, _, o, u in a.tracking.leased_pushes(a.leases.owner)} == {clock.now + LEASE}
        clock.now += LEASE + 1  # A stalled past its lease: B, one slot free, takes the oldest, naming A
        found = await b._pushes._claim()
        assert sorted(found.repositories) == [REPOSITORIES[0]]
        assert found.taken_over == {REPOSITORIES[0]: a.leases.owner}
        await a.leases.beat()  # both of A's leases ran out (one is B's now): both copies stop
        await asyncio.sleep(0)
        assert all(job.cancelled() for job in jobs.values())
        # A's late completion takes nothing off the queue: those pushes are B's now.
        ids = [p.id for p in found.repositories[REPOSITORIES[0]]]
        assert a.tracking.done_pushes(ids, owner=a.leases.owner) == 0
        assert b.tracking.done_pushes(ids, owner=b.leases.owner) == len(ids)
        assert any("lease lost on its pushes" in line for line in logged), logged

    run(tmp_path, postgres_database.url, body)


def test_verification_waits_for_pushes_another_worker_copies(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        repository = REPOSITORIES[0]
        queue_pushes(a, clock, repository)
        assert await claim_pushes(b) == [repository]
        waiting = asyncio.ensure_future(a._pushes.copied(repository))  # A verifies, B copies
        await asyncio.sleep(0.5)
        assert not waiting.done()
        (push,) = b.tracking.queued_pushes()
        assert b.tracking.done_pushes([push.id], owner=b.leases.owner) == 1
        await asyncio.wait_for(waiting, timeout=5)

    run(tmp_path, postgres_database.url, body)


def test_a_dead_worker_of_this_host_gives_its_pushes_back_at_once_and_a_clean_stop_too(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    probe = subprocess.Popen(["true"])
    probe.wait()
    dead = f"{socket.gethostname()}/{probe.pid}/1.000"

    async def body(a: Engine, b: Engine, clock: Clock) -> None:
        queue_pushes(a, clock, *REPOSITORIES[:3])
        a.tracking.claim_pushes(dead, clock.now, slots=1, lease_seconds=LEASE)  # as a killed worker left it
        assert await claim_pushes(a) == REPOSITORIES[1:3]
        assert await claim_pushes(b) == []  # every repository held
        c = Engine(config_for(tmp_path / "c", postgres_database.url), clock=clock)
        await c.open()  # finds the dead worker's pushes, and gives them back before their lease ends
        try:
            holders = {r: o for _, r, o, _ in c.tracking.leased_pushes()}
            assert holders == {REPOSITORIES[1]: a.leases.owner, REPOSITORIES[2]: a.leases.owner}
            assert await claim_pushes(c) == [REPOSITORIES[0]]
        finally:
            await c.close()  # a clean stop: what it held is anyone's at once
        assert {r for _, r, _, _ in a.tracking.leased_pushes()} == set(REPOSITORIES[1:3])
        assert await claim_pushes(b) == [REPOSITORIES[0]]

    run(tmp_path, postgres_database.url, body)
