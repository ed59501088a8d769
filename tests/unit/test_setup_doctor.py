"""`geo-tui doctor` without registries: a registry that never answers costs a bounded time, a port held by
something else is not mistaken for `geo-tui serve`, and a bad config exits 2."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from geo_tui.cli import main
from geo_tui.config import load_config
from geo_tui.setup.doctor import format_results, run_doctor

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


class _TaskDown(_NotGeoTui):
    def do_GET(self) -> None:  # what geo-tui serve answers while its discovery task is down
        body = json.dumps({"status": "task down: discovery", "tasks_down": ["discovery"]}).encode()
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def serve_with_a_task_down() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TaskDown)
    threading.Thread(target=server.serve_forever, daemon=True).start()
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


class _V2(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/v2/" else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tls_v2(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An HTTPS server answering GET /v2/, with a certificate from a private CA (the CA file is yielded)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "server.crt", tmp_path / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _V2)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], cert_file
    finally:
        server.shutdown()
        server.server_close()


async def test_an_unknown_tls_certificate_points_at_ca_file(tmp_path: Path, tls_v2: tuple[int, Path]) -> None:
    port, ca_file = tls_v2
    path = write(tmp_path, f"https://127.0.0.1:{port}", f"http://127.0.0.1:{closed_port()}", closed_port())
    first = (await run_doctor(load_config(path), timeout=2.0))[0]
    assert first.status == "FAIL" and "CERTIFICATE_VERIFY_FAILED" in first.detail
    assert first.fix is not None and first.fix.startswith(f"set primary.ca_file in {path}")
    document = tomllib.loads(path.read_text())
    document["primary"]["ca_file"] = str(ca_file)
    path.write_text(tomli_w.dumps(document))
    first = (await run_doctor(load_config(path), timeout=2.0))[0]
    assert first.status == "ok" and first.check == "answers", first.line()


async def test_a_serve_with_a_task_down_is_named_as_such_not_as_a_stranger(
    tmp_path: Path, serve_with_a_task_down: int
) -> None:
    path = write(
        tmp_path,
        f"http://127.0.0.1:{closed_port()}",
        f"http://127.0.0.2:{closed_port()}",
        serve_with_a_task_down,
    )
    lines = format_results(await run_doctor(load_config(path), timeout=1.0), as_json=False).splitlines()
    assert lines[-2].startswith("FAIL notifications: geo-tui serve on 127.0.0.1:"), lines[-2]
    assert "has a background task down: discovery" in lines[-2] and "its log says why" in lines[-2]
