"""Connections are reused: a response the client does not need the body of is still read to its end, or its
connection would close with it (before this was fixed, every HEAD opened a new TCP connection)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpcore
import pytest

from geo_tui.registry import JwtAuth, RegistryClient, TokenSigner
from tests.support.distribution import Distribution
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.push import RawPusher


def count_connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    real = httpcore.AsyncHTTPConnection._connect

    async def connect(self: httpcore.AsyncHTTPConnection, request: httpcore.Request) -> Any:
        opened.append(request.method.decode())
        return await real(self, request)

    monkeypatch.setattr(httpcore.AsyncHTTPConnection, "_connect", connect)
    return opened


def test_heads_puts_and_deletes_reuse_one_connection(
    secondary: Distribution, key_pair: TestKeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = oci_image("reuse")
    with RawPusher.for_registry(secondary) as pusher:
        pusher.push_tree("reuse/app", image, "v1")
    opened = count_connections(monkeypatch)
    signer = TokenSigner(key_pair.key_pem, issuer=secondary.issuer, service=secondary.service)
    auth = JwtAuth(signer, repository_actions=("pull", "push", "delete"))

    async def work() -> None:
        async with RegistryClient("secondary", secondary.url, auth) as client:
            for blob in image.blobs:
                assert await client.head_blob("reuse/app", blob.digest) == blob.size
            assert await client.head_blob("reuse/app", "sha256:" + "0" * 64) is None  # a 404
            assert await client.head_manifest("reuse/app", "v1") is not None
            assert await client.head_manifest("reuse/app", "nope") is None
            await client.put_manifest("reuse/app", "v2", image.manifest, image.media_type)
            await client.delete_manifest("reuse/app", image.digest)

    asyncio.run(work())
    assert len(opened) == 1, f"{len(opened)} connections for 8 sequential requests: {opened}"
