"""Where a console or a command finds the engine to attach to, when the tracking database is a shared
PostgreSQL database (issue 16): no engine holds it whole, so there is no per-host holder record to read
(`lock.read_holder`, SQLite's); each worker's row says where it listens instead."""

from __future__ import annotations

import re
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geo_tui.config import EngineConfig

    from .tracking.claims import WorkerRow

__all__ = ["api_address", "local_worker_api"]

# An entry of a worker's listen addresses (`serve`'s `_Listeners.describe`) that serves the engine API.
_API_ENTRY = re.compile(r"^(?P<address>.+) \((?:notifications and )?API\)$")


def api_address(listen: str) -> str | None:
    """The engine API's address in a worker row's ``listen`` text: a unix socket path or an http:// URL."""
    for entry in listen.split(", "):
        match = _API_ENTRY.match(entry.strip())
        if match is None:
            continue
        address = match["address"]
        return address if address.startswith(("/", "http://", "https://")) else f"http://{address}"
    return None


def pick_local(workers: list[WorkerRow], now: float, stale_after: float, host: str) -> str | None:
    """The API of the live worker of `host` with the freshest heartbeat, or None."""
    live = [
        w
        for w in workers
        if w.id.partition("/")[0] == host and now - w.heartbeat_at < stale_after and api_address(w.listen)
    ]
    if not live:
        return None
    return api_address(max(live, key=lambda w: w.heartbeat_at).listen)


def local_worker_api(engine: EngineConfig) -> str | None:
    """The API of a live `serve` worker on this host sharing ``engine``'s PostgreSQL database; None for
    SQLite, when none runs here, or when the database does not answer (the caller then starts its own
    engine, which says what is wrong with the database)."""
    if engine.database_url is None:
        return None
    from .tracking import Tracking, tracking_database

    try:
        tracking = Tracking(tracking_database(engine))
    except Exception:  # unreachable, or refused: the engine the caller starts instead reports it
        return None
    try:
        return pick_local(tracking.workers(), tracking.now(), engine.lease_seconds, socket.gethostname())
    except Exception:
        return None
    finally:
        tracking.close()
