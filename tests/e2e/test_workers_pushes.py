"""Push copies shared out among `geo-tui serve` workers on one PostgreSQL database (issue 16), on real
Distribution registries:

- a notification received by worker A, which is frozen (SIGSTOP) right after its 200, is committed by
  A and copied by worker B;
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
from collections.abc import Callable
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
from tests.support.throttle import ThrottledProxy

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.parametrize("registry_kind", ["distribution"], indirect=True),
]

__all__ = ["sockets"]  # the fixture, imported for this module's tests

COPIED = "geo_tui_push_events_copied_total"


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


def test_a_push_received_by_a_worker_frozen_after_its_200_is_copied_by_another(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    postgres_database: PostgresDatabase,
    sockets: Path,
    workers: list[Served],
) -> None:
    """Worker A acknowledges a push and its process is frozen (SIGSTOP) at once, before it can copy: A
    reaches the primary through a link slow enough that it cannot have finished. Whether A had claimed
    the push (its lease then runs out, and the server ends A's session if it froze inside the claim's
    transaction) or not, worker B copies it. A pause is every worker's (issue 16's cluster-wide pause),
    so a frozen process is what stands for a worker that received and then stopped."""
    primary, eu, us = registry_factory("primary"), registry_factory("eu"), registry_factory("us")
    repository = "frozen/app"
    lease = 2.0
    slow = ThrottledProxy(int(primary.url.rsplit(":", 1)[1]), bytes_per_second=200, chunk=64).start()
    try:

        def make_a(directory: Path, socket: Path, port: int) -> Path:
            return worker_config(
                directory, primary, [eu, us], key_pair, postgres_database, socket, port=port,
                engine={"lease_seconds": lease}, primary_url=slow.url,
            )  # fmt: skip

        def make_b(directory: Path, socket: Path, port: int) -> Path:
            return worker_config(
                directory, primary, [eu, us], key_pair, postgres_database, socket, port=port,
                engine={"lease_seconds": lease},
            )  # fmt: skip

        # The repository exists and is synced first: a push into a repository new to the workers also
        # queues a whole-repository run (any worker's), which would copy the tag beside the push copy.
        first, image = oci_image("frozen-0"), oci_image("frozen-1")
        with RawPusher.for_registry(primary) as pusher:
            pusher.push_tree(repository, first, "v0")
        a = start_worker("a", tmp_path, sockets, make_a)
        workers.append(a)
        b = start_worker("b", tmp_path, sockets, make_b)
        workers.append(b)
        with RawPusher.for_registry(eu) as on_eu, RawPusher.for_registry(us) as on_us:
            wait_replicated([on_eu, on_us], repository, {"v0": first.digest}, timeout=90)
        synced = "SELECT COUNT(*) FROM repositories WHERE state = 'synced'"
        wait_until(lambda: db_query(b.config.parent, synced) == [(2,)], timeout=60, what="both rows synced")
        with RawPusher.for_registry(primary) as pusher:
            pusher.push_tree(repository, image, "v1")
        event = pushed_event(repository, "v1", image.digest)
        response = post(a, {"events": [event]})
        a.process.send_signal(signal.SIGSTOP)
        acknowledged = time.monotonic()
        try:
            assert response.status_code == 200, response.text
            # A's receiver committed the event before its 200.
            assert db_query(
                b.config.parent, "SELECT COUNT(*) FROM notifications WHERE event_id = ?", (event["id"],)
            ) == [(1,)]
            with RawPusher.for_registry(eu) as on_eu, RawPusher.for_registry(us) as on_us:
                expected = {"v0": first.digest, "v1": image.digest}
                wait_replicated([on_eu, on_us], repository, expected, timeout=60)
            latency = time.monotonic() - acknowledged
            print(
                f"200 from worker A, frozen at once -> tag on both secondaries by worker B: {latency:.3f} s"
            )
            wait_until(lambda: metric(b, COPIED) == 1, timeout=30, what="B's push copy recorded")
            assert db_query(b.config.parent, "SELECT COUNT(*) FROM push_queue") == [(0,)]
        finally:
            a.process.send_signal(signal.SIGCONT)
        for worker in (a, b):
            assert worker.stop(signal.SIGTERM) == 0
    finally:
        slow.close()
    assert_log_clean(b.log_path)


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
