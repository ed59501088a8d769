"""Blob handlers of the lab registry: HEAD/GET/DELETE of blobs and the upload protocol.

Uploads: POST opens a session (with ``?mount=&from=``, it links a blob the caller may pull from another
repository instead: 201; else a session: 202), PATCH appends, PUT
``?digest=`` finishes. Bytes are written and hashed as they arrive, piece by piece, and never held whole;
a finished upload whose digest does not match is thrown away (400 DIGEST_INVALID), as Distribution does.

The ``_state`` of each Location is signed with an HMAC under the registry's secret, as Distribution signs it
with ``http.secret`` (the MAC, then the JSON, in URL-safe base64): a state that was altered is refused
(404 BLOB_UPLOAD_INVALID). Progress and storage are keyed by one spelling of the upload id, and one session
takes one request at a time, so the running hash always covers exactly the bytes of the file (issue 12).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geo_tui.registry import is_valid_digest, is_valid_repository_name

from .asgi import Failure, Request, Response
from .storage import CHUNK, UploadUnknown, upload_key

if TYPE_CHECKING:
    from .registry import LabApp, Route

__all__ = ["UploadHandlers"]


@dataclass
class _Progress:
    """The running hash of an upload session and how many bytes it holds."""

    hasher: Any
    size: int = 0


_MAC_SIZE = hashlib.sha256().digest_size


def _write_state(state: dict[str, Any], key: bytes) -> str:
    payload = json.dumps(state).encode()
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac + payload).decode()


def _read_state(text: str, key: bytes) -> dict[str, Any] | None:
    """The state a Location carried, if this registry signed it and nobody changed it; else None."""
    try:
        packed = base64.urlsafe_b64decode(text.encode())
    except (ValueError, binascii.Error):
        return None
    mac, payload = packed[:_MAC_SIZE], packed[_MAC_SIZE:]
    if len(mac) < _MAC_SIZE or not hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).digest()):
        return None
    try:
        state = json.loads(payload)
    except ValueError:
        return None
    return state if isinstance(state, dict) else None


def _hash_file(path: Any, algorithm: str) -> tuple[Any, int]:
    hasher = hashlib.new(algorithm)
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher, size


class UploadHandlers:
    """Blob and upload handlers bound to one LabApp (its storage, settings, auth and notifier)."""

    def __init__(self, app: LabApp) -> None:
        self.app = app
        self.storage = app.storage
        self._key = app.storage.http_secret()
        self._progress: dict[str, _Progress] = {}  # by upload_key(id)
        self._busy: dict[str, asyncio.Lock] = {}  # by upload_key(id): one request per session at a time

    # Blobs.
    async def blob(self, request: Request, route: Route) -> Response:
        name, digest = route.name, route.reference
        if not is_valid_digest(digest):
            raise Failure(400, "DIGEST_INVALID", digest)
        size = self.storage.blobs.size(name, digest)
        if request.method == "DELETE":
            if not self.app.settings.delete_enabled:
                raise Failure(405, "UNSUPPORTED")
            if size is None or not self.storage.blobs.unlink(name, digest):
                raise Failure(404, "BLOB_UNKNOWN", digest)
            return Response(202)
        if size is None:
            raise Failure(404, "BLOB_UNKNOWN", digest)
        headers = {
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": digest,
            "Etag": f'"{digest}"',
            "Cache-Control": "max-age=31536000",
            "Accept-Ranges": "bytes",
        }
        if request.method == "HEAD":
            return Response(200, headers, b"", length=size)
        self.app.notify(request, "pull", name, digest, media_type="application/octet-stream", size=size,
                        url=f"{request.base_url}/v2/{name}/blobs/{digest}")  # fmt: skip
        return Response(200, headers, self.storage.blobs.read(digest), length=size)

    # POST /v2/<name>/blobs/uploads/
    async def start(self, request: Request, route: Route) -> Response:
        name, query = route.name, request.query
        mount, source = query.get("mount"), query.get("from")
        if mount and source and is_valid_digest(mount) and is_valid_repository_name(source):
            if self.storage.blobs.size(source, mount) is not None and self.app.may_pull(request, source):
                self.storage.blobs.link(name, mount)
                self.app.notify(request, "mount", name, mount, media_type="application/octet-stream",
                                size=self.storage.blobs.size(name, mount),
                                url=f"{request.base_url}/v2/{name}/blobs/{mount}")  # fmt: skip
                return self._created(request, name, mount)
        upload_id = self.storage.uploads.start(name)
        self._progress[upload_id] = _Progress(hashlib.sha256())
        # Distribution 2.8 has no monolithic POST: `?digest=` is ignored and a session opened (checked).
        await self._drain(request)
        return self._accepted(request, name, upload_id)

    # GET/PATCH/PUT/DELETE /v2/<name>/blobs/uploads/<id>
    async def session(self, request: Request, route: Route) -> Response:
        name, upload_id = route.name, route.reference
        # As in Distribution: the `_state` of the Location must be signed here and name this session, then
        # the session must exist, then hold as many bytes as that Location said (a stale Location is
        # refused, the session kept open).
        state = _read_state(request.query.get("_state", ""), self._key)
        if state is None or state.get("name") != name or state.get("uuid") != upload_id:
            await self._drain(request)
            raise Failure(404, "BLOB_UPLOAD_INVALID", "bad upload state")
        try:
            upload_id = upload_key(upload_id)
        except UploadUnknown:
            await self._drain(request)
            raise Failure(404, "BLOB_UPLOAD_UNKNOWN", upload_id) from None
        async with self._busy.setdefault(upload_id, asyncio.Lock()):
            return await self._in_session(request, name, upload_id, state)

    async def _in_session(
        self, request: Request, name: str, upload_id: str, state: dict[str, Any]
    ) -> Response:
        try:
            size = (await self._progress_of(name, upload_id)).size
        except UploadUnknown:
            await self._drain(request)
            raise Failure(404, "BLOB_UPLOAD_UNKNOWN", upload_id) from None
        if state.get("offset") != size:
            await self._drain(request)
            raise Failure(404, "BLOB_UPLOAD_INVALID", "the upload state is stale")
        if request.method == "GET":
            return self._accepted(request, name, upload_id, status=204)
        if request.method == "DELETE":
            self._cancel(upload_id)
            return Response(204)
        if request.method == "PATCH":
            # Distribution 2.8 ignores Content-Range on PATCH (checked): so does the lab.
            await self._append(request, name, upload_id)
            return self._accepted(request, name, upload_id)
        await self._append(request, name, upload_id)
        digest = request.query.get("digest")
        if digest is None:
            self._cancel(upload_id)
            raise Failure(400, "DIGEST_INVALID", "digest missing")
        return await self._finish(request, name, upload_id, digest)

    # Helpers.
    async def _progress_of(self, name: str, upload_id: str) -> _Progress:
        progress = self._progress.get(upload_id)
        if progress is None:  # a session from before a restart: hash what it holds, off the loop
            hasher, size = await asyncio.to_thread(
                _hash_file, self.storage.uploads.data(name, upload_id), "sha256"
            )
            progress = self._progress[upload_id] = _Progress(hasher, size)
        return progress

    async def _append(self, request: Request, name: str, upload_id: str) -> None:
        progress = await self._progress_of(name, upload_id)
        pending: list[bytes] = []
        pending_size = 0
        with open(self.storage.uploads.data(name, upload_id), "ab") as handle:
            try:
                async for chunk in request.chunks():
                    progress.hasher.update(chunk)
                    progress.size += len(chunk)
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if pending_size >= CHUNK:  # write in ~1 MiB pieces
                        handle.write(b"".join(pending))
                        pending, pending_size = [], 0
            finally:  # a client gone mid-body: the file keeps what the hash has seen
                handle.write(b"".join(pending))

    async def _finish(self, request: Request, name: str, upload_id: str, digest: str) -> Response:
        if not is_valid_digest(digest):
            self._cancel(upload_id)
            raise Failure(400, "DIGEST_INVALID", digest)
        progress = await self._progress_of(name, upload_id)
        if digest.startswith("sha256:"):
            actual = "sha256:" + progress.hasher.hexdigest()
        else:
            data = self.storage.uploads.data(name, upload_id)
            hasher, _ = await asyncio.to_thread(_hash_file, data, digest.partition(":")[0])
            actual = f"{digest.partition(':')[0]}:{hasher.hexdigest()}"
        if actual != digest:
            self._cancel(upload_id)
            raise Failure(400, "DIGEST_INVALID", f"uploaded content has digest {actual}, not {digest}")
        self.storage.uploads.commit(name, upload_id, digest)
        self._forget(upload_id)
        self.app.notify(request, "push", name, digest, media_type="application/octet-stream",
                        size=progress.size, url=f"{request.base_url}/v2/{name}/blobs/{digest}")  # fmt: skip
        return self._created(request, name, digest)

    def _cancel(self, upload_id: str) -> None:
        self._forget(upload_id)
        self.storage.uploads.cancel(upload_id)

    def _forget(self, upload_id: str) -> None:
        self._progress.pop(upload_id, None)
        self._busy.pop(upload_id, None)

    async def _drain(self, request: Request) -> None:
        async for _ in request.chunks():
            pass

    def _created(self, request: Request, name: str, digest: str) -> Response:
        location = f"{request.base_url}/v2/{name}/blobs/{digest}"
        return Response(201, {"Location": location, "Docker-Content-Digest": digest})

    def _accepted(self, request: Request, name: str, upload_id: str, status: int = 202) -> Response:
        size = self._progress[upload_id].size if upload_id in self._progress else (
            self.storage.uploads.size(name, upload_id)
        )  # fmt: skip
        state = _write_state({"name": name, "uuid": upload_id, "offset": size}, self._key)
        location = f"{request.base_url}/v2/{name}/blobs/uploads/{upload_id}?_state={state}"
        headers = {
            "Location": location,
            "Docker-Upload-UUID": upload_id,
            "Range": f"0-{max(size - 1, 0)}",
        }
        return Response(status, headers)
