"""The claim on a tracking database: one holder at a time, a refusal that names it, freed by kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geo_tui.engine.lock import DatabaseClaim, DatabaseInUse, lock_path, read_holder

HOLD = """
import sys, time
from pathlib import Path
from geo_tui.engine.lock import DatabaseClaim
claim = DatabaseClaim(Path(sys.argv[1]), "geo-tui serve")
claim.acquire()
claim.advertise(listen=("127.0.0.1:5050 (notifications and API)",), api="http://127.0.0.1:5050")
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_claim_is_refused_with_who_holds_it_and_how_to_attach(tmp_path: Path) -> None:
    database = tmp_path / "tracking.db"
    first = DatabaseClaim(database, "geo-tui serve")
    first.acquire()
    first.advertise(listen=("127.0.0.1:5050 (notifications and API)",), api="http://127.0.0.1:5050")
    with pytest.raises(DatabaseInUse) as refused:
        DatabaseClaim(database, "geo-tui sync --once").acquire()
    message = str(refused.value)
    assert "\n" not in message
    assert f"tracking database {database} is in use by geo-tui serve (pid {os.getpid()} on" in message
    assert "listening on 127.0.0.1:5050" in message
    assert message.endswith("attach with `geo-tui --attach http://127.0.0.1:5050`")
    holder = read_holder(database)
    assert holder is not None and holder.pid == os.getpid() and holder.api == "http://127.0.0.1:5050"

    first.release()
    assert read_holder(database) is None
    second = DatabaseClaim(database, "geo-tui sync --once")
    second.acquire()
    assert second.held
    second.release()


def test_a_holder_without_an_api_says_to_stop_it(tmp_path: Path) -> None:
    database = tmp_path / "tracking.db"
    console = DatabaseClaim(database, "the geo-tui console (embedded engine)")
    console.acquire()
    try:
        with pytest.raises(
            DatabaseInUse, match=r"by the geo-tui console .*no API to attach to: stop it first"
        ):
            DatabaseClaim(database, "geo-tui serve").acquire()
    finally:
        console.release()


def test_kill_9_never_leaves_the_database_claimed(tmp_path: Path) -> None:
    database = tmp_path / "tracking.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(database)], stdout=subprocess.PIPE, env=os.environ.copy()
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        seen = read_holder(database)
        assert seen is not None and seen.pid == holder.pid
        with pytest.raises(DatabaseInUse, match=f"pid {holder.pid}"):
            DatabaseClaim(database, "geo-tui serve").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The record of the dead holder is still in the file, but nobody holds the lock: it counts for nothing.
    assert b"geo-tui serve" in lock_path(database).read_bytes()
    assert read_holder(database) is None
    claim = DatabaseClaim(database, "geo-tui serve")
    claim.acquire()
    claim.release()


def test_a_garbled_record_still_refuses_in_one_line(tmp_path: Path) -> None:
    database = tmp_path / "tracking.db"
    claim = DatabaseClaim(database, "geo-tui serve")
    claim.acquire()
    lock_path(database).write_bytes(b"{not json")
    try:
        start = time.monotonic()
        with pytest.raises(DatabaseInUse, match="in use by another geo-tui process"):
            DatabaseClaim(database, "geo-tui serve").acquire()
        assert time.monotonic() - start < 2
    finally:
        claim.release()


def test_the_engine_claims_on_open_and_lets_go_on_close(tmp_path: Path) -> None:
    import asyncio

    from geo_tui.engine import Engine
    from tests.unit.test_api_config import minimal_config

    config = minimal_config(tmp_path)

    async def run() -> None:
        first = Engine(config, command="geo-tui serve")
        await first.open()
        try:
            with pytest.raises(DatabaseInUse, match="in use by geo-tui serve"):
                await Engine(config).open()
        finally:
            await first.close()
        again = Engine(config)
        await again.open()
        await again.close()

    asyncio.run(run())
