"""Configured secrets never leave geo-tui: a registry that quotes the credentials it received (raw and
base64, as some proxies do in their error bodies) gets them removed from `status`, `status --json`, the
tracking database's bytes, the engine API's `logs` and `detail`, the console and the log output.

The secondary is real Distribution (or the lab registry) behind a fault proxy that answers every request
under /v2/ (the ping too) with a 500 whose message echoes the Authorization header, its decoded
``user:password`` and (as a misconfigured proxy in front of everything might) the config's other secrets.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest
import tomli_w

from geo_tui.cli import main
from geo_tui.config import load_config
from geo_tui.console.app import make_app
from geo_tui.console.widgets.event_log import EventLog
from geo_tui.console.widgets.repository_table import RepositoryTable
from geo_tui.engine import Engine, SyncState, Tracking
from geo_tui.service.api import API_PREFIX, ApiApp
from tests.support.distribution import Distribution
from tests.support.faults import FaultTransport
from tests.support.geo import write_geo_config
from tests.support.inprocess import EngineInThread
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.pilot import until
from tests.support.push import RawPusher
from tests.support.token_server import TokenServer

USERNAME = "geo-sync"
PASSWORD = 'pA55/w0rd+"Geo"&x=1 z'
NOTIFY_SECRET = "notify-SECRET-0123456789abcdef"
API_TOKEN = "api-TOKEN-full-0123456789abcdef"
READ_TOKEN = "api-TOKEN-read-0123456789abcdef"
# The repository whose echo puts the password across the 300-character cut of an error's detail.
STRADDLE = "shop/straddle"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def forbidden_forms(key_pem: bytes) -> list[str]:
    """Every form in which a configured secret could show: raw, JSON-escaped, base64, Basic, URL."""
    forms: list[str] = []
    for value in (PASSWORD, NOTIFY_SECRET, API_TOKEN, READ_TOKEN):
        forms += [value, json.dumps(value)[1:-1], b64(value), b64(value).rstrip("=")]
    forms += [b64(f"{USERNAME}:{PASSWORD}"), quote(PASSWORD, safe=""), quote_plus(PASSWORD)]
    forms += [line for line in key_pem.decode().splitlines() if line and "-----" not in line][1:3]
    # Longer than any word of ordinary output, so that a hit is a leak and not a coincidence.
    return [f for f in forms if len(f) >= 12]


def echo_credentials(key_pem: bytes) -> FaultTransport:
    """A fault proxy whose 500s quote the Authorization header, raw and decoded, and the other secrets."""
    pem_line = [line for line in key_pem.decode().splitlines() if "-----" not in line][1]

    def echo(request: httpx.Request) -> tuple[str, str]:
        received = request.headers.get("authorization", "")
        decoded = base64.b64decode(received.removeprefix("Basic ")).decode() if received else ""
        if STRADDLE in request.url.path:
            return "UNKNOWN", f"{'x' * 280} {decoded} tail"
        message = (
            f"cannot store: you sent Authorization: {received} ({decoded}); password {PASSWORD} "
            f"b64 {b64(PASSWORD)} url {quote(PASSWORD, safe='')}; notification secret {NOTIFY_SECRET}; "
            f"tokens {API_TOKEN} {b64(READ_TOKEN)}; key {pem_line}"
        )
        return "UNKNOWN", message

    faults = FaultTransport()
    faults.fail(None, r"^/v2/", 500, error=echo)  # the ping too: health shows it
    return faults


def write_secret_config(
    tmp_path: Path, primary: Distribution, secondary: Distribution, key_pair: TestKeyPair
) -> Path:
    path = write_geo_config(
        tmp_path,
        primary,
        [secondary],
        key_pair,
        engine={"sync_attempts": 1},
        secondary_options={secondary.name: {"auth": "basic", "username": USERNAME, "password": PASSWORD}},
        notifications={"listen": "127.0.0.1:1", "secret": NOTIFY_SECRET},
    )
    data = tomllib.loads(path.read_text())
    data["api"] = {"listen": "127.0.0.1:2", "token": API_TOKEN, "read_token": READ_TOKEN}
    path.write_text(tomli_w.dumps(data))
    return path


def assert_clean(text: str | bytes, forms: list[str], where: str) -> None:
    data = text if isinstance(text, bytes) else text.encode()
    for form in forms:
        assert form.encode() not in data, f"{where} shows a secret form ({len(form)} chars)"


async def test_echoed_credentials_are_removed_everywhere(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("shop/api", STRADDLE):
        primary_pusher.push_tree(name, oci_image(name), "v1")
    config = load_config(write_secret_config(tmp_path, primary, secondary, key_pair))
    forms = forbidden_forms(key_pair.key_pem)
    faults = echo_credentials(key_pair.key_pem)
    database = config.engine.database
    caplog.set_level(logging.DEBUG, logger="geo_tui")

    async with Engine(config, transports={"secondary": faults}) as engine:
        summary = await engine.sync_once()
        failures = summary.sites["secondary"].failures
        assert set(failures) == {"shop/api", STRADDLE}
        # The echo arrived and was shown, secrets removed: the test would see a leak.
        assert faults.fired() > 0
        assert "[redacted]" in failures["shop/api"] and "500" in failures["shop/api"]
        assert "[redacted]" in failures[STRADDLE]
        for reason in failures.values():
            assert_clean(reason, forms, "a failure reason")
            # Nothing is left of the password either, not its first half before a cut.
            assert PASSWORD[:8] not in reason

        # The database and its write-ahead log, as bytes on disk, while the engine holds them.
        wal = database.with_name(database.name + "-wal")
        assert wal.exists()
        assert_clean(database.read_bytes() + wal.read_bytes(), forms, "the tracking database")

        api = ApiApp(engine, token=config.api.token if config.api else None, read_token=None)
        transport = httpx.ASGITransport(app=api)
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://engine") as client:
            logs = await client.get(API_PREFIX + "logs", headers=headers)
            detail = await client.get(
                API_PREFIX + "detail", params={"repository": "shop/api"}, headers=headers
            )
            rows = await client.get(API_PREFIX + "rows", headers=headers)
            snapshot = await client.get(API_PREFIX + "snapshot", headers=headers)
        for answer in (logs, detail, rows, snapshot):
            assert answer.status_code == 200
        assert "[redacted]" in logs.text and "[redacted]" in detail.text  # the echo is there, cleaned
        for name, answer in (("logs", logs), ("detail", detail), ("rows", rows), ("snapshot", snapshot)):
            assert_clean(answer.text, forms, f"the API's {name}")

    assert_clean(database.read_bytes(), forms, "the tracking database (closed)")
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["--config", str(config.path), "status"]) == 0
    status = capsys.readouterr()
    assert "shop/api" in status.out and "[redacted]" in status.out
    assert await asyncio.to_thread(main, ["--config", str(config.path), "status", "--json"]) == 0
    status_json = capsys.readouterr()
    reasons = [f["reason"] for f in json.loads(status_json.out)["failed"]]
    assert len(reasons) == 2 and all("[redacted]" in r for r in reasons)
    for where, text in (("status", status.out + status.err), ("status --json", status_json.out)):
        assert_clean(text, forms, where)
    assert "[redacted]" in caplog.text
    assert_clean(caplog.text, forms, "the log output")


async def test_the_console_never_shows_echoed_credentials(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    primary_pusher.push_tree("shop/api", oci_image("shop/api"), "v1")
    config = load_config(write_secret_config(tmp_path, primary, secondary, key_pair))
    forms = forbidden_forms(key_pair.key_pem)
    faults = echo_credentials(key_pair.key_pem)
    link = EngineInThread(config, lambda c: Engine(c, transports={"secondary": faults}))
    app = make_app(config, link=link)
    try:
        async with app.run_test(size=(200, 50)) as pilot:
            table = app.query_one(RepositoryTable)
            events = app.query_one(EventLog)

            def failed() -> bool:
                row = table.row(("secondary", "shop/api"))
                return row is not None and row.state is SyncState.FAILED

            await until(pilot, failed)
            await until(pilot, lambda: any("[redacted]" in line for line in events.lines()))
            row = table.row(("secondary", "shop/api"))
            assert row is not None and "[redacted]" in (row.last_sync_failure or "")
            assert_clean("\n".join(events.lines()), forms, "the console's event log")
            assert_clean(row.last_sync_failure or "", forms, "the console's repository row")
            await pilot.press("enter")  # the detail screen: tags read now, through the echoing proxy
            await pilot.pause(2.0)
            assert_clean(app.export_screenshot(), forms, "the console's screen")
    finally:
        await asyncio.to_thread(link.stop)  # the engine on the test's thread stops with the test


def hand_written_config(tmp_path: Path) -> Path:
    """A config with a Basic password and nothing listening: for what needs no registry."""
    path = tmp_path / "config.toml"
    path.write_text(
        tomli_w.dumps(
            {
                "engine": {"database": str(tmp_path / "tracking.db")},
                "primary": {"name": "primary", "registry": "http://127.0.0.1:1"},
                "secondaries": [
                    {
                        "name": "secondary",
                        "registry": "http://127.0.0.1:2",
                        "auth": "basic",
                        "username": USERNAME,
                        "password": PASSWORD,
                    }
                ],
            }
        )
    )
    return path


async def test_any_record_of_the_engines_loggers_is_redacted_while_it_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(hand_written_config(tmp_path))
    caplog.set_level(logging.INFO, logger="geo_tui")
    basic = b64(f"{USERNAME}:{PASSWORD}")
    async with Engine(config):
        for name in ("geo_tui.engine", "geo_tui.api", "geo_tui.receiver", "geo_tui.serve"):
            logging.getLogger(name).warning("%s quoted %s and %s", name, PASSWORD, basic)
    assert caplog.text.count("quoted [redacted] and [redacted]") == 4
    assert PASSWORD not in caplog.text and basic not in caplog.text


def test_a_config_others_can_read_gets_one_warning_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = hand_written_config(tmp_path)
    Tracking(load_config(path).engine.database).close()  # status reads a database, never creates one
    os.chmod(path, 0o644)
    assert main(["--config", str(path), "status"]) == 0
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if "warning" in line]
    assert len(warnings) == 1
    assert str(path) in warnings[0] and "secondaries[0].password" in warnings[0]
    assert "chmod 600" in warnings[0]
    assert PASSWORD not in "\n".join(err)
    os.chmod(path, 0o600)
    assert main(["--config", str(path), "status"]) == 0
    assert "warning" not in capsys.readouterr().err


async def test_a_token_realm_on_another_host_never_gets_the_password(
    primary: Distribution,
    registry_factory: Callable[..., Distribution],
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    with TokenServer(key_pair, host="127.0.0.2") as elsewhere:
        # The secondary's own challenges name a realm on another host than the registry's (127.0.0.1).
        secondary = registry_factory("secondary", token_realm=elsewhere.url)
        primary_pusher.push_tree("shop/api", oci_image("shop/api"), "v1")
        token_site = {"auth": "token", "username": USERNAME, "password": PASSWORD}
        path = write_geo_config(
            tmp_path, primary, [secondary], key_pair, secondary_options={"secondary": token_site}
        )
        async with Engine(load_config(path)) as engine:
            summary = await engine.sync_once()
        reason = summary.sites["secondary"].failures["shop/api"]
        assert reason.startswith("secondary: GET tags shop/api: ")
        assert "the token realm is on 127.0.0.2, not the registry's host" in reason
        assert "token_realm_hosts" in reason and PASSWORD not in reason
        assert elsewhere.requests == []  # not even a request without the credentials

        # Named in the config, that realm is trusted: it gets the credentials and the copy succeeds.
        token_site["token_realm_hosts"] = ["127.0.0.2"]
        path = write_geo_config(
            tmp_path, primary, [secondary], key_pair, secondary_options={"secondary": token_site}
        )
        async with Engine(load_config(path)) as engine:
            summary = await engine.sync_once()
        assert summary.sites["secondary"].synced == 1 and not summary.sites["secondary"].failures
        assert {r.username for r in elsewhere.requests} == {USERNAME}


async def test_an_engine_redacts_what_an_older_geo_tui_stored(tmp_path: Path) -> None:
    config = load_config(hand_written_config(tmp_path))
    old = Tracking(config.engine.database)  # no redactor: as a geo-tui from before it stored them
    old.ensure_rows("secondary", ["shop/api"])
    old.mark_failed("secondary", "shop/api", f"secondary: 500: echo {b64(f'{USERNAME}:{PASSWORD}')}", None)
    old.close()
    async with Engine(config) as engine:
        row = engine.tracking.row("secondary", "shop/api")
        assert row is not None and row.last_sync_failure == "secondary: 500: echo [redacted]"
        wanted = "removed configured secrets from 1 texts an earlier geo-tui stored"
        for _ in range(100):  # log lines are stored in the background, after they are shown
            messages = [r.message for r in engine.tracking.recent_log()]
            if wanted in messages:
                break
            await asyncio.sleep(0.05)
    assert wanted in messages
