"""Two consoles' links attached to two `geo-tui serve` workers on one PostgreSQL database see the same
state and each other's commands (issue 16), on real Distribution: a resync and a pause issued through
worker A reach B's update stream and rows, B stays paused (it starts no copy), a resume through B runs
both, and the copies each worker makes show on the other's link, with whose log lines they are."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from geo_tui.cli import main
from geo_tui.config import Secret
from geo_tui.engine import LogRecord, RepositoryRow, SyncState, VerificationState
from geo_tui.engine.tracking.postgres import PostgresDatabase
from geo_tui.engine.wire import Resync, Verify
from geo_tui.link.client import EngineClient
from geo_tui.link.remote import RemoteLink
from tests.support.distribution import Distribution
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.postgres import database_option, query_tracking
from tests.support.push import RawPusher
from tests.support.served import ServedEngine, start_workers, wait_until

TOKEN = "cluster-view-token-0123456789-abc"
REPOSITORIES = [f"team/app{i}" for i in range(6)]
SITE = "secondary"


@pytest.fixture
def tracking_backend() -> str:
    return "postgresql"


@pytest.fixture
def workers(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    tracking_target: Path | PostgresDatabase,
) -> Iterator[list[tuple[ServedEngine, Path]]]:
    for name in REPOSITORIES:
        primary_pusher.push_tree(name, oci_image(name, layer_size=2048), "v1")
    started = start_workers(
        ("a", "b"),
        tmp_path,
        primary,
        [secondary],
        key_pair,
        database_option(tracking_target),
        token=TOKEN,
        engine={"repository_concurrency": 3},
    )
    try:
        yield started
    finally:
        for engine, _ in started:
            engine.stop(signal.SIGKILL)


class Watched:
    """What one console's link has shown: the latest row per key, every row state in order, log lines."""

    def __init__(self, link: RemoteLink) -> None:
        self.link = link
        self.rows: dict[tuple[str, str], RepositoryRow] = {}
        self.states: dict[tuple[str, str], list[SyncState]] = {}
        self.logs: list[LogRecord] = []
        self.paused: bool | None = None

    def drain(self) -> None:
        batch = self.link.drain()
        for row in [*(batch.all_rows or []), *batch.rows]:
            self.rows[row.key] = row
            self.states.setdefault(row.key, []).append(row.state)
        self.logs += batch.logs
        if batch.status is not None:
            self.paused = batch.status.paused
        if batch.snapshot is not None:
            self.paused = batch.snapshot.paused

    def all(self, state: SyncState, generation_above: dict[str, int] | None = None) -> bool:
        self.drain()
        rows = [self.rows.get((SITE, name)) for name in REPOSITORIES]
        return all(
            r is not None
            and r.state is state
            and (generation_above is None or r.generation > generation_above[r.repository])
            for r in rows
        )


def command(engine: ServedEngine, call: str, body: object = None) -> None:
    async def run() -> None:
        async with EngineClient(engine.target, token=Secret(TOKEN)) as client:
            if call == "resync":
                assert isinstance(body, Resync)
                answer = await client.resync(body)
            elif call == "verify":
                assert isinstance(body, Verify)
                answer = await client.verify(body)
            else:
                answer = await (client.pause() if call == "pause" else client.resume())
            assert answer.ok, answer.message

    asyncio.run(run())


def info(engine: ServedEngine) -> dict[str, object]:
    with engine.client(TOKEN) as client:
        response = client.get("/api/v1/info")
    assert response.status_code == 200, response.text
    document: dict[str, object] = response.json()
    return document


def pid_of(record: LogRecord) -> int | None:
    match = re.fullmatch(r"[^/]+/(\d+)/[0-9.]+", record.worker or "")
    return int(match.group(1)) if match else None


def test_two_consoles_on_two_workers_see_the_same_state_and_each_others_commands(
    workers: list[tuple[ServedEngine, Path]],
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (a, config), (b, config_b) = workers
    assert a.process is not None and b.process is not None
    links = [RemoteLink(engine.target, token=Secret(TOKEN)) for engine in (a, b)]
    for link in links:
        link.start()
    try:
        seen_a, seen_b = (Watched(link) for link in links)
        for link in links:
            assert link.wait_connected(30)
        for seen in (seen_a, seen_b):
            wait_until(lambda seen=seen: seen.all(SyncState.SYNCED), timeout=60, what="the backfill")

        # Paused through A: both report it, B's console hears it and whose command it was.
        command(a, "pause")
        wait_until(lambda: seen_b.drain() or seen_b.paused is True, what="B's console paused")
        assert info(a)["paused"] is True and info(b)["paused"] is True
        capsys.readouterr()
        assert main(["--config", str(config_b), "status"]) == 0
        assert "replication PAUSED on every worker by worker" in capsys.readouterr().out
        wait_until(
            lambda: (
                seen_b.drain()
                or any("replication paused" in r.message and pid_of(r) == a.process.pid for r in seen_b.logs)
            ),
            what="A's pause in B's event log",
        )

        # A resync through A: B's console sees every row pending (then, once resumed, synced).
        for name in REPOSITORIES:
            primary_pusher.push_tree(name, oci_image(f"{name}-v2", layer_size=2048), "v2")
        before = {name: seen_b.rows[(SITE, name)].generation for name in REPOSITORIES}
        started = time.monotonic()
        command(a, "resync", Resync(sites=(SITE,)))
        took = wait_until(lambda: seen_b.all(SyncState.PENDING, before), what="B's console: pending")
        print(f"\nresync through A to pending on B's console: {took * 1000:.0f} ms "
              f"({(time.monotonic() - started) * 1000:.0f} ms with the command)")  # fmt: skip
        wait_until(
            lambda: seen_b.drain() or any("resync requested" in r.message and pid_of(r) == a.process.pid
                                          for r in seen_b.logs),
            what="A's resync in B's event log",
        )  # fmt: skip
        # A's own console too: a resync of rows not named reloads its rows
        wait_until(lambda: seen_a.all(SyncState.PENDING, before), what="A's console: pending")
        # B's own API reads the same rows; paused, neither worker starts a copy.
        with b.client(TOKEN) as client:
            page = client.get("/api/v1/rows", params={"site": SITE, "state": "pending"}).json()
        assert len(page["rows"]["values"]) == len(REPOSITORIES)
        time.sleep(2.0)
        started_rows = query_tracking(config, "SELECT COUNT(*) FROM repositories WHERE state = 'started'")
        assert started_rows == [(0,)]
        assert all("v2" not in secondary_pusher.list_tags(name) for name in REPOSITORIES)
        assert seen_b.all(SyncState.PENDING, before)

        # Resumed through B: both workers copy; each console sees every row synced, including the
        # rows the other worker copied.
        command(b, "resume")
        for seen in (seen_a, seen_b):
            wait_until(lambda seen=seen: seen.all(SyncState.SYNCED, before), timeout=60, what="synced")
            # the status update that says so comes on its own beat: the rows may be synced before it
            wait_until(lambda seen=seen: seen.drain() or seen.paused is False, what="resumed on the console")
        assert all("v2" in secondary_pusher.list_tags(name) for name in REPOSITORIES)
        copied_by: dict[str, int] = {}
        for seen in (seen_a, seen_b):
            seen.drain()
            for record in seen.logs:
                if record.message.startswith("synced:") and record.repository in REPOSITORIES:
                    pid = pid_of(record)
                    assert pid is not None, record
                    copied_by[record.repository] = pid
        assert set(copied_by) == set(REPOSITORIES)
        # The worker that did not copy a repository saw it start and end on its console all the same.
        for name, pid in copied_by.items():
            other = seen_a if pid == b.process.pid else seen_b
            states = other.states[(SITE, name)]
            assert SyncState.SYNCED in states[states.index(SyncState.PENDING) :], (name, states)
        assert b.process.pid in copied_by.values(), "B copied nothing: its resume did not reach it first"

        # A verification through A: B's console sees its outcome on the row, and A's line for it.
        key = (SITE, REPOSITORIES[0])
        verified = seen_b.rows[key].verified_at or 0.0
        command(a, "verify", Verify(keys=(key,)))
        wait_until(
            lambda: (
                seen_b.drain()
                or (
                    (seen_b.rows[key].verified_at or 0.0) > verified
                    and seen_b.rows[key].verification_state is VerificationState.SUCCEEDED
                )
            ),
            what="A's verification on B's console",
        )
        with httpx.Client(base_url=b.target, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            metrics = client.get("/metrics").text
        print(
            "B's cluster changes:",
            [line for line in metrics.splitlines() if line.startswith("geo_tui_cluster_change_seconds_")],
        )
    finally:
        for link in links:
            link.stop()
