"""RegistryClient blob transfers against httpx.MockTransport: streams, uploads, PATCH fallback, mounts."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest

from geo_tui.registry import (
    DigestMismatch,
    NotFound,
    RegistryError,
    RegistryRejected,
    RegistryUnavailable,
    compute_digest,
)
from tests.unit.test_registry_client import BASE, RecordingAuth, chunks_of, make_client, oci_error

# --- blobs ------------------------------------------------------------------------------------

BLOB = bytes(range(256)) * 10_000  # 2.5 MB: several chunks
BLOB_DIGEST = compute_digest(BLOB)


class StreamOf(httpx.AsyncByteStream):
    """A response body that arrives over time, as from a socket (never pre-read by httpx)."""

    def __init__(self, data: bytes, size: int = 64 * 1024) -> None:
        self.data = data
        self.size = size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.data), self.size):
            yield self.data[i : i + self.size]


class BrokenStream(httpx.AsyncByteStream):
    """1.5 MB, then a connection reset."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in StreamOf(BLOB[:1_500_000]):
            yield chunk
        raise httpx.ReadError("connection reset by peer")


async def test_stream_blob_yields_raw_verified_chunks() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept-encoding"] == "identity"
        # A Content-Encoding must not make the client decode: the digest is over the stored bytes.
        headers = {"Content-Length": str(len(BLOB)), "Content-Encoding": "gzip"}
        return httpx.Response(200, stream=StreamOf(BLOB), headers=headers)

    client, _, _ = make_client(handler)
    async with client, client.stream_blob("a/b", BLOB_DIGEST) as blob:
        assert blob.size == len(BLOB)
        chunks = [chunk async for chunk in blob.chunks()]
    assert b"".join(chunks) == BLOB
    assert max(len(c) for c in chunks) <= 1024 * 1024 and len(chunks) >= 3


async def test_stream_blob_with_wrong_content_raises_digest_mismatch_at_the_end() -> None:
    client, _, _ = make_client(lambda r: httpx.Response(200, stream=StreamOf(BLOB[:-1] + b"!")))
    async with client, client.stream_blob("a/b", BLOB_DIGEST) as blob:
        seen = 0
        with pytest.raises(DigestMismatch, match="eu: GET blob a/b@sha256:"):
            async for chunk in blob.chunks():
                seen += len(chunk)
    assert seen == len(BLOB)


async def test_reset_mid_blob_surfaces_from_chunks() -> None:
    client, _, _ = make_client(lambda r: httpx.Response(200, stream=BrokenStream()))
    async with client, client.stream_blob("a/b", BLOB_DIGEST) as blob:
        received = b""
        with pytest.raises(RegistryUnavailable, match="ReadError"):
            async for chunk in blob.chunks():
                received += chunk
    assert received == BLOB[:1_500_000]  # what arrived went on as it came; then the error


async def test_stream_blob_not_found_and_redirect_without_credentials() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(compute_digest(b"missing")):
            return oci_error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        if request.url.host == "reg.test":
            return httpx.Response(307, headers={"Location": "https://storage.test/blob?sig=1"})
        return httpx.Response(200, stream=StreamOf(BLOB))

    client, recorder, _ = make_client(handler, RecordingAuth())
    async with client:
        with pytest.raises(NotFound, match="BLOB_UNKNOWN"):
            async with client.stream_blob("a/b", compute_digest(b"missing")):
                pass
        async with client.stream_blob("a/b", BLOB_DIGEST) as blob:
            assert b"".join([c async for c in blob.chunks()]) == BLOB
    storage = recorder.requests[-1]
    assert storage.url.host == "storage.test" and "authorization" not in storage.headers
    assert recorder.requests[-2].headers["authorization"].startswith("Bearer ")


async def test_head_blob() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(BLOB_DIGEST):
            return httpx.Response(200, headers={"Content-Length": "42"})
        return httpx.Response(404)

    client, _, _ = make_client(handler)
    async with client:
        assert await client.head_blob("a/b", BLOB_DIGEST) == 42
        assert await client.head_blob("a/b", compute_digest(b"no")) is None


class FakeUploads:
    """Upload endpoints: POST opens a session at `location`; PATCH moves it; PUT ?digest= completes."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.received = b""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": self.location})
        if request.method == "PATCH":
            self.received += request.content
            return httpx.Response(202, headers={"Location": "/v2/a/b/blobs/uploads/u2?_state=after-patch"})
        if request.method == "PUT":
            self.received += request.content
            if compute_digest(self.received) != request.url.params.get("digest"):
                return oci_error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
            return httpx.Response(201, headers={"Docker-Content-Digest": request.url.params["digest"]})
        return httpx.Response(405)


@pytest.mark.parametrize(
    ("location", "expected_put"),
    [
        (
            "/v2/a/b/blobs/uploads/u1?_state=x",
            f"{BASE}/v2/a/b/blobs/uploads/u1?_state=x&digest={BLOB_DIGEST}",
        ),
        ("/v2/a/b/blobs/uploads/u1", f"{BASE}/v2/a/b/blobs/uploads/u1?digest={BLOB_DIGEST}"),
        (
            f"{BASE}/v2/a/b/blobs/uploads/u1?_state=y",
            f"{BASE}/v2/a/b/blobs/uploads/u1?_state=y&digest={BLOB_DIGEST}",
        ),
    ],
)
async def test_monolithic_upload_keeps_the_location_query(location: str, expected_put: str) -> None:
    uploads = FakeUploads(location)
    auth = RecordingAuth()
    client, recorder, _ = make_client(uploads, auth)
    async with client:
        await client.upload_blob("a/b", BLOB_DIGEST, len(BLOB), chunks_of(BLOB, 100_000))
    post, put = recorder.requests
    assert (post.method, str(post.url)) == ("POST", f"{BASE}/v2/a/b/blobs/uploads/")
    assert (put.method, str(put.url)) == ("PUT", expected_put)
    assert put.headers["content-length"] == str(len(BLOB))
    assert put.headers["content-type"] == "application/octet-stream"
    assert "transfer-encoding" not in put.headers
    assert uploads.received == BLOB
    assert auth.scopes == [["repository:a/b:pull,push"]] * 2


async def test_upload_of_unknown_size_is_chunked_transfer() -> None:
    uploads = FakeUploads("/v2/a/b/blobs/uploads/u1?_state=x")
    client, recorder, _ = make_client(uploads)
    async with client:
        await client.upload_blob("a/b", BLOB_DIGEST, None, chunks_of(BLOB, 100_000))
    assert recorder.requests[-1].headers["transfer-encoding"] == "chunked"
    assert uploads.received == BLOB


async def test_chunked_patch_fallback() -> None:
    uploads = FakeUploads("/v2/a/b/blobs/uploads/u1?_state=x")
    client, recorder, _ = make_client(uploads)
    async with client:
        await client.upload_blob("a/b", BLOB_DIGEST, len(BLOB), chunks_of(BLOB, 100_000), chunked=True)
    _, patch, put = recorder.requests
    assert (patch.method, str(patch.url)) == ("PATCH", f"{BASE}/v2/a/b/blobs/uploads/u1?_state=x")
    assert patch.headers["content-type"] == "application/octet-stream"
    assert (put.method, str(put.url)) == (
        "PUT",
        f"{BASE}/v2/a/b/blobs/uploads/u2?_state=after-patch&digest={BLOB_DIGEST}",
    )
    assert put.content == b"" and put.headers["content-length"] == "0"
    assert uploads.received == BLOB


async def test_upload_is_not_retried_and_reports_the_rejection() -> None:
    uploads = FakeUploads("/v2/a/b/blobs/uploads/u1?_state=x")
    client, recorder, _ = make_client(uploads)
    async with client:
        with pytest.raises(RegistryRejected, match="400 DIGEST_INVALID"):
            await client.upload_blob("a/b", BLOB_DIGEST, 3, chunks_of(b"abc"))

    def failing(request: httpx.Request) -> httpx.Response:
        return uploads(request) if request.method == "POST" else httpx.Response(503)

    client, recorder, _ = make_client(failing)
    async with client:
        with pytest.raises(RegistryUnavailable, match=r"eu: upload blob a/b@sha256:[0-9a-f]+: 503"):
            await client.upload_blob("a/b", BLOB_DIGEST, len(BLOB), chunks_of(BLOB, 100_000))
    # not retried; the failed session is cancelled (issue 12: sessions piled up on secondaries)
    assert [r.method for r in recorder.requests] == ["POST", "PUT", "DELETE"]
    assert str(recorder.requests[-1].url) == f"{BASE}/v2/a/b/blobs/uploads/u1?_state=x"


async def test_chunked_upload_whose_source_breaks_ends_the_patch_and_cancels_the_session() -> None:
    """The source fails part-way: the PATCH body ends there (chunked transfer encoding), so the session's
    new Location is known, and the DELETE goes to it (Distribution refuses one with a stale _state)."""

    async def breaking_source() -> AsyncIterator[bytes]:
        yield b"abc"
        raise RegistryUnavailable("primary", "GET blob", "a/b", detail="ReadError after the body started")

    uploads = FakeUploads("/v2/a/b/blobs/uploads/u1?_state=x")
    client, recorder, _ = make_client(uploads)
    async with client:
        with pytest.raises(RegistryUnavailable, match="primary: GET blob a/b: ReadError"):
            await client.upload_blob("a/b", BLOB_DIGEST, len(BLOB), breaking_source(), chunked=True)
    _, patch, delete = recorder.requests
    assert (patch.method, patch.headers.get("transfer-encoding")) == ("PATCH", "chunked")
    assert "content-length" not in patch.headers
    assert uploads.received == b"abc", "the part before the break, and nothing committed"
    assert (delete.method, str(delete.url)) == (
        "DELETE",
        f"{BASE}/v2/a/b/blobs/uploads/u2?_state=after-patch",
    )


async def test_source_failure_propagates_through_the_upload() -> None:
    async def failing_source() -> AsyncIterator[bytes]:
        yield b"abc"
        raise DigestMismatch("primary", "GET blob", "a/b", detail="content hashes to something else")

    client, _, _ = make_client(FakeUploads("/v2/a/b/blobs/uploads/u1"))
    async with client:
        with pytest.raises(DigestMismatch, match="primary"):
            await client.upload_blob("a/b", BLOB_DIGEST, None, failing_source())


async def test_foreign_upload_location_gets_no_credentials() -> None:
    uploads = FakeUploads("https://uploads.test/session/1?sig=abc")
    client, recorder, _ = make_client(uploads, RecordingAuth())
    async with client:
        await client.upload_blob("a/b", BLOB_DIGEST, len(BLOB), chunks_of(BLOB, 500_000))
    post, put = recorder.requests
    assert "authorization" in post.headers
    assert put.url.host == "uploads.test" and "authorization" not in put.headers


@pytest.mark.parametrize("location", ["file:///etc/passwd", "http://[::1", ""])
async def test_a_bad_upload_location_is_a_registry_error(location: str) -> None:
    client, recorder, _ = make_client(FakeUploads(location))
    async with client:
        with pytest.raises(RegistryError, match=r"eu: upload blob a/b@sha256:[0-9a-f]+: .*(URL|Location)"):
            await client.upload_blob("a/b", BLOB_DIGEST, 3, chunks_of(b"abc"))
    assert [r.method for r in recorder.requests] == ["POST"]


async def test_mount_201_and_202() -> None:
    source_digest = compute_digest(b"there")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["mount"] == source_digest:
            return httpx.Response(201, headers={"Location": f"/v2/a/b/blobs/{source_digest}"})
        return httpx.Response(202, headers={"Location": "/v2/a/b/blobs/uploads/u9?_state=m"})

    auth = RecordingAuth()
    client, recorder, _ = make_client(handler, auth)
    async with client:
        assert await client.mount_blob("a/b", source_digest, "c/d") is None
        location = await client.mount_blob("a/b", BLOB_DIGEST, "c/d")
    assert location == f"{BASE}/v2/a/b/blobs/uploads/u9?_state=m"
    request = recorder.requests[0]
    assert request.method == "POST" and request.url.path == "/v2/a/b/blobs/uploads/"
    assert request.url.params["from"] == "c/d"
    assert auth.scopes[0] == ["repository:a/b:pull,push", "repository:c/d:pull"]

    uploads = FakeUploads("unused")
    client, recorder, _ = make_client(uploads)
    async with client:
        await client.upload_blob("a/b", BLOB_DIGEST, len(BLOB), chunks_of(BLOB, 500_000), location=location)
    [put] = recorder.requests  # no new upload session
    assert str(put.url) == f"{location}&digest={BLOB_DIGEST}"


async def test_ping_reports_latency() -> None:
    client, recorder, _ = make_client(lambda r: httpx.Response(200, json={}))
    async with client:
        latency = await client.ping()
    assert 0 <= latency < 5
    assert str(recorder.requests[0].url) == f"{BASE}/v2/"


def test_hash_of_blob_is_sha256() -> None:
    assert BLOB_DIGEST == "sha256:" + hashlib.sha256(BLOB).hexdigest()
