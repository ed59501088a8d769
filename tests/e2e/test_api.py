"""The engine API of a real `geo-tui serve` on real Distribution: tokens, paging, commands, one engine per
database."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from geo_tui.cli import _console_link
from geo_tui.config import load_config
from geo_tui.engine import RepositoryRow, SyncState
from geo_tui.engine.lock import DatabaseInUse
from geo_tui.engine.wire import decode_message, decode_rows
from geo_tui.link.remote import RemoteLink
from tests.support.distribution import Distribution, free_port
from tests.support.geo import tag_digests
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.push import PushError, RawPusher
from tests.support.served import ServedEngine, wait_until, write_served_config

TOKEN = "full-api-token-0123456789-abcdef"
READ_TOKEN = "read-api-token-0123456789-ghijkl"


@pytest.fixture
def served(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> Iterator[tuple[Distribution, Distribution, ServedEngine]]:
    """serve with the API beside the receiver on 127.0.0.1, a full and a read token."""
    port = free_port()
    primary = registry_factory("primary")
    eu = registry_factory("eu")
    with RawPusher.for_registry(primary) as pusher:
        for name in ("shop/api", "shop/web", "ops/tools"):
            pusher.push_tree(name, oci_image(name), "v1")
    config = write_served_config(
        tmp_path / "geo", primary, [eu], key_pair, port=port, api={"token": TOKEN, "read_token": READ_TOKEN}
    )
    engine = ServedEngine(config, tmp_path / "serve.log", api_url=f"http://127.0.0.1:{port}")
    engine.start(TOKEN)
    try:
        yield primary, eu, engine
    finally:
        engine.stop(signal.SIGKILL)


def tags_on(pusher: RawPusher, repository: str) -> dict[str, str]:
    """Tag -> digest on a registry; empty while the repository does not exist there yet."""
    try:
        return tag_digests(pusher, repository)
    except PushError:
        return {}


def rows(client: httpx.Client, **params: object) -> list[RepositoryRow]:
    page = client.get("/api/v1/rows", params=params)  # type: ignore[arg-type]
    assert page.status_code == 200, page.text
    return decode_rows(page.json()["rows"])


def all_synced(engine: ServedEngine, count: int) -> bool:
    with engine.client(TOKEN) as client:
        found = rows(client)
    return len(found) == count and all(r.state is SyncState.SYNCED for r in found)


def test_no_token_or_a_wrong_one_gets_401_and_a_read_token_cannot_command(
    served: tuple[Distribution, Distribution, ServedEngine],
) -> None:
    _, _, engine = served
    wait_until(lambda: all_synced(engine, 3), what="the backfill")

    def verified() -> bool:  # background verification follows the backfill: let it settle first
        with engine.client(TOKEN) as full:
            return all(row.verification_state == "succeeded" for row in rows(full))

    wait_until(verified, what="the verification after the backfill")
    with engine.client(TOKEN) as full:
        before = rows(full)
    for token in (None, "wrong-token-0123456789-abcdefghij", TOKEN[:-1]):
        with engine.client(token) as client:
            for method, path in [("GET", "info"), ("GET", "rows"), ("POST", "commands/pause"),
                                 ("POST", "commands/resync")]:  # fmt: skip
                response = client.request(method, f"/api/v1/{path}", json={})
                assert response.status_code == 401, (token, path)
                assert response.headers["www-authenticate"] == "Bearer"
                assert TOKEN not in response.text and READ_TOKEN not in response.text
    with engine.client(READ_TOKEN) as reader:
        assert reader.get("/api/v1/info").status_code == 200
        assert len(rows(reader)) == 3
        for command in ("pause", "resync", "verify"):
            response = reader.post(f"/api/v1/commands/{command}", json={})
            assert response.status_code == 403 and "only read" in response.json()["error"]
    # Nothing changed: not paused, every row as it was (no resync bumped a generation).
    with engine.client(TOKEN) as full:
        assert full.get("/api/v1/info").json()["paused"] is False
        assert rows(full) == before
        assert full.post("/api/v1/commands/pause", json={}).json()["ok"] is True
        assert full.get("/api/v1/info").json()["paused"] is True

    async def stream(token: str | None) -> str:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with connect(engine.api_url.replace("http", "ws") + "/api/v1/updates",  # type: ignore[union-attr]
                           additional_headers=headers, proxy=None) as ws:  # fmt: skip
            return decode_message(await ws.recv())[0]

    for bad in (None, "wrong-token-0123456789-abcdefghij"):
        with pytest.raises(InvalidStatus) as refused:
            asyncio.run(stream(bad))
        assert refused.value.response.status_code == 401
    assert asyncio.run(stream(READ_TOKEN)) == "hello"
    log = engine.log_path.read_text()
    assert TOKEN not in log and READ_TOKEN not in log and "Traceback" not in log


def test_rows_are_paged_and_filtered_by_the_engine(
    served: tuple[Distribution, Distribution, ServedEngine],
) -> None:
    _, _, engine = served
    wait_until(lambda: all_synced(engine, 3), what="the backfill")
    with engine.client(READ_TOKEN) as client:
        first = client.get("/api/v1/rows", params={"limit": 2}).json()
        assert len(decode_rows(first["rows"])) == 2 and first["next_offset"] == 2
        rest = client.get("/api/v1/rows", params={"limit": 2, "offset": 2}).json()
        assert len(decode_rows(rest["rows"])) == 1 and rest["next_offset"] is None
        names = [r.repository for r in decode_rows(first["rows"]) + decode_rows(rest["rows"])]
        assert sorted(names) == ["ops/tools", "shop/api", "shop/web"]
        assert [r.repository for r in rows(client, contains="shop/")] == ["shop/api", "shop/web"]
        assert rows(client, state="failed") == []
        assert len(rows(client, state="synced", site="eu")) == 3
        assert rows(client, site="nowhere") == []
        bad = client.get("/api/v1/rows", params={"limit": "lots"})
        assert bad.status_code == 400 and "limit" in bad.json()["error"]
        detail = client.get("/api/v1/detail", params={"repository": "shop/api"}).json()
        assert {s["site"]: sorted(s["tags"]) for s in detail["sites"]} == {"primary": ["v1"], "eu": ["v1"]}


def test_invalid_parameters_get_400_naming_the_parameter_and_change_nothing(
    served: tuple[Distribution, Distribution, ServedEngine],
) -> None:
    _, _, engine = served
    wait_until(lambda: all_synced(engine, 3), what="the backfill")
    with engine.client(TOKEN) as client:
        for path, value in [
            ("rows", "\u00b2"),  # a unicode digit: str.isdigit() says yes, int() says no (was a 500)
            ("rows", "\u0661"),  # ARABIC-INDIC DIGIT ONE: int() would read it as 1
            ("rows", "-1"),
            ("rows", "0"),
            ("rows", "9" * 5000),  # past int()'s 4300-digit limit (was a 500)
            ("logs", "\u00b2"),
            ("logs", "10001"),
        ]:
            bad = client.get(f"/api/v1/{path}", params={"limit": value})
            assert bad.status_code == 400, (path, value, bad.text)
            assert bad.json()["error"].startswith("limit: a whole number from 1 to"), bad.text
        bad = client.get("/api/v1/rows", params={"offset": "1" * 20})
        assert bad.status_code == 400 and bad.json()["error"].startswith("offset:")
        before = {r.key: r.generation for r in rows(client)}
        unknown = "fialed: unknown field; this command takes only keys, failed, sites, blobs"
        for command, body, error in [
            ("resync", {"failed": 1}, "failed: must be true or false"),
            ("resync", {"failed": "true"}, "failed: must be true or false"),
            ("verify", {"failed": 0}, "failed: must be true or false"),
            ("resync", {"fialed": True}, unknown),
            ("resync", {"sites": "eu"}, "sites: a list of secondaries (eu)"),
            ("resync", {"keys": {"eu": "shop/api"}}, "keys: must be a list of [site, repository] pairs"),
            ("pause", {"now": True}, "now: unknown field; this command takes no fields"),
        ]:
            bad = client.post(f"/api/v1/commands/{command}", json=body)
            assert bad.status_code == 400, (command, body, bad.text)
            assert bad.json()["error"] == error
        # Nothing was queued: no row's generation moved, and the engine is not paused.
        assert {r.key: r.generation for r in rows(client)} == before
        assert client.get("/api/v1/info").json()["paused"] is False
        ok = client.post("/api/v1/commands/resync", json={"failed": True}).json()
        assert ok["ok"] is True and ok["count"] == 0  # nothing failed: nothing queued


def test_a_second_engine_on_the_database_is_refused_naming_the_holder(
    served: tuple[Distribution, Distribution, ServedEngine],
) -> None:
    _, _, engine = served
    assert engine.process is not None

    def geo_tui(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "geo_tui", "--config", str(engine.config), *command],
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ.copy(),
        )

    for command in (["serve"], ["sync", "--once"], ["resync", "--all", "--now"], ["verify"]):
        done = geo_tui(*command)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert f"is in use by geo-tui serve (pid {engine.process.pid} on " in lines[0]
        assert f"listening on {engine.api_url.removeprefix('http://')}" in lines[0]  # type: ignore[union-attr]
        assert lines[0].endswith(f"attach with `geo-tui --attach {engine.api_url}`")
    assert engine.process.poll() is None  # the running engine never noticed

    # A resync without --now is queued by the running engine, through its API; a typo is refused there.
    wait_until(lambda: all_synced(engine, 3), what="the backfill")
    done = geo_tui("resync", "shop/api")
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip() == f"1 repositories queued for resync by the running engine at {engine.api_url}"
    )
    wait_until(
        lambda: "resync requested: shop/api (1 rows)" in engine.log_path.read_text(), what="the resync"
    )
    done = geo_tui("resync", "shop/apo")
    assert done.returncode == 1
    assert done.stderr.strip().endswith("answered 400: keys: 'shop/apo' is not tracked on 'eu'")

    # The console finds the running engine through the claim and attaches instead of embedding one.
    config = load_config(engine.config)
    link, reads_only = _console_link(config, None)
    assert isinstance(link, RemoteLink) and link.target == engine.api_url and not reads_only


def test_a_unix_socket_without_tokens_is_owner_only_and_not_on_the_tcp_port(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> None:
    port = free_port()
    primary, eu = registry_factory("primary"), registry_factory("eu")
    with RawPusher.for_registry(primary) as pusher, RawPusher.for_registry(eu) as eu_pusher:
        pusher.push_tree("unix/app", oci_image("unix"), "v1")
        sock = tmp_path / "api.sock"
        config = write_served_config(
            tmp_path / "geo", primary, [eu], key_pair, port=port, api={"listen": str(sock)}
        )
        engine = ServedEngine(config, tmp_path / "serve.log", api_socket=sock).start()
        try:
            assert stat.S_IMODE(sock.stat().st_mode) == 0o600
            assert httpx.get(f"http://127.0.0.1:{port}/api/v1/info").status_code == 404
            wait_until(lambda: tags_on(eu_pusher, "unix/app") != {}, what="the backfill")
            pusher.push_tree("unix/app", oci_image("unix-2"), "v2")
            with engine.client() as client:
                answer = client.post("/api/v1/commands/resync", json={"keys": [["eu", "unix/app"]]}).json()
                assert answer == {"ok": True, "count": 1, "message": "resync queued for 1 repository"}
                bad = client.post("/api/v1/commands/resync", json={"keys": [["mars", "unix/app"]]})
                assert bad.status_code == 400 and "no secondary named 'mars'" in bad.json()["error"]
            wait_until(lambda: "v2" in tags_on(eu_pusher, "unix/app"), what="the resync")
        finally:
            assert engine.stop() == 0
        assert not sock.exists()  # removed on a clean exit

    # An engine that offers no API (an embedded console) is refused by name, never attached to.
    from geo_tui.engine.lock import DatabaseClaim

    holder = DatabaseClaim(load_config(config).engine.database, "the geo-tui console (embedded engine)")
    holder.acquire()
    try:
        with pytest.raises(DatabaseInUse, match="no API to attach to"):
            _console_link(load_config(config), None)
    finally:
        holder.release()
