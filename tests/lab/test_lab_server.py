"""LabRegistry as the demo uses it: several in one process, restarts on the same port, token trust from a
certificate, a public key or an x5c chain, bounded memory for big blobs, skopeo both ways, clear errors."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from geo_tui.lab import LabRegistry, LabStartError
from geo_tui.registry import libtrust_key_id
from tests.support import oci
from tests.support.binaries import find_binary
from tests.support.distribution import Distribution
from tests.support.keys import TestKeyPair, repository_scope
from tests.support.push import RawPusher, skopeo_push

pytestmark = pytest.mark.timeout(120)

ISSUER, SERVICE = "gitlab-issuer", "container_registry"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_lab_imports_neither_textual_nor_the_engine() -> None:
    code = (
        "import sys; sys.modules['textual'] = None\n"
        "import geo_tui.lab\n"
        "loaded = [m for m in sys.modules if m.startswith(('textual', 'geo_tui.engine', 'geo_tui.config'))]\n"
        "assert not [m for m in loaded if sys.modules[m]], loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_three_labs_in_one_process_restart_on_their_ports(tmp_path: Path) -> None:
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    loggers = {name: list(logging.getLogger(name).handlers) for name in ("", "uvicorn", "uvicorn.error")}
    labs = [LabRegistry(tmp_path / name, name=name, auth="none") for name in ("primary", "eu", "us")]
    try:
        for lab in labs:
            assert lab.start() is lab and lab.running
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
        # the process's logging is left alone (a console may own the terminal)
        assert {name: logging.getLogger(name).handlers for name in loggers} == loggers
        assert len({lab.port for lab in labs}) == 3
        image = oci.oci_image(1)
        with RawPusher(labs[1].url) as pusher:
            pusher.push_tree("demo/app", image, "v1")
        port = labs[1].port
        labs[1].stop()
        labs[1].stop()  # idempotent
        assert not labs[1].running and not _port_open(port)
        assert httpx.get(f"{labs[2].url}/v2/").status_code == 200  # the others keep serving
        labs[1].start()
        assert labs[1].port == port and labs[1].url == f"http://127.0.0.1:{port}"
        with RawPusher(labs[1].url) as pusher:
            assert pusher.get_manifest("demo/app", "v1").content == image.manifest
        response = httpx.get(f"{labs[0].url}/v2/")
        assert (response.status_code, response.json()) == (200, {})
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    finally:
        for lab in labs:
            lab.stop()


def test_a_taken_port_is_one_clear_error(tmp_path: Path) -> None:
    with LabRegistry(tmp_path / "a", auth="none") as first:
        second = LabRegistry(tmp_path / "b", name="second", auth="none", port=first.port)
        with pytest.raises(LabStartError, match=rf"second: cannot listen on 127.0.0.1:{first.port}"):
            second.start()
        assert not second.running


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"auth": "token"}, "token auth needs trust_pem"),
        ({"auth": "basic"}, "auth must be 'token' or 'none'"),
        ({"auth": "token", "trust_pem": b"-----BEGIN CERTIFICATE-----\nnope\n"}, "trust_pem"),
        ({"auth": "token", "trust_pem": b"not pem at all"}, "trust_pem"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        LabRegistry(tmp_path, **options)
    assert "\n" not in str(raised.value)


def _certificate(
    key: Any, subject: str, issuer_key: Any = None, issuer: str | None = None
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer or subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(issuer_key or key, hashes.SHA256())
    )


def _claims(repository: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": SERVICE,
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
        "access": [repository_scope(repository, "pull")],
    }


def _status(lab: LabRegistry, token: str) -> int:
    response = httpx.get(f"{lab.url}/v2/x/app/tags/list", headers={"Authorization": f"Bearer {token}"})
    return response.status_code


def test_es256_tokens_trusted_through_a_public_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with LabRegistry(tmp_path, trust_pem=pem, issuer=ISSUER, service=SERVICE) as lab:
        kid = libtrust_key_id(key.public_key())
        good = jwt.encode(_claims("x/app"), key, algorithm="ES256", headers={"kid": kid})
        other_kid = jwt.encode(_claims("x/app"), key, algorithm="ES256", headers={"kid": "AAAA:" + kid[5:]})
        assert _status(lab, good) == 404  # authorized: the repository is simply unknown
        assert _status(lab, other_kid) == 401


def test_x5c_chains_to_the_trusted_certificate(tmp_path: Path) -> None:
    ca_key, leaf_key, rogue_key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in "abc"
    )
    ca = _certificate(ca_key, "geo-tui lab CA")
    leaf = _certificate(leaf_key, "token signer", ca_key, "geo-tui lab CA")
    rogue = _certificate(leaf_key, "token signer", rogue_key, "geo-tui lab CA")

    def signed_with(chain: list[x509.Certificate]) -> str:
        x5c = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain]
        return jwt.encode(_claims("x/app"), leaf_key, algorithm="RS256", headers={"x5c": x5c})

    trust = ca.public_bytes(serialization.Encoding.PEM)
    with LabRegistry(tmp_path, trust_pem=trust, issuer=ISSUER, service=SERVICE) as lab:
        assert _status(lab, signed_with([leaf])) == 404
        assert _status(lab, signed_with([leaf, ca])) == 404
        assert _status(lab, signed_with([rogue])) == 401


def test_a_big_blob_streams_through_in_bounded_memory(tmp_path: Path, key_pair: TestKeyPair) -> None:
    size, piece = 48 * 1024 * 1024, 1024 * 1024
    chunk = hashlib.sha256(b"lab").digest() * (piece // 32)
    digest = "sha256:" + hashlib.sha256(chunk * (size // piece)).hexdigest()
    token_header = {"Authorization": "Bearer " + key_pair.mint([repository_scope("big/app", "pull", "push")])}
    lab = LabRegistry(
        tmp_path / "lab",
        trust_pem=key_pair.cert_pem,
        issuer="geo-tui-test",
        access_log=tmp_path / "access.log",
    )

    def body() -> Iterator[bytes]:
        for _ in range(size // piece):
            yield chunk

    with lab, httpx.Client(base_url=lab.url, headers=token_header, timeout=60) as client:
        tracemalloc.start()
        try:
            started = client.post("/v2/big/app/blobs/uploads/")
            patched = client.patch(started.headers["Location"], content=body())
            assert patched.headers["Range"] == f"0-{size - 1}"
            done = client.put(f"{patched.headers['Location']}&digest={digest}")
            assert done.status_code == 201, done.text
            hasher, received = hashlib.sha256(), 0
            with client.stream("GET", f"/v2/big/app/blobs/{digest}") as response:
                for part in response.iter_bytes():
                    hasher.update(part)
                    received += len(part)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert (received, "sha256:" + hasher.hexdigest()) == (size, digest)
    print(f"lab: peak traced memory {peak / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB blob")
    assert peak < 12 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB blob"
    assert "Bearer" not in (tmp_path / "access.log").read_text()  # no token in the access log


def test_skopeo_pushes_into_and_pulls_from_the_registry(
    registry_factory: Callable[..., Distribution], tmp_path: Path
) -> None:
    registry = registry_factory("skopeo")
    images = {"v1": oci.multi_arch(5), "docker": oci.docker_image(6)}
    layout = oci.write_oci_layout(tmp_path / "layout", images)
    for tag in images:
        skopeo_push(layout, tag, registry.url, "pull/app")
    destination = tmp_path / "pulled"
    command = [
        find_binary("skopeo"), "--insecure-policy", "copy", "--src-tls-verify=false", "--all",
        "--preserve-digests", f"docker://{registry.host}/pull/app:v1", f"oci:{destination}:v1",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    index = (destination / "index.json").read_text()
    assert images["v1"].digest in index
    for child in images["v1"].walk():
        assert (destination / "blobs" / "sha256" / child.digest.removeprefix("sha256:")).exists()
