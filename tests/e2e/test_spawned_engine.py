"""The console's own engine in a child process (`SpawnedEngine`): it replicates, answers the console and
other consoles through its API, stops when the console quits or goes away, and says why when it cannot
start or dies. Against real Distribution."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from geo_tui.config import load_config
from geo_tui.engine.lock import read_holder
from geo_tui.link.remote import RemoteLink
from geo_tui.link.spawned import EngineStartError, SpawnedEngine
from tests.support.distribution import Distribution
from tests.support.geo import tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.links import all_synced, drain_until
from tests.support.oci import oci_image
from tests.support.push import RawPusher

SECRET = "Qsecret0123456789abcdef0123456789"


def wait_exit(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, f"process {pid} still running after {timeout} s"
        time.sleep(0.1)


def test_the_console_engine_replicates_in_its_own_process_and_stops_with_the_console(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    for i in range(3):
        primary_pusher.push_tree(f"spawned/r{i}", oci_image(f"s{i}"), "v1")
    config = load_config(write_geo_config(tmp_path, primary, [secondary], key_pair))
    link = SpawnedEngine(config)
    link.launch()
    link.wait_ready(30)
    link.start()
    try:
        assert link.pid is not None and link.pid != os.getpid()
        holder = read_holder(config.engine.database)
        assert holder is not None and holder.pid == link.pid, "the child holds the tracking database"
        assert holder.api == link.target and "console" in holder.command
        drain_until(link, all_synced(3), timeout=60)
        for i in range(3):
            assert tag_digests(secondary_pusher, f"spawned/r{i}") == tag_digests(
                primary_pusher, f"spawned/r{i}"
            )

        # A second console attaches to the same engine and its command reaches it.
        other = RemoteLink(link.target)
        other.start()
        try:
            assert other.wait_connected(15)
            other.command(lambda engine: engine.pause())
            batches = drain_until(link, lambda bs: any(b.status and b.status.paused for b in bs))
            assert any(b.status and b.status.paused for b in batches)
        finally:
            other.stop()
    finally:
        link.stop()
    assert link._process is not None and link._process.returncode == 0, "a clean shutdown exits 0"
    assert read_holder(config.engine.database) is None, "the database is free again"
    assert not Path(link.target).exists(), "the API socket is removed"


def test_the_engine_stops_when_the_console_goes_away(
    primary: Distribution, secondary: Distribution, key_pair: TestKeyPair, tmp_path: Path
) -> None:
    config = load_config(write_geo_config(tmp_path, primary, [secondary], key_pair))
    link = SpawnedEngine(config)
    link.launch()
    link.wait_ready(30)
    assert link._process is not None and link._process.stdin is not None
    # What the kernel does when the console dies, kill -9 included: the pipe to the child closes.
    link._process.stdin.close()
    assert link._process.wait(20) == 0
    assert read_holder(config.engine.database) is None


def test_an_engine_that_cannot_start_says_why_in_one_line(
    primary: Distribution, secondary: Distribution, key_pair: TestKeyPair, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write_geo_config(
            tmp_path,
            primary,
            [secondary],
            key_pair,
            notifications={"listen": f"127.0.0.1:{port}", "secret": SECRET},
        )
        link = SpawnedEngine(load_config(path))
        link.launch()
        with pytest.raises(EngineStartError) as caught:
            link.wait_ready(30)
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "notifications.listen" in message, message
    assert "\n" not in message and "Traceback" not in message and SECRET not in message
    assert read_holder(tmp_path / "tracking.db") is None


def test_an_engine_that_dies_is_reported_to_the_console(
    primary: Distribution, secondary: Distribution, key_pair: TestKeyPair, tmp_path: Path
) -> None:
    link = SpawnedEngine(load_config(write_geo_config(tmp_path, primary, [secondary], key_pair)))
    link.launch()
    link.wait_ready(30)
    link.start()
    try:
        assert link.pid is not None
        os.kill(link.pid, signal.SIGKILL)
        batches = drain_until(link, lambda bs: any(b.failure for b in bs))
        failure = next(b.failure for b in batches if b.failure)
        assert "exited with status -9" in failure
    finally:
        link.stop(timeout=5)
    wait_exit(link.pid, 5)
