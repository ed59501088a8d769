"""Blobs through the distribution API: HEAD, streamed downloads, mounts and streamed uploads."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urljoin

import httpx

from ._auth import Scope
from ._client_base import ClientBase, _validate_digest
from ._errors import DigestMismatch, RegistryError, RegistryUnavailable
from ._names import validate_repository_name
from ._session import Op, Session, release


class BlobStream:
    """The body of a blob being downloaded, as raw bytes.

    `size` is the Content-Length, if the registry sent one. `chunks()` yields the bytes as they arrive
    (up to 256 KiB at a time: what the kernel had) and, once the body is complete, raises
    DigestMismatch if it does not hash to `digest`. A transport failure in the middle raises
    RegistryUnavailable; a body still not whole at its deadline (its size at the minimum rate, from
    the first read) raises TransferTooSlow.
    """

    def __init__(self, response: httpx.Response, digest: str, session: Session, op: Op) -> None:
        self._response = response
        self._session = session
        self._op = op
        self.digest = digest
        length = response.headers.get("content-length", "")
        self.size: int | None = int(length) if length.isdigit() else None

    async def chunks(self, *, verify: bool = True) -> AsyncIterator[bytes]:
        """The blob's bytes, verified against its digest at the end.

        ``verify=False`` skips the hashing, for a stream that goes straight into a registry upload:
        the receiving registry verifies the digest itself and refuses a mismatch."""
        algorithm = self.digest.split(":", 1)[0]
        hasher = hashlib.new(algorithm) if verify else None
        # Raw: the digest is over the stored bytes, never over a content-decoded form. As they come:
        # gathering them into 1 MiB pieces first cost ~12% of a backfill's CPU in httpx's chunker.
        raw = self._response.aiter_raw()
        received = 0
        # From the first read, not from the answer: a consumer waiting for its own connection elsewhere
        # (the secondary's pool) is not this registry being slow.
        allowed = self._session.deadline(self.size)
        deadline = asyncio.get_running_loop().time() + allowed if allowed is not None else None
        try:
            while True:
                # The deadline covers the waits for the registry, never the time the consumer takes.
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(raw)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise self._session.too_slow(self._op, self.size, received) from None
                received += len(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                yield chunk
        except httpx.TransportError as exc:
            detail = f"{type(exc).__name__} after the body started: {exc}"
            raise self._session.error(RegistryUnavailable, self._op, detail=detail) from exc
        if hasher is None:
            return
        actual = f"{algorithm}:{hasher.hexdigest()}"
        if actual != self.digest:
            raise self._session.error(DigestMismatch, self._op, detail=f"content hashes to {actual}")


def _with_digest(location: str, digest: str) -> str:
    # The Location carries its own state (_state=...); the digest is added to it, never replacing it.
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


class BlobCalls(ClientBase):
    """A repository's blobs: sizes, downloads as streams, mounts, uploads streamed end to end."""

    async def head_blob(self, repository: str, digest: str) -> int | None:
        """The size of a blob, or None if the repository does not have it."""
        _validate_digest(digest)
        op = Op("HEAD blob", repository, digest)
        response = await self._session.open(
            op,
            "HEAD",
            self._url(repository, "blobs", digest),
            scopes=[Scope.repository(repository, "pull")],
            expect={200, 404},
            follow_redirects=True,
        )
        await release(response)
        if response.status_code == 404:
            return None
        length = response.headers.get("content-length", "")
        if not length.isdigit():
            raise self._session.error(RegistryError, op, status=200, detail="answer without Content-Length")
        return int(length)

    @asynccontextmanager
    async def stream_blob(self, repository: str, digest: str) -> AsyncIterator[BlobStream]:
        """Download a blob: ``async with client.stream_blob(repo, digest) as blob:`` then
        ``async for chunk in blob.chunks()``. Raises NotFound if the repository does not have it.

        Redirects (to object storage) are followed; httpx drops the Authorization header when a
        redirect leaves the registry's origin.
        """
        _validate_digest(digest)
        op = Op("GET blob", repository, digest)
        response = await self._session.open(
            op,
            "GET",
            self._url(repository, "blobs", digest),
            scopes=[Scope.repository(repository, "pull")],
            expect={200},
            pool="blob",
            headers={"Accept-Encoding": "identity"},
            follow_redirects=True,
        )
        try:
            yield BlobStream(response, digest, self._session, op)
        finally:
            await response.aclose()

    async def mount_blob(self, repository: str, digest: str, from_repository: str) -> str | None:
        """Mount a blob from another repository of this registry.

        None if it was mounted (201). If the registry opened an upload instead (202: the source does
        not have it, or mounting is not allowed), the absolute upload URL to pass to upload_blob.
        """
        _validate_digest(digest)
        validate_repository_name(from_repository)
        op = Op("mount blob", repository, digest)
        url = self._url(repository, "blobs", f"uploads/?mount={digest}&from={from_repository}")
        scopes = [Scope.repository(repository, "pull", "push"), Scope.repository(from_repository, "pull")]
        response = await self._session.open(op, "POST", url, scopes=scopes, expect={201, 202})
        await self._read(op, response, 64 * 1024)
        return None if response.status_code == 201 else self._location(op, response)

    async def open_upload(self, repository: str, digest: str | None = None) -> str:
        """Open an upload session of `repository` (``POST .../blobs/uploads/``): its absolute URL, to pass
        to upload_blob as `location` (a caller that opens one while it reads the blob saves a round trip).
        A session that gets no upload should be cancelled (cancel_upload). `digest`: the blob it is for,
        named by an error as upload_blob names it."""
        validate_repository_name(repository)
        if digest is not None:
            _validate_digest(digest)
        op = Op("upload blob", repository, digest)
        scopes = [Scope.repository(repository, "pull", "push")]
        response = await self._session.open(
            op, "POST", self._url(repository, "blobs", "uploads/"), scopes=scopes, expect={202}
        )
        await self._read(op, response, 64 * 1024)
        return self._location(op, response)

    async def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int | None,
        chunks: AsyncIterable[bytes],
        *,
        location: str | None = None,
        chunked: bool = False,
    ) -> None:
        """Upload a blob from `chunks`, streamed end to end (never held in memory or on disk).

        Opens an upload session unless `location` (from mount_blob) is given, then sends one
        ``PUT <location>&digest=`` with the body, or with `chunked`, one ``PATCH`` with the body (chunked
        transfer encoding) and an empty ``PUT``. The registry verifies the digest. Not retried: `chunks`
        cannot be replayed.

        A failed upload's session is cancelled (``DELETE``), so sessions do not pile up on the registry.
        With `chunked`, a failure of `chunks` itself (the source broke off) ends the PATCH body there, so
        the session's state stays known and the cancel works even on Distribution, which refuses a
        ``DELETE`` whose ``_state`` does not match what it holds; the source's exception is then raised.
        """
        _validate_digest(digest)
        validate_repository_name(repository)
        op = Op("upload blob", repository, digest)
        scopes = [Scope.repository(repository, "pull", "push")]
        if location is None:
            response = await self._session.open(
                op, "POST", self._url(repository, "blobs", "uploads/"), scopes=scopes, expect={202}
            )
            await self._read(op, response, 64 * 1024)
            location = self._location(op, response)
        else:
            location = urljoin(self.base_url + "/", location)
        try:
            await self._send_blob(op, scopes, location, digest, size, chunks, chunked)
        except _UploadFailed as failed:
            await self.cancel_upload(repository, failed.location)
            raise failed.cause from None

    async def _send_blob(
        self,
        op: Op,
        scopes: list[Scope],
        location: str,
        digest: str,
        size: int | None,
        chunks: AsyncIterable[bytes],
        chunked: bool,
    ) -> None:
        """The body of upload_blob; raises _UploadFailed with the session's last known Location."""
        headers = {"Content-Type": "application/octet-stream"}
        body: bytes | AsyncIterable[bytes] = chunks
        try:
            if chunked:
                source_failure: list[Exception] = []
                response = await self._session.open(
                    op,
                    "PATCH",
                    location,
                    scopes=scopes,
                    expect={202, 204},
                    pool="blob",
                    headers=headers,
                    content=_ending_on_failure(chunks, source_failure),
                    expected_bytes=size,
                )
                await self._read(op, response, 64 * 1024)
                location = self._location(op, response)
                if source_failure:
                    raise source_failure[0]
                headers = {"Content-Type": "application/octet-stream", "Content-Length": "0"}
                body = b""
            elif size is not None:
                headers["Content-Length"] = str(size)
            response = await self._session.open(
                op,
                "PUT",
                _with_digest(location, digest),
                scopes=scopes,
                expect={201, 204},
                pool="blob",
                headers=headers,
                content=body,
                retry=False,
                expected_bytes=size if body is chunks else 0,  # None: a stream of unknown size, no deadline
            )
            await self._read(op, response, 64 * 1024)
        except Exception as exc:
            raise _UploadFailed(location, exc) from exc

    async def cancel_upload(self, repository: str, location: str) -> bool:
        """Cancel an upload session of `repository` (``DELETE <location>``), best effort: whether the
        registry confirmed it. One that no longer knows the session, or refuses it (Distribution, when the
        ``_state`` does not match what the session holds), answers 404."""
        op = Op("cancel upload", repository)
        url = urljoin(self.base_url + "/", location)
        scopes = [Scope.repository(repository, "delete")]  # Distribution asks `delete` for any DELETE
        try:
            response = await self._session.open(
                op, "DELETE", url, scopes=scopes, expect={202, 204}, retry=False
            )
        except RegistryError:
            return False
        await release(response)
        return True


class _UploadFailed(Exception):
    """An upload that failed, with the Location its session was last known at (to cancel it)."""

    def __init__(self, location: str, cause: Exception) -> None:
        super().__init__(str(cause))
        self.location = location
        self.cause = cause


async def _ending_on_failure(chunks: AsyncIterable[bytes], failures: list[Exception]) -> AsyncIterator[bytes]:
    """`chunks`, ending early (and noting why in `failures`) when the source fails part-way."""
    try:
        async for chunk in chunks:
            yield chunk
    except Exception as exc:  # the source broke off: end the body cleanly; the caller raises it
        failures.append(exc)
