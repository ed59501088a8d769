"""`geo-tui doctor` without registries: a registry that never answers costs a bounded time, a port held by
something else is not mistaken for `geo-tui serve`, and a bad config exits 2."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import tomli_w

from geo_tui.cli import main
from geo_tui.config import load_config
from geo_tui.setup import format_results, run_doctor

SECRET = "DoctorSecret0123456789abcdefXYZ"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


class _NotGeoTui(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotGeoTui)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write(tmp_path: Path, primary: str, secondary: str, listen: int) -> Path:
    path = tmp_path / "config.toml"
    document = {
        "notifications": {"listen": f"127.0.0.1:{listen}", "secret": SECRET},
        "primary": {"name": "primary", "registry": primary},
        "secondaries": [{"name": "eu", "registry": secondary}],
    }
    path.write_text(tomli_w.dumps(document))
    path.chmod(0o600)
    return path


async def test_a_silent_registry_fails_within_the_timeout_and_a_stranger_is_not_serve(
    tmp_path: Path, silent_port: int, other_server: int
) -> None:
    path = write(
        tmp_path, f"http://127.0.0.1:{silent_port}", f"http://127.0.0.1:{closed_port()}", other_server
    )
    started = time.monotonic()
    results = await run_doctor(load_config(path), timeout=1.0)
    assert time.monotonic() - started < 5
    lines = format_results(results, as_json=False).splitlines()
    assert lines[0].startswith("FAIL primary answers:") and "no answer within 1 s" in lines[0]
    assert lines[3].startswith("FAIL eu answers:") and "fix: start the registry" in lines[3]
    assert lines[-2].startswith("FAIL notifications: something other than geo-tui serve answers")
    assert lines[-1] == "1 of 8 checks passed"
    document = json.loads(format_results(results, as_json=True))
    assert document["ok"] is False and len(document["checks"]) == 8
    assert SECRET not in "\n".join(lines) + json.dumps(document)


def test_doctor_with_a_bad_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "ftp://nope", "http://127.0.0.1:1", 5050)
    assert main(["--config", str(path), "doctor"]) == 2
    _, err = capsys.readouterr()
    assert err.strip() == f"geo-tui: {path}: primary.registry: must be an http:// or https:// URL"
