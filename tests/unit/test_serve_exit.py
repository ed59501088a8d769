"""`geo-tui serve` ends with status 0 only when it was asked to stop (SIGTERM/SIGINT): a listener that
stops by itself is a failure a service manager must see."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from geo_tui.config import load_config
from geo_tui.service import serve as serve_module
from tests.support.distribution import free_port


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[engine]
database = "{tmp_path / "tracking.db"}"

[notifications]
listen = "127.0.0.1:{free_port()}"
secret = "a-notification-secret-for-tests"

[primary]
name = "primary"
registry = "http://127.0.0.1:9"

[[secondaries]]
name = "eu"
registry = "http://127.0.0.2:9"
"""
    )
    path.chmod(0o600)
    return path


async def test_a_listener_that_stops_by_itself_ends_serve_with_status_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = serve_module.asgi_server

    def failing_server(app: Any) -> Any:
        server = real(app)

        async def serve(sockets: Any = None) -> None:
            raise RuntimeError("the accept loop died")

        server.serve = serve  # type: ignore[method-assign]
        return server

    monkeypatch.setattr(serve_module, "asgi_server", failing_server)
    config = load_config(_config(tmp_path))
    assert await serve_module.serve(config) == 1


async def test_without_the_fault_the_same_serve_stops_cleanly_with_status_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the status 1 above comes from the listener, not from the unreachable registries."""
    config = load_config(_config(tmp_path))

    def stop_when_ready(engine: Any, address: str) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    assert await serve_module.serve(config, on_ready=stop_when_ready) == 0
