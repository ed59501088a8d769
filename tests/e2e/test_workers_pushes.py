"""Push copies shared out among `geo-tui serve` workers on one PostgreSQL database (issue 16), on real
Distribution registries:

- a notification received by worker A, whose engine is paused (a pause is that worker's alone), is
  acknowledged and committed by A and copied by worker B;
- three workers, each push notified to all three receivers, pushes of several repositories: every tag
  identical on both secondaries, each manifest PUT once per secondary, and more than one worker copied.

The primary sends no notifications of its own: the test posts each event (with the pushed digest) to
the receivers itself, so it knows when each 200 came.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from geo_tui.engine.tracking.postgres import PostgresDatabase
from tests.e2e.test_postgres_events import metric
from tests.e2e.test_serve import assert_log_clean, db_query, notification, post, wait_replicated
from tests.e2e.test_workers import sockets, start_worker, worker_config
from tests.support.distribution import Distribution
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.push import RawPusher
from tests.support.served import Served, wait_until

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.parametrize("registry_kind", ["distribution"], indirect=True),
]

__all__ = ["sockets"]  # the fixture, imported for this module's tests

COPIED = "geo_tui_push_events_copied_total"


def api(sockets: Path, name: str) -> httpx.Client:
    """A client of worker `name`'s engine API (its unix socket)."""
    transport = httpx.HTTPTransport(uds=str(sockets / f"{name}.sock"))
    return httpx.Client(transport=transport, base_url="http://worker", timeout=10)


def health(worker: Served) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(worker.url + "/-/health", timeout=5).json()
    return document


def idle(worker: Served) -> bool:
    document = health(worker)
    return document["in_flight"] == 0 and document["queue_depth"] == 0


def pushed_event(repository: str, tag: str, digest: str) -> dict[str, Any]:
    event = notification(repository, tag=tag, event_id=f"{repository}:{tag}:{uuid.uuid4()}")
    event["target"]["digest"] = digest
    return event


@pytest.fixture
def workers() -> Iterator[list[Served]]:
    """The workers a test starts; any still running at its end are killed."""
    started: list[Served] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop(signal.SIGKILL)


def test_a_push_received_by_a_paused_worker_is_copied_by_another(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    postgres_database: PostgresDatabase,
    sockets: Path,
    workers: list[Served],
) -> None:
    primary, eu, us = registry_factory("primary"), registry_factory("eu"), registry_factory("us")
    repository = "paused/app"

    def make(directory: Path, socket: Path, port: int) -> Path:
        return worker_config(directory, primary, [eu, us], key_pair, postgres_database, socket, port=port)

    a = start_worker("a", tmp_path, sockets, make)
    workers.append(a)
    b = start_worker("b", tmp_path, sockets, make)
    workers.append(b)
    with api(sockets, "a") as on_a:
        answer = on_a.post("/api/v1/commands/pause", json={})
        assert answer.status_code == 200, answer.text
    # The pause is A's alone: B runs on.
    assert health(a)["engine"] == "paused" and health(b)["engine"] == "running"

    image = oci_image("paused-1")
    with RawPusher.for_registry(primary) as pusher:
        pusher.push_tree(repository, image, "v1")
    event = pushed_event(repository, "v1", image.digest)
    response = post(a, {"events": [event]})
    acknowledged = time.monotonic()
    assert response.status_code == 200, response.text
    # A's receiver committed the event before its 200, paused or not.
    assert db_query(
        a.config.parent, "SELECT COUNT(*) FROM notifications WHERE event_id = ?", (event["id"],)
    ) == [(1,)]
    with RawPusher.for_registry(eu) as on_eu, RawPusher.for_registry(us) as on_us:
        wait_replicated([on_eu, on_us], repository, {"v1": image.digest}, timeout=30)
    latency = time.monotonic() - acknowledged
    print(f"200 from paused worker A -> tag on both secondaries, copied by worker B: {latency:.3f} s")
    assert latency < 10.0
    wait_until(lambda: idle(b), timeout=30, what="the push queue empty")
    assert metric(b, COPIED) == 1 and metric(a, COPIED) == 0  # B copied it; A, paused, nothing
    assert health(a)["engine"] == "paused"
    for worker in (a, b):
        assert worker.stop(signal.SIGTERM) == 0
    assert_log_clean(a.log_path, b.log_path)


def test_three_workers_notified_of_every_push_copy_each_once(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    postgres_database: PostgresDatabase,
    sockets: Path,
    workers: list[Served],
) -> None:
    primary, eu, us = registry_factory("primary"), registry_factory("eu"), registry_factory("us")
    repositories = [f"fleet/svc-{i}" for i in range(8)]
    tags = ["v1", "v2", "v3"]

    def make(directory: Path, socket: Path, port: int) -> Path:
        return worker_config(
            directory, primary, [eu, us], key_pair, postgres_database, socket, port=port,
            engine={"repository_concurrency": 2},
        )  # fmt: skip

    for name in ("w0", "w1", "w2"):
        workers.append(start_worker(name, tmp_path, sockets, make))
    config = workers[0].config

    def notify_all(pool: ThreadPoolExecutor, repository: str, tag: str, digest: str) -> list[int]:
        """What Distribution would do with three endpoints: the event, at once, to every receiver."""
        body = {"events": [pushed_event(repository, tag, digest)]}
        return [r.status_code for r in pool.map(lambda w: post(w, body), workers)]

    # Each repository first exists everywhere, synced and verified: its first push makes a new row, whose
    # whole-repository run (and verification) would copy tags beside the pushes this test counts.
    with RawPusher.for_registry(primary) as pusher, ThreadPoolExecutor(len(workers)) as pool:
        for repository in repositories:
            image = oci_image(f"{repository}-v0")
            pusher.push_tree(repository, image, "v0")
            assert notify_all(pool, repository, "v0", image.digest) == [200] * len(workers)

    def settled() -> bool:
        states = db_query(config.parent, "SELECT state, verification_state FROM repositories")
        return len(states) == 2 * len(repositories) and set(states) == {("synced", "succeeded")}

    wait_until(settled, timeout=120, what="every repository synced and verified")
    for worker in workers:
        wait_until(lambda w=worker: idle(w), timeout=30, what="workers idle")
    marks = {registry.name: len(registry.access_log_lines()) for registry in (eu, us)}
    copied_before = [metric(worker, COPIED) for worker in workers]

    expected: dict[str, dict[str, str]] = {repository: {"v0": ""} for repository in repositories}

    def push_three(repository: str) -> list[int]:
        codes: list[int] = []
        with RawPusher.for_registry(primary) as pusher, ThreadPoolExecutor(len(workers)) as pool:
            for tag in tags:
                image = oci_image(f"{repository}-{tag}")
                pusher.push_tree(repository, image, tag)
                expected[repository][tag] = image.digest
                codes += notify_all(pool, repository, tag, image.digest)
        return codes

    began = time.monotonic()
    with ThreadPoolExecutor(4) as pushing:  # several repositories pushed at once
        codes = [code for found in pushing.map(push_three, repositories) for code in found]
    assert codes == [200] * len(repositories) * len(tags) * len(workers)
    with RawPusher.for_registry(eu) as on_eu, RawPusher.for_registry(us) as on_us:
        for repository, wanted in expected.items():
            wanted["v0"] = oci_image(f"{repository}-v0").digest
            wait_replicated([on_eu, on_us], repository, wanted, timeout=90)
    took = time.monotonic() - began
    for worker in workers:
        wait_until(lambda w=worker: idle(w), timeout=60, what="every push queue row done")
    assert db_query(config.parent, "SELECT COUNT(*) FROM push_queue") == [(0,)]

    pushes = len(repositories) * len(tags)
    for registry in (eu, us):
        puts = Counter(
            line.uri
            for line in registry.requests("PUT", "/manifests/", since_mark=marks[registry.name])
            if line.status == 201
        )
        wanted_puts = {f"/v2/{r}/manifests/{t}" for r in repositories for t in tags}
        assert set(puts) == wanted_puts, registry.name
        twice = {uri: n for uri, n in puts.items() if n > 1}
        assert not twice, f"manifests PUT more than once into {registry.name}: {twice}"
    copied = [metric(w, COPIED) - before for w, before in zip(workers, copied_before, strict=True)]
    print(
        f"{pushes} pushes x {len(workers)} receivers: all on both secondaries {took:.1f} s after the first; "
        f"push events copied by each worker: {copied}"
    )
    assert sum(1 for n in copied if n > 0) > 1, f"one worker copied every push: {copied}"
    for worker in workers:
        text = worker.log_path.read_text()
        assert "lease lost" not in text, worker.log_path
        assert worker.stop(signal.SIGTERM) == 0
    assert_log_clean(*(w.log_path for w in workers))
