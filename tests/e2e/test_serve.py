"""`geo-tui serve` with a real Distribution primary whose notifications point at it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.distribution import Distribution, free_port
from tests.support.geo import tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.push import RawPusher

SECRET = "NotifySecret0123456789abcdefXYZ"
EVENTS = "/api/v4/container_registry_event/events"


class Served:
    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log_path = config, port, log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Served:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "geo_tui", "--config", str(self.config), "serve"],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited early:\n{self.log_path.read_text()}"
            try:
                if httpx.get(self.url + "/-/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"serve did not answer /-/health:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        return self.process.wait(timeout=timeout)


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture
def live(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> Iterator[tuple[Distribution, Distribution, Distribution, Served]]:
    port = free_port()
    primary = registry_factory(
        "primary", notification_url=f"http://127.0.0.1:{port}{EVENTS}", notification_secret=SECRET
    )
    secondaries = [registry_factory("eu"), registry_factory("us")]
    config = write_geo_config(
        tmp_path / "geo",
        primary,
        secondaries,
        key_pair,
        engine={"reconcile_interval": 3600},
        notifications={"listen": f"127.0.0.1:{port}", "secret": SECRET},
    )
    served = Served(config, port, tmp_path / "serve.log").start()
    try:
        yield primary, secondaries[0], secondaries[1], served
    finally:
        served.stop(signal.SIGKILL)


def test_a_push_reaches_every_secondary_and_sigterm_exits_cleanly(
    live: tuple[Distribution, Distribution, Distribution, Served],
) -> None:
    primary, eu, us, served = live
    with (
        RawPusher.for_registry(primary) as pusher,
        RawPusher.for_registry(eu) as eu_p,
        RawPusher.for_registry(us) as us_p,
    ):
        image = oci_image("live-1")
        pusher.push_tree("live/app", image, "v1")
        for target in (eu_p, us_p):
            wait_until(
                lambda t=target: tag_digests_safe(t, "live/app") == {"v1": image.digest}, what="replication"
            )
        metrics = httpx.get(served.url + "/metrics").text
        assert 'geo_tui_notifications_total{action="push"}' in metrics
        assert "geo_tui_event_to_synced_seconds_bucket" in metrics
    started = time.monotonic()
    assert served.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 8
    log = served.log_path.read_text()
    assert SECRET not in log and "Traceback" not in log


def tag_digests_safe(pusher: RawPusher, repository: str) -> dict[str, str]:
    try:
        return tag_digests(pusher, repository)
    except AssertionError:
        return {}
