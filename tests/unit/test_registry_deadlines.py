"""Total deadlines of the registry client (issue 12, case 5): a body that trickles is alive (it never goes
`timeout` seconds without a byte), yet it fails once it runs past its size at `min_transfer_rate`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from geo_tui.registry import NoAuth, RegistryClient, RegistryUnavailable, TransferTooSlow, compute_digest

BODY = bytes(range(100))
DIGEST = compute_digest(BODY)


class Trickle(httpx.AsyncByteStream):
    def __init__(self, data: bytes, every: float) -> None:
        self.data, self.every = data, every

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(len(self.data)):
            await asyncio.sleep(self.every)
            yield self.data[i : i + 1]


def client_for(body: httpx.AsyncByteStream, rate: float | None) -> RegistryClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body, headers={"Content-Length": str(len(BODY))})

    return RegistryClient(
        "primary", "http://registry.test", NoAuth(), transport=httpx.MockTransport(handler), timeout=0.2,
        min_transfer_rate=rate,
    )  # fmt: skip


async def test_a_trickling_blob_fails_at_its_deadline_naming_the_site() -> None:
    # 100 bytes at 100 B/s, plus the 0.2 s base: 1.2 s; a byte every 0.05 s would take 5 s.
    client = client_for(Trickle(BODY, 0.05), rate=100)
    started = time.monotonic()
    with pytest.raises(TransferTooSlow) as caught:
        async with client, client.stream_blob("a/b", DIGEST) as blob:
            async for _ in blob.chunks():
                pass
    took = time.monotonic() - started
    assert 1.1 < took < 2.5, took
    error = caught.value
    assert isinstance(error, RegistryUnavailable) and error.registry == "primary"
    assert str(error).startswith(f"primary: GET blob a/b@{DIGEST}: too slow: over 1.2 s for 100 bytes, ")
    assert "bytes in (min_transfer_rate 100 B/s)" in str(error)


async def test_a_body_within_its_deadline_arrives_whole_and_no_rate_means_no_deadline() -> None:
    for rate, every in ((100, 0.001), (None, 0.02)):  # 0.1 s of 1.2 s; 2 s with no deadline at all
        client = client_for(Trickle(BODY, every), rate=rate)
        async with client, client.stream_blob("a/b", DIGEST) as blob:
            assert b"".join([chunk async for chunk in blob.chunks()]) == BODY
