"""`geo-tui serve` as a subprocess for tests that attach to its engine API (needs PYTHONPATH exported)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from tests.support.distribution import Distribution
from tests.support.geo import write_geo_config
from tests.support.keys import TestKeyPair

NOTIFY_SECRET = "NotifySecret0123456789abcdefXYZ"
EVENTS = "/api/v4/container_registry_event/events"


def write_served_config(
    directory: Path,
    primary: Distribution,
    secondaries: list[Distribution],
    key_pair: TestKeyPair,
    *,
    port: int,
    api: dict[str, Any] | None = None,
) -> Path:
    """A config with the receiver on 127.0.0.1:``port`` and the given ``[api]`` section."""
    path = write_geo_config(
        directory,
        primary,
        secondaries,
        key_pair,
        engine={"reconcile_interval": 3600},
        notifications={"listen": f"127.0.0.1:{port}", "secret": NOTIFY_SECRET},
    )
    if api is not None:
        data = tomllib.loads(path.read_text())
        data["api"] = api
        path.write_text(tomli_w.dumps(data))
    return path


class ServedEngine:
    """One `geo-tui serve` process; `start` waits until its API answers at ``api_url``/``api_socket``."""

    def __init__(
        self, config: Path, log: Path, *, api_url: str | None = None, api_socket: Path | None = None
    ) -> None:
        self.config, self.log_path = config, log
        self.api_url, self.api_socket = api_url, api_socket
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return self.api_url or str(self.api_socket)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if self.api_socket is not None:
            return httpx.Client(
                transport=httpx.HTTPTransport(uds=str(self.api_socket)),
                base_url="http://geo-tui",
                headers=headers,
            )
        assert self.api_url is not None
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=10)

    def start(self, token: str | None = None, timeout: float = 20.0) -> ServedEngine:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "geo_tui", "--config", str(self.config), "serve"],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=os.environ.copy(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited early:\n{self.log_path.read_text()}"
            try:
                with self.client(token) as client:
                    if client.get("/api/v1/info", timeout=1).status_code == 200:
                        return self
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"serve's API did not answer:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        return self.process.wait(timeout=timeout)


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
