"""Issue 16: a PostgreSQL server that stops answering must not freeze a worker. `geo-tui serve` on a real
PostgreSQL cluster and real Distribution registries; every process of the server is stopped (SIGSTOP)
for 8 s: the worker's /-/health answers within a second all along (503, the database named), its engine
API answers, and after SIGCONT it recovers and copies a push acknowledged afterwards to both secondaries.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from geo_tui.config import default_api_socket, load_config
from tests.e2e.test_postgres_events import serve_notified
from tests.e2e.test_serve import assert_log_clean, wait_replicated
from tests.support.distribution import Distribution
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.postgres import PostgresCluster
from tests.support.push import RawPusher
from tests.support.served import Served, wait_until

pytestmark = [
    pytest.mark.distribution_only("Distribution's own notifications, and its retries of a 503"),
    pytest.mark.timeout(300),
]

FROZEN_FOR = 8.0  # seconds
HEALTH_WITHIN = 1.0  # seconds: what a monitor polling /-/health may wait


def test_a_frozen_postgres_server_leaves_health_and_the_api_answering_and_the_worker_recovers(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    own_cluster: PostgresCluster,
) -> None:
    repository = "frozen/live"
    primary, eu, us, served, log = serve_notified(registry_factory, key_pair, tmp_path, own_cluster)
    socket = default_api_socket(load_config(served.config).engine.database)
    pushed: dict[str, str] = {}
    health: list[tuple[float, int, dict[str, object]]] = []  # (seconds taken, status, document)
    api: dict[str, tuple[float, int, str]] = {}
    metrics: tuple[float, int, str] = (0.0, 0, "")
    try:
        with RawPusher.for_registry(primary) as pusher:
            image = oci_image("frozen-0")
            pusher.push_tree(repository, image, "t0")
            pushed["t0"] = image.digest
        with RawPusher.for_registry(eu) as e, RawPusher.for_registry(us) as u:
            wait_replicated([e, u], repository, dict(pushed), timeout=60)
        wait_until(lambda: _health(served)[1] == 200, timeout=30, what="healthy before the freeze")
        before = [_health(served)[0] for _ in range(5)]

        def ask_api(path: str) -> None:  # a console's reads, through the worker's API socket
            started = time.monotonic()
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=30) as client:
                response = client.get(f"http://serve/api/v1/{path}")
            api[path] = (time.monotonic() - started, response.status_code, response.text)

        with own_cluster.frozen() as stopped:
            frozen_at = time.monotonic()
            readers = [threading.Thread(target=ask_api, args=(p,)) for p in ("info", "snapshot", "rows")]
            for reader in readers:
                reader.start()
            while time.monotonic() - frozen_at < FROZEN_FOR:
                health.append(_health(served))
                time.sleep(0.25)
                if len(health) == 3:  # a scrape meanwhile: answered without the counts, the database down
                    started = time.monotonic()
                    scraped = _HTTP.get(served.url + "/metrics")
                    metrics = (time.monotonic() - started, scraped.status_code, scraped.text)
            for reader in readers:
                reader.join(30)
        thawed = time.monotonic()
        wait_until(lambda: _health(served)[1] == 200, timeout=60, what="healthy again after SIGCONT")
        recovered = time.monotonic() - thawed

        with RawPusher.for_registry(primary) as pusher:  # pushed, notified and acknowledged afterwards
            image = oci_image("frozen-1")
            pusher.push_tree(repository, image, "t1")
            pushed["t1"] = image.digest
        with RawPusher.for_registry(eu) as e, RawPusher.for_registry(us) as u:
            wait_replicated([e, u], repository, dict(pushed), timeout=60)
        replicated = time.monotonic() - thawed

        slowest = max(taken for taken, _, _ in health)
        print(
            f"{len(stopped)} server processes stopped for {FROZEN_FOR:.0f} s; /-/health answered "
            f"{len(health)} times, slowest {slowest * 1000:.0f} ms (before the freeze "
            f"{max(before) * 1000:.0f} ms); API "
            + ", ".join(f"{p} {t:.2f} s ({c})" for p, (t, c, _) in sorted(api.items()))
            + f"; /metrics {metrics[0]:.2f} s ({metrics[1]})"
            + f"; healthy {recovered:.2f} s after SIGCONT; the push after it on both secondaries "
            f"{replicated:.1f} s after SIGCONT"
        )
        assert len(stopped) >= 3, stopped  # the postmaster and its backends and helpers
        assert slowest < HEALTH_WITHIN, [round(t, 3) for t, _, _ in health]
        # Its contract for an unusable database: 503, the tracking database named, the engine waiting.
        unusable = [d for _, code, d in health if code == 503]
        assert unusable, "health never said the tracking database was away"
        assert all("tracking database" in str(d["status"]) for d in unusable), unusable
        assert any(d["engine"] == "waiting for its database" for d in unusable), unusable
        taken, code, text = metrics
        assert code == 200 and taken < 3.0, metrics[:2]  # its counts' read is bounded at 2 s
        assert "geo_tui_tracking_database_up 0.0" in text.splitlines()
        assert set(api) == {"info", "snapshot", "rows"}, api
        taken, code, _ = api["info"]
        assert code == 200 and taken < HEALTH_WITHIN, api["info"]
        for path in ("snapshot", "rows"):  # no answer from the database: a 503 within its read bound
            taken, code, text = api[path]
            assert code == 503 and "answered no read" in text and taken < 8.0, (path, api[path])
        assert served.stop(signal.SIGTERM) == 0
    finally:
        served.stop(signal.SIGKILL)
    text = log.read_text()
    assert "the tracking database does not answer" in text and "the tracking database answers again" in text
    assert_log_clean(log)


_HTTP = httpx.Client(timeout=5)  # one client: no TLS context built per request in what is timed


def _health(served: Served) -> tuple[float, int, dict[str, object]]:
    started = time.monotonic()
    response = _HTTP.get(served.url + "/-/health")
    return time.monotonic() - started, response.status_code, response.json()
