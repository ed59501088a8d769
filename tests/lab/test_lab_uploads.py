"""One upload session of the lab registry takes one request at a time (in process, no network): two
writers holding the same Location cannot interleave their bytes; the second finds the Location stale."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from geo_tui.lab.registry import LabApp, LabSettings
from geo_tui.lab.storage import LabStorage


async def trickle(byte: bytes, pieces: int) -> AsyncIterator[bytes]:
    for _ in range(pieces):
        await asyncio.sleep(0.01)  # both requests are in before a byte arrives; then they interleave
        yield byte * 1000


async def test_two_writers_on_one_location_never_interleave(tmp_path: Path) -> None:
    app = LabApp(LabStorage(tmp_path / "storage"), LabSettings(realm="http://realm", service="s"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://lab") as client:
        started = await client.post("/v2/group/app/blobs/uploads/")
        location = started.headers["Location"]
        first, second = await asyncio.gather(
            client.patch(location, content=trickle(b"a", 20)),
            client.patch(location, content=trickle(b"b", 20)),
        )
        statuses = sorted([first.status_code, second.status_code])
        assert statuses == [202, 404]
        winner = first if first.status_code == 202 else second
        loser = second if winner is first else first
        assert loser.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
        data = (b"a" if winner is first else b"b") * 20_000
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        finished = await client.put(f"{winner.headers['Location']}&digest={digest}")
        assert finished.status_code == 201
        fetched = await client.get(f"/v2/group/app/blobs/{digest}")
    assert fetched.content == data


def test_the_state_key_is_kept_0600_across_restarts(tmp_path: Path) -> None:
    storage = LabStorage(tmp_path / "storage")
    key = storage.http_secret()
    assert len(key) == 32 and LabStorage(tmp_path / "storage").http_secret() == key
    assert (tmp_path / "storage" / "http.secret").stat().st_mode & 0o777 == 0o600
