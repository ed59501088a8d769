"""Finding a worker's engine API in the workers' rows (PostgreSQL: no holder record to read)."""

from __future__ import annotations

from geo_tui.engine.attach import api_address, pick_local
from geo_tui.engine.tracking.claims import WorkerRow


def row(worker: str, heartbeat: float, listen: str) -> WorkerRow:
    return WorkerRow(worker, 0.0, heartbeat, listen, 0, None)


def test_the_api_entry_of_a_workers_listen_text() -> None:
    assert api_address("127.0.0.1:5001 (notifications and API)") == "http://127.0.0.1:5001"
    assert api_address("127.0.0.1:5001, /run/geo-tui/api.sock (API)") == "/run/geo-tui/api.sock"
    assert api_address("[::1]:5001 (notifications and API)") == "http://[::1]:5001"
    assert api_address("http://10.0.0.5:7000 (API)") == "http://10.0.0.5:7000"
    assert api_address("127.0.0.1:5001") is None  # a receiver alone serves no API
    assert api_address("") is None


def test_the_live_worker_of_this_host_with_the_freshest_heartbeat() -> None:
    workers = [
        row("here/10/1.0", 95.0, "/tmp/a.sock (API)"),
        row("here/11/1.0", 99.0, "/tmp/b.sock (API)"),
        row("there/12/1.0", 100.0, "/tmp/c.sock (API)"),  # another host's socket is not ours to open
        row("here/13/1.0", 20.0, "/tmp/d.sock (API)"),  # stale
        row("here/14/1.0", 100.0, "127.0.0.1:5001"),  # no API
    ]
    assert pick_local(workers, now=100.0, stale_after=60.0, host="here") == "/tmp/b.sock"
    assert pick_local(workers, now=100.0, stale_after=60.0, host="elsewhere") is None
    assert pick_local(workers[3:], now=100.0, stale_after=60.0, host="here") is None
