"""`geo-tui serve` as a subprocess for tests that attach to its engine API (needs PYTHONPATH exported)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

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


class ServeProcess:
    """One `geo-tui serve` process: `start` waits until it answers (`_answers`), `stop` signals it and
    returns its exit status. stderr goes to ``log``, and stdout too unless ``stdout`` names a file."""

    what = "its receiver's /-/health"

    # How geo-tui is run: this checkout's (tests/e2e/test_wheel.py gives an installed `geo-tui`).
    command: Sequence[str] = (sys.executable, "-m", "geo_tui")
    env: dict[str, str] | None = None  # the environment (default: the test's)

    def __init__(self, config: Path, log: Path, *, stdout: Path | None = None) -> None:
        self.config, self.log_path, self.stdout_path = config, log, stdout
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Self:
        with open(self.log_path, "ab") as log, open(self.stdout_path or self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [*self.command, "--config", str(self.config), "serve"],
                stdout=out,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited early:\n{self.log_path.read_text()}"
            try:
                if self._answers():
                    return self
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"serve did not answer on {self.what}:\n{self.log_path.read_text()}")

    def _answers(self) -> bool:
        raise NotImplementedError

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        return self.process.wait(timeout=timeout)


class Served(ServeProcess):
    """`geo-tui serve` with its notification receiver on 127.0.0.1:``port``."""

    def __init__(self, config: Path, port: int, log: Path, stdout: Path | None = None) -> None:
        super().__init__(config, log, stdout=stdout)
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        return httpx.get(self.url + "/-/health", timeout=0.5).status_code == 200


class ServedEngine(ServeProcess):
    """`geo-tui serve` whose engine API answers at ``api_url`` or ``api_socket``."""

    what = "its engine API"

    def __init__(
        self, config: Path, log: Path, *, api_url: str | None = None, api_socket: Path | None = None
    ) -> None:
        super().__init__(config, log)
        self.api_url, self.api_socket = api_url, api_socket
        self._token: str | None = None

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

    def start(self, token: str | None = None, timeout: float = 20.0) -> Self:  # type: ignore[override]
        """Start it; `token` is what the readiness check sends, when the API needs one."""
        self._token = token
        return super().start(timeout)

    def _answers(self) -> bool:
        with self.client(self._token) as client:
            return client.get("/api/v1/info", timeout=1).status_code == 200


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> float:
    """Poll `predicate` every 20 ms until it holds; returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - start


def start_workers(
    names: Sequence[str],
    directory: Path,
    primary: Distribution,
    secondaries: list[Distribution],
    key_pair: TestKeyPair,
    database: dict[str, str],
    *,
    token: str,
    engine: dict[str, Any] | None = None,
) -> list[tuple[ServedEngine, Path]]:
    """`geo-tui serve` workers on one tracking database (``database``: its ``[engine]`` keys), each with
    its own config, receiver and API on a free port (token ``token``), and more ``[engine]`` keys; the
    caller stops them. A worker that does not start stops those started before it."""
    from tests.support.distribution import free_port

    started: list[tuple[ServedEngine, Path]] = []
    try:
        for name in names:
            port = free_port()
            config = write_served_config(
                directory / name, primary, secondaries, key_pair, port=port, api={"token": token}
            )
            data = tomllib.loads(config.read_text())
            data["engine"].update({**database, **(engine or {})})
            config.write_text(tomli_w.dumps(data))
            served = ServedEngine(config, directory / f"{name}.log", api_url=f"http://127.0.0.1:{port}")
            started.append((served.start(token), config))
    except BaseException:
        for served, _ in started:
            served.stop(signal.SIGKILL)
        raise
    return started
