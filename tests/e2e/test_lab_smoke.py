"""The test lab against real CNCF Distribution 2.8 and skopeo: if these fail, no e2e result means anything."""

from __future__ import annotations

import json
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.support import oci
from tests.support.distribution import Distribution, parse_access_line
from tests.support.keys import TestKeyPair
from tests.support.libtrust import b64url, b64url_decode, verify_pretty
from tests.support.push import RawPusher, skopeo_push
from tests.support.token_server import TokenServer

pytestmark = pytest.mark.timeout(120)


def test_key_pair_kid_cert_and_key_file(key_pair: TestKeyPair, tmp_path: Path) -> None:
    assert re.fullmatch(r"([A-Z2-7]{4}:){11}[A-Z2-7]{4}", key_pair.kid)
    key_path, cert_path = key_pair.write(tmp_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert cert_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    token = key_pair.mint([{"type": "repository", "name": "a/b", "actions": ["pull"]}], "iss-x", "svc-y")
    assert jwt.get_unverified_header(token)["kid"] == key_pair.kid
    claims = jwt.decode(token, key_pair.private_key.public_key(), algorithms=["RS256"], audience="svc-y")
    assert (
        claims["iss"] == "iss-x"
        and claims["nbf"] == claims["iat"] - 5
        and claims["access"][0]["name"] == "a/b"
    )


def test_access_log_line_parser() -> None:
    line = '127.0.0.1 - - [29/Nov/2026:07:08:46 +0000] "HEAD /v2/foo/manifests/v1 HTTP/1.1" 404 96 "" "curl"'
    entry = parse_access_line(line)
    assert entry is not None
    assert (entry.method, entry.uri, entry.status, entry.size) == (
        "HEAD",
        "/v2/foo/manifests/v1",
        404,
        96,
    )
    assert parse_access_line('time="2026-11-29T07:08:46Z" level=info msg="response completed"') is None


def test_skopeo_pushes_docker_oci_and_multi_arch_from_layout(
    primary: Distribution, primary_pusher: RawPusher, token_server: TokenServer, tmp_path: Path
) -> None:
    images = {
        "docker": oci.docker_image(1),
        "oci": oci.oci_image(2),
        "multi": oci.multi_arch(3),
        "dlist": oci.multi_arch(4, docker=True),
    }
    layout = oci.write_oci_layout(tmp_path / "layout", images)
    token_server.clear()
    for tag, node in images.items():
        skopeo_push(layout, tag, primary.url, f"lab/{tag}")
        got = primary_pusher.get_manifest(f"lab/{tag}", tag)
        assert got.status_code == 200
        assert got.headers["Content-Type"] == node.media_type
        assert got.content == node.manifest  # --preserve-digests: byte for byte
        for child in node.children:
            assert primary_pusher.head_manifest(f"lab/{tag}", child.digest).status_code == 200
        for blob in node.all_blobs().values():
            assert primary_pusher.blob_exists(f"lab/{tag}", blob.digest)
    # skopeo found the realm through Distribution's WWW-Authenticate and asked it for push rights.
    assert any("repository:lab/multi:pull,push" in r.scopes for r in token_server.requests)


@pytest.mark.distribution_only("Distribution re-signs schema 1 on GET; the lab serves the pushed bytes")
def test_schema1_signature_is_verified_and_accepted(
    primary: Distribution, primary_pusher: RawPusher, secondary: Distribution
) -> None:
    node = oci.schema1_image("lab/legacy", "v1")
    assert verify_pretty(node.manifest) == node.signed_payload

    tampered = _flip_signature_bit(node.manifest)
    for blob in node.blobs:  # (blobs first, so the refusal can only be about the signature)
        primary_pusher.push_blob("lab/legacy", blob)
    refused = primary_pusher.request(
        "PUT",
        "/v2/lab/legacy/manifests/v1",
        repository="lab/legacy",
        content=tampered,
        headers={"Content-Type": oci.SCHEMA1_SIGNED},
    )
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["code"] == "MANIFEST_UNVERIFIED"

    assert primary_pusher.push_tree("lab/legacy", node, "v1") == node.digest  # PUT answered 201
    got = primary_pusher.get_manifest("lab/legacy", "v1")
    assert got.status_code == 200
    assert got.headers["Content-Type"] == oci.SCHEMA1_SIGNED
    assert got.headers["Docker-Content-Digest"] == node.digest
    # Same payload, but re-signed by the registry's own key on every GET: not the bytes we pushed.
    assert verify_pretty(got.content) == node.signed_payload
    assert got.content != node.manifest

    with RawPusher.for_registry(secondary) as plain:  # no schema1 compatibility
        for blob in node.blobs:
            plain.push_blob("lab/legacy", blob)
        rejected = plain.request(
            "PUT",
            "/v2/lab/legacy/manifests/v1",
            repository="lab/legacy",
            content=node.manifest,
            headers={"Content-Type": oci.SCHEMA1_SIGNED},
        )
        assert rejected.status_code >= 400


def test_raw_pusher_formats_skopeo_cannot_make(primary: Distribution, primary_pusher: RawPusher) -> None:
    subject = oci.oci_image(10)
    artifact = oci.oci_artifact(subject, artifact_type="application/vnd.example.sbom.v1")
    fallback_tag, fallback = oci.referrers_fallback(subject, [artifact])
    pushes: list[tuple[str, oci.ManifestNode, str]] = [
        ("lab/nested", oci.oci_index([oci.multi_arch(11), oci.oci_image(12)]), "v1"),
        ("lab/cache", oci.buildkit_cache_index(13), "buildcache"),
        ("lab/cache-manifest", oci.buildkit_cache_manifest(14), "buildcache"),
        ("lab/signed", subject, "v1"),
        ("lab/signed", fallback, fallback_tag),
    ]
    for repo, node, tag in pushes:
        assert primary_pusher.push_tree(repo, node, tag) == node.digest
        got = primary_pusher.get_manifest(repo, tag)
        assert (got.status_code, got.content) == (200, node.manifest)
    assert fallback_tag == "sha256-" + subject.digest.removeprefix("sha256:")
    assert (
        primary_pusher.get_manifest("lab/signed", artifact.digest).json()["subject"]["digest"]
        == subject.digest
    )
    assert primary_pusher.list_tags("lab/signed") == sorted(["v1", fallback_tag])
    assert primary_pusher.catalog() == ["lab/cache", "lab/cache-manifest", "lab/nested", "lab/signed"]


def test_access_log_counts_requests_after_mark(primary: Distribution, primary_pusher: RawPusher) -> None:
    image = oci.oci_image(20)
    primary_pusher.push_tree("lab/app", image, "v1")
    mark = primary.mark()
    for _ in range(3):
        assert primary_pusher.head_manifest("lab/app", "v1").status_code == 200
    assert primary_pusher.blob_exists("lab/app", image.blobs[0].digest)
    assert httpx.head(f"{primary.url}/v2/lab/app/manifests/v1").status_code == 401  # no token
    assert primary.wait_for_requests(5, method="HEAD", since_mark=mark) == 5
    assert primary.count_requests("HEAD", "/manifests/", since_mark=mark) == 4
    assert primary.count_requests("HEAD", "/blobs/", since_mark=mark) == 1
    assert primary.count_requests("HEAD", since_mark=mark, status=401) == 1
    assert primary.count_requests("PUT", "/manifests/v1") == 1  # before the mark


def test_pull_only_token_cannot_upload(primary: Distribution, primary_pusher: RawPusher) -> None:
    primary_pusher.push_tree("lab/app", oci.oci_image(30), "v1")
    with RawPusher(primary.url, token=primary.token("lab/app", "pull")) as reader:
        assert reader.get_manifest("lab/app", "v1").status_code == 200
        assert reader.request("POST", "/v2/lab/app/blobs/uploads/").status_code == 401
        assert reader.request("GET", "/v2/lab/other/tags/list").status_code == 401  # another repository


def test_stop_and_start_keep_content_and_port(primary: Distribution, primary_pusher: RawPusher) -> None:
    image = oci.docker_image(40)
    primary_pusher.push_tree("lab/app", image, "v1")
    port = primary.port
    primary.stop()
    assert not primary.running
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{primary.url}/v2/", timeout=2)
    primary.start()
    assert primary.port == port
    assert primary_pusher.get_manifest("lab/app", "v1").content == image.manifest


def test_delete_by_tag_is_refused_delete_by_digest_works(
    primary: Distribution, primary_pusher: RawPusher
) -> None:
    image = oci.oci_image(50)
    primary_pusher.push_tree("lab/app", image, "v1")
    by_tag = primary_pusher.delete_manifest("lab/app", "v1")
    # Distribution 2.8 parses the reference as a digest: a tag is "digest invalid", and nothing is deleted.
    assert by_tag.status_code == 400
    assert by_tag.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert primary_pusher.list_tags("lab/app") == ["v1"]
    assert primary_pusher.delete_manifest("lab/app", image.digest).status_code == 202
    assert primary_pusher.head_manifest("lab/app", "v1").status_code == 404


def test_realm_with_basic_credentials_and_skopeo_creds(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> None:
    with TokenServer(key_pair, username="geo", password="s3cret") as realm:
        registry = registry_factory("guarded", token_realm=realm.url)
        assert httpx.get(realm.url, params={"service": "container_registry"}).status_code == 401
        layout = oci.write_oci_layout(tmp_path / "layout", {"v1": oci.oci_image(60)})
        skopeo_push(layout, "v1", registry.url, "lab/app", creds="geo:s3cret")
        assert {r.username for r in realm.requests if r.status == 200} == {"geo"}


def test_auth_none_and_notifications_reach_the_endpoint(
    registry_factory: Callable[..., Distribution], event_sink: _Sink
) -> None:
    registry = registry_factory(
        "open", auth="none", notification_url=event_sink.url, notification_secret="t0ken"
    )
    assert httpx.get(f"{registry.url}/v2/").status_code == 200
    image = oci.oci_image(70)
    with RawPusher(registry.url) as pusher:
        pusher.push_tree("lab/app", image, "v1")
    headers, event = _wait(lambda: _manifest_push_events(event_sink), timeout=10)[0]
    assert headers["Authorization"] == "t0ken"
    assert headers["Content-Type"] == "application/vnd.docker.distribution.events.v1+json"
    assert (event["target"]["digest"], event["target"].get("tag")) == (image.digest, "v1")


def _manifest_push_events(sink: _Sink) -> list[Any]:
    return [
        (headers, event)
        for headers, body in list(sink)
        for event in body["events"]
        if event["action"] == "push" and event["target"]["mediaType"] == oci.OCI_MANIFEST
    ]


def _wait(probe: Callable[[], list[Any]], timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while not (found := probe()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found, "nothing arrived in time"
    return found


class _Sink(list[tuple[dict[str, str], dict[str, Any]]]):
    """Notification POSTs received: (headers, JSON body)."""

    url = ""


@pytest.fixture
def event_sink() -> Iterator[_Sink]:
    """A bare HTTP endpoint recording Distribution's notification POSTs (headers, JSON body)."""
    received = _Sink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append((dict(self.headers), json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    received.url = f"http://127.0.0.1:{server.server_address[1]}/events"
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


def _flip_signature_bit(document: bytes) -> bytes:
    signature = json.loads(document)["signatures"][0]["signature"]
    raw = bytearray(b64url_decode(signature))
    raw[5] ^= 1
    return document.replace(signature.encode(), b64url(bytes(raw)).encode())
