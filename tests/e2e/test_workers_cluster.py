"""Two `geo-tui serve` workers on one PostgreSQL database (issue 16): each registers itself and beats,
so both appear, live, in either one's workers read and in `geo-tui status`."""

from __future__ import annotations

import signal
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from geo_tui.cli import main
from geo_tui.engine.model import WorkersView
from geo_tui.engine.tracking.postgres import PostgresDatabase
from geo_tui.engine.wire import decode_workers
from tests.support.distribution import Distribution, free_port
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.postgres import database_option
from tests.support.push import RawPusher
from tests.support.served import ServedEngine, wait_until, write_served_config

TOKEN = "cluster-api-token-0123456789-abcd"


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
) -> Iterator[list[tuple[ServedEngine, Path, int]]]:
    primary_pusher.push_tree("shop/api", oci_image("shop/api"), "v1")
    started: list[tuple[ServedEngine, Path, int]] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            config = write_served_config(
                tmp_path / name, primary, [secondary], key_pair, port=port, api={"token": TOKEN}
            )
            data = tomllib.loads(config.read_text())
            data["engine"].update(database_option(tracking_target))
            config.write_text(tomli_w.dumps(data))
            engine = ServedEngine(config, tmp_path / f"{name}.log", api_url=f"http://127.0.0.1:{port}")
            started.append((engine.start(TOKEN), config, port))
        yield started
    finally:
        for engine, _, _ in started:
            engine.stop(signal.SIGKILL)


def read(engine: ServedEngine) -> WorkersView:
    with engine.client(TOKEN) as client:
        response = client.get("/api/v1/workers")
    assert response.status_code == 200, response.text
    return decode_workers(response.json())


def test_two_workers_see_each_other(
    workers: list[tuple[ServedEngine, Path, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    ports = [str(port) for _, _, port in workers]

    def both_live(engine: ServedEngine) -> bool:
        live = [w for w in read(engine).workers if not w.stale]
        return len(live) == 2 and all(any(p in " ".join(w.listen) for w in live) for p in ports)

    for engine, _, _ in workers:
        wait_until(lambda engine=engine: both_live(engine), timeout=30, what="both workers in the read")
    views = [read(engine) for engine, _, _ in workers]
    assert {w.id for w in views[0].workers} == {w.id for w in views[1].workers}
    assert len({w.pid for w in views[0].workers}) == 2
    _, config, _ = workers[0]
    assert main(["--config", str(config), "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("workers (stale after"))
    rows = [line for line in lines[start + 2 : start + 4] if line.strip()]
    assert len(rows) == 2 and all(row.rstrip().endswith(("live", "live, leader")) for row in rows), rows
    assert sum(row.rstrip().endswith("live, leader") for row in rows) == 1, rows  # one of them leads


def test_a_console_and_resync_on_a_worker_host_attach_to_a_live_worker(
    workers: list[tuple[ServedEngine, Path, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    """On PostgreSQL no engine holds the database whole, so there is no holder record to find: the
    console and `resync` find a live worker of this host in the workers' rows and attach to its API,
    instead of starting an engine of their own (which would join the cluster as one more worker)."""
    from geo_tui.cli.console import _console_link
    from geo_tui.config import load_config
    from geo_tui.link.remote import RemoteLink

    urls = {f"http://127.0.0.1:{port}" for _, _, port in workers}
    _, config, _ = workers[0]
    link, read_only = _console_link(load_config(config), None)
    assert isinstance(link, RemoteLink), link
    assert link.target in urls and not read_only
    assert main(["--config", str(config), "resync", "--all"]) == 0
    out = capsys.readouterr().out
    assert "queued for resync by the running engine at http://127.0.0.1:" in out, out
    # Both workers stopped cleanly (their rows gone): nobody to attach to, so the console starts its own.
    for engine, _, _ in workers:
        assert engine.stop(signal.SIGTERM) == 0
    from geo_tui.link.spawned import SpawnedEngine

    link, _ = _console_link(load_config(config), None)
    assert isinstance(link, SpawnedEngine)
