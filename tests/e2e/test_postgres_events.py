"""Issue 16, the event side on PostgreSQL: `geo-tui serve` on a real PostgreSQL cluster and real
Distribution registries.

- PostgreSQL restarted under serve while pushes (real notifications) arrive: health, metrics and the log
  say so, a notification posted meanwhile gets a 503, and afterwards every pushed tag is on every
  secondary and every acknowledged event was processed.
- A NOTIFY wakes an idle engine: with a 60 s poll interval, work committed by another process (a resync,
  a push event another worker received) is copied within seconds, and /metrics counts notified wakes.
- Events acknowledged in a burst of concurrent requests survive kill -9 right after the last 200, and
  the restarted serve copies them.
"""

from __future__ import annotations

import re
import shutil
import signal
import tempfile
import threading
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
import tomli_w

from geo_tui.config import default_api_socket, load_config
from geo_tui.engine import Tracking
from geo_tui.engine.tracking.postgres import PostgresDatabase
from tests.e2e.test_serve import SECRET, assert_log_clean, db_query, notification, post, wait_replicated
from tests.support.distribution import Distribution, free_port
from tests.support.geo import write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.postgres import PostgresCluster
from tests.support.push import RawPusher
from tests.support.served import EVENTS, Served, wait_until

pytestmark = [
    pytest.mark.distribution_only("Distribution's own notifications, and its retries of a 503"),
    pytest.mark.timeout(300),
]


def serve_notified(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    cluster: PostgresCluster,
) -> tuple[Distribution, Distribution, Distribution, Served, Path]:
    """A primary that notifies one `serve` (started, tracking in a new database of `cluster`), and two
    secondaries: (primary, eu, us, served, its log)."""
    port = free_port()
    primary = registry_factory(
        "primary", notification_url=f"http://127.0.0.1:{port}{EVENTS}", notification_secret=SECRET
    )
    eu, us = registry_factory("eu"), registry_factory("us")
    config = write_geo_config(
        tmp_path / "geo",
        primary,
        [eu, us],
        key_pair,
        engine={"reconcile_interval": 3600, "database": cluster.url(cluster.database())},
        notifications={"listen": f"127.0.0.1:{port}", "secret": SECRET},
    )
    log = tmp_path / "serve.log"
    return primary, eu, us, Served(config, port, log).start(), log


def metric(served: Served, name: str, **labels: str) -> float:
    """One sample of serve's /metrics (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$")
    for line in httpx.get(served.url + "/metrics", timeout=5).text.splitlines():
        found = pattern.match(line)
        if found and ",".join(sorted((found.group(1) or "").split(","))) == ",".join(
            sorted(wanted.split(","))
        ):
            return float(found.group(2))
    return 0.0


def _health(served: Served) -> tuple[int, dict[str, object]]:
    response = httpx.get(served.url + "/-/health", timeout=5)
    return response.status_code, response.json()


def _idle(served: Served) -> bool:
    code, document = _health(served)
    return code == 200 and document["in_flight"] == 0 and document["queue_depth"] == 0


# -- (a) PostgreSQL restarted under serve while pushes arrive -------------------------------------------


def test_postgres_restarted_under_serve_while_pushes_arrive_loses_nothing(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    own_cluster: PostgresCluster,
) -> None:
    repository = "restart/live"
    primary, eu, us, served, log = serve_notified(registry_factory, key_pair, tmp_path, own_cluster)
    config = served.config
    pushed: dict[str, str] = {}
    acknowledged: list[str] = []
    refused_during_outage: list[int] = []
    try:
        with RawPusher.for_registry(primary) as pusher:
            first = oci_image("pg-live-0")
            pusher.push_tree(repository, first, "t0")
            pushed["t0"] = first.digest
        with RawPusher.for_registry(eu) as e, RawPusher.for_registry(us) as u:
            wait_replicated([e, u], repository, dict(pushed), timeout=60)

        stop_pushing = threading.Event()

        def keep_pushing() -> None:  # real pushes, real notifications, before, during and after
            with RawPusher.for_registry(primary) as pusher:
                for i in range(1, 40):
                    if stop_pushing.is_set():
                        return
                    image = oci_image(f"pg-live-{i}")
                    pusher.push_tree(repository, image, f"t{i}")
                    pushed[f"t{i}"] = image.digest
                    time.sleep(0.3)

        pushing = threading.Thread(target=keep_pushing)
        pushing.start()
        time.sleep(1.5)
        outages_before = metric(served, "geo_tui_tracking_database_outages_total")

        own_cluster.stop("fast")  # `pg_ctl restart`'s first half: connections dropped, server gone
        stopped = time.monotonic()
        seen_unhealthy: dict[str, object] = {}
        while time.monotonic() - stopped < 5.0:
            code, document = _health(served)
            if code == 503 and "tracking database" in str(document["status"]):
                seen_unhealthy = document
            time.sleep(0.2)
        event_id = f"outage-{uuid.uuid4()}"
        during = post(served, {"events": [notification(repository, tag="t0", event_id=event_id)]})
        refused_during_outage.append(during.status_code)
        if during.status_code == 200:
            acknowledged.append(event_id)
        down_metric = metric(served, "geo_tui_tracking_database_up")
        socket = default_api_socket(load_config(config).engine.database)
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=10) as api:
            snapshot = api.get("http://serve/api/v1/snapshot")  # a console's read: 503, not a 500
        own_cluster.start()
        restarted = time.monotonic()
        wait_until(lambda: _health(served)[0] == 200, timeout=60, what="healthy again after the restart")
        reconnected = time.monotonic() - restarted
        stop_pushing.set()
        pushing.join(60)
        for tag in ("after-1", "after-2"):  # acknowledged after the restart, posted by hand
            event_id = f"after-{uuid.uuid4()}"
            response = post(served, {"events": [notification(repository, tag="t0", event_id=event_id)]})
            assert response.status_code == 200, (tag, response.text)
            acknowledged.append(event_id)

        with RawPusher.for_registry(eu) as e, RawPusher.for_registry(us) as u:
            wait_replicated([e, u], repository, dict(pushed), timeout=120)
        wait_until(lambda: _idle(served), timeout=60, what="serve idle, its push queue empty")
        print(
            f"PostgreSQL down {restarted - stopped:.1f} s; healthy {reconnected:.2f} s after it started "
            f"again; {len(pushed)} tags pushed, all on both secondaries"
        )
        assert seen_unhealthy, "health never said the tracking database was away"
        assert down_metric == 0
        assert snapshot.status_code == 503 and "error" in snapshot.json(), snapshot.text
        assert refused_during_outage == [503], "a notification while the database was down got a 200"
        assert metric(served, "geo_tui_tracking_database_outages_total") >= outages_before + 1
        assert metric(served, "geo_tui_tracking_database_up") == 1
        assert db_query(config.parent, "SELECT COUNT(*) FROM push_queue") == [(0,)]
        stored = {
            str(e)
            for (e,) in db_query(
                config.parent,
                "SELECT event_id FROM notifications "
                "WHERE event_id LIKE 'after-%' OR event_id LIKE 'outage-%'",
            )
        }
        assert set(acknowledged) <= stored, f"acknowledged but lost: {set(acknowledged) - stored}"
        rows = db_query(
            config.parent, "SELECT site, state FROM repositories WHERE repository = ?", (repository,)
        )
        assert sorted(rows) == [("eu", "synced"), ("us", "synced")], rows
        assert served.stop(signal.SIGTERM) == 0
    finally:
        served.stop(signal.SIGKILL)
    text = log.read_text()
    assert "the tracking database does not answer" in text and "the tracking database answers again" in text
    # The outage is said once; the tasks failing on it meanwhile (leadership tried every few seconds) are
    # restarted without a line per try. At most one each: a task may find the database gone first.
    failed = Counter(re.findall(r"(\w+) task failed:", text))
    assert all(count <= 1 for count in failed.values()), failed
    assert_log_clean(log)


# -- (b) a NOTIFY wakes an idle engine -------------------------------------------------------------------


def test_postgres_restarted_under_two_workers_loses_no_acknowledged_push(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    own_cluster: PostgresCluster,
) -> None:
    """Two workers share the database when it restarts: both refuse events while it is away (the
    registry sends them again), both reconnect, and every push acknowledged by either, before or after,
    reaches both secondaries; the push queue ends empty and both workers end healthy."""
    primary, eu, us = registry_factory("primary"), registry_factory("eu"), registry_factory("us")
    repository = "restart/workers"
    url = own_cluster.url(own_cluster.database())
    workers: list[Served] = []
    pushed: dict[str, str] = {}
    acknowledged: list[str] = []
    sockets = Path(tempfile.mkdtemp(prefix="pgw-"))  # a unix socket path stays under ~100 bytes
    try:
        for name in ("a", "b"):
            port = free_port()
            config = write_geo_config(
                tmp_path / name, primary, [eu, us], key_pair,
                engine={"reconcile_interval": 3600, "database": url, "lease_seconds": 6},
                notifications={"listen": f"127.0.0.1:{port}", "secret": SECRET},
            )  # fmt: skip
            # Two workers of one host on one database: each names its own API socket (the default is
            # made from the database, the same for both).
            data = tomllib.loads(config.read_text())
            data["api"] = {"listen": str(sockets / f"{name}.sock")}
            config.write_text(tomli_w.dumps(data))
            workers.append(Served(config, port, tmp_path / f"{name}.log").start())
        with RawPusher.for_registry(primary) as pusher:

            def push(i: int) -> dict[str, object]:
                image = oci_image(f"pg-workers-{i}")
                pusher.push_tree(repository, image, f"t{i}")
                pushed[f"t{i}"] = image.digest
                event = notification(repository, tag=f"t{i}", event_id=f"w-{i}-{uuid.uuid4()}")
                event["target"]["digest"] = image.digest
                return event

            def deliver(event: dict[str, object], to: Served) -> int:
                response = post(to, {"events": [event]})
                if response.status_code == 200:
                    acknowledged.append(str(event["id"]))
                return response.status_code

            assert [deliver(push(i), workers[i % 2]) for i in range(4)] == [200] * 4
            own_cluster.stop("fast")
            stopped = time.monotonic()
            refused = [push(i) for i in range(4, 8)]
            during = [deliver(event, workers[i % 2]) for i, event in enumerate(refused)]
            own_cluster.start()
            restarted = time.monotonic()
            for worker in workers:
                wait_until(
                    lambda w=worker: _health(w)[0] == 200, timeout=60, what="healthy after the restart"
                )
            healthy = time.monotonic() - restarted
            # What the registry does with a refused event: it sends it again.
            assert [deliver(event, workers[i % 2]) for i, event in enumerate(refused)] == [200] * 4
            assert [deliver(push(i), workers[i % 2]) for i in range(8, 12)] == [200] * 4
        with RawPusher.for_registry(eu) as e, RawPusher.for_registry(us) as u:
            wait_replicated([e, u], repository, dict(pushed), timeout=120)
        for worker in workers:
            wait_until(lambda w=worker: _idle(w), timeout=60, what="both workers idle")
        print(
            f"PostgreSQL down {restarted - stopped:.1f} s under two workers; both healthy "
            f"{healthy:.2f} s after it started again; {len(pushed)} tags on both secondaries"
        )
        assert during == [503] * 4, "an event got a 200 while the database was away"
        config = workers[0].config
        assert db_query(config.parent, "SELECT COUNT(*) FROM push_queue") == [(0,)]
        stored = {str(e) for (e,) in db_query(config.parent, "SELECT event_id FROM notifications")}
        assert set(acknowledged) <= stored, f"acknowledged but lost: {set(acknowledged) - stored}"
        for worker in workers:
            assert worker.stop(signal.SIGTERM) == 0
    finally:
        for worker in workers:
            worker.stop(signal.SIGKILL)
        shutil.rmtree(sockets, ignore_errors=True)
    for worker in workers:
        text = worker.log_path.read_text()
        assert "the tracking database does not answer" in text, worker.log_path
        assert "the tracking database answers again" in text, worker.log_path
    assert_log_clean(*(w.log_path for w in workers))


def test_work_committed_elsewhere_wakes_an_idle_engine_by_notify_not_by_its_poll(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    postgres_database: PostgresDatabase,
) -> None:
    primary, eu = registry_factory("primary"), registry_factory("eu")  # no notifications: only ours
    repository = "notify/app"
    port = free_port()
    poll = 60.0  # the backstop: anything copied within seconds was woken by a NOTIFY
    config = write_geo_config(
        tmp_path / "geo",
        primary,
        [eu],
        key_pair,
        engine={"reconcile_interval": 3600, "database": postgres_database.url, "poll_interval": poll},
        notifications={"listen": f"127.0.0.1:{port}", "secret": SECRET},
    )
    images = {f"v{i}": oci_image(f"notify-{i}") for i in (1, 2, 3)}
    with RawPusher.for_registry(primary) as pusher:
        pusher.push_tree(repository, images["v1"], "v1")
    served = Served(config, port, tmp_path / "serve.log").start()
    elsewhere = Tracking(postgres_database)  # another process's view: a console's resync, another worker
    started = time.monotonic()
    try:
        with RawPusher.for_registry(eu) as e:
            wait_replicated([e], repository, {"v1": images["v1"].digest}, timeout=60)
        wait_until(lambda: _idle(served), timeout=30, what="serve idle after its backfill")
        time.sleep(1.0)  # every local poke consumed: the scheduler now waits out its 60 s poll
        notified = metric(served, "geo_tui_wakeups_total", part="scheduler", cause="notify")

        # A resync committed by another process: the scheduler wakes from its NOTIFY.
        with RawPusher.for_registry(primary) as pusher:
            pusher.push_tree(repository, images["v2"], "v2")
        committed = time.monotonic()
        assert elsewhere.request_sync(repositories=[repository]) == 1
        with RawPusher.for_registry(eu) as e:
            wait_replicated([e], repository, {t: images[t].digest for t in ("v1", "v2")}, timeout=poll / 3)
        resync_copied = time.monotonic() - committed
        assert metric(served, "geo_tui_wakeups_total", part="scheduler", cause="notify") > notified
        wait_until(lambda: _idle(served), timeout=30, what="serve idle after the resync")
        time.sleep(1.0)

        # A push event another worker received and committed: the push copier wakes from its NOTIFY.
        push_notified = metric(served, "geo_tui_wakeups_total", part="push", cause="notify")
        with RawPusher.for_registry(primary) as pusher:
            pusher.push_tree(repository, images["v3"], "v3")
        committed = time.monotonic()
        elsewhere.record_notifications(
            [(f"elsewhere-{uuid.uuid4()}", "push", repository, "v3", images["v3"].digest)],
            [],
            time.time(),
            pushes=[(repository, "v3", images["v3"].digest)],
            push_rows=[("eu", repository)],
        )
        with RawPusher.for_registry(eu) as e:
            wait_replicated([e], repository, {t: images[t].digest for t in images}, timeout=poll / 3)
        push_copied = time.monotonic() - committed
        assert metric(served, "geo_tui_wakeups_total", part="push", cause="notify") > push_notified

        wakes = {
            part: (
                metric(served, "geo_tui_wake_seconds_sum", part=part),
                metric(served, "geo_tui_wake_seconds_count", part=part),
            )
            for part in ("scheduler", "push")
        }
        for part, (total, count) in wakes.items():
            assert count >= 1, part
            print(f"{part}: {count:.0f} notified wakes, mean NOTIFY -> awake {1000 * total / count:.1f} ms")
        print(
            f"resync committed elsewhere -> copied {resync_copied:.2f} s; push -> copied {push_copied:.2f} s"
        )
        assert time.monotonic() - started < poll  # the whole test ran inside one backstop interval
        assert served.stop(signal.SIGTERM) == 0
    finally:
        served.stop(signal.SIGKILL)
        elsewhere.close()
    assert_log_clean(tmp_path / "serve.log")


def test_work_committed_without_a_notify_is_found_by_the_poll_backstop(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    postgres_database: PostgresDatabase,
) -> None:
    """A notify lost (sent while the listen connection was down, or work queued by hand): the engine
    finds the work on its next poll all the same."""
    primary, eu = registry_factory("primary"), registry_factory("eu")
    repository = "backstop/app"
    port = free_port()
    config = write_geo_config(
        tmp_path / "geo",
        primary,
        [eu],
        key_pair,
        engine={"reconcile_interval": 3600, "database": postgres_database.url, "poll_interval": 1},
        notifications={"listen": f"127.0.0.1:{port}", "secret": SECRET},
    )
    first, second = oci_image("backstop-1"), oci_image("backstop-2")
    with RawPusher.for_registry(primary) as pusher:
        pusher.push_tree(repository, first, "v1")
    served = Served(config, port, tmp_path / "serve.log").start()
    try:
        with RawPusher.for_registry(eu) as e:
            wait_replicated([e], repository, {"v1": first.digest}, timeout=60)
        wait_until(lambda: _idle(served), timeout=30, what="serve idle after its backfill")
        backstop = metric(served, "geo_tui_wakeups_total", part="scheduler", cause="backstop")
        with RawPusher.for_registry(primary) as pusher:
            pusher.push_tree(repository, second, "v2")
        with psycopg.connect(postgres_database.url, autocommit=True) as db:  # queued, and no NOTIFY sent
            db.execute(
                "UPDATE repositories SET generation = generation + 1, state = 'pending', retry_at = NULL "
                "WHERE repository = %s",
                (repository,),
            )
        with RawPusher.for_registry(eu) as e:
            wait_replicated([e], repository, {"v1": first.digest, "v2": second.digest}, timeout=30)
        assert metric(served, "geo_tui_wakeups_total", part="scheduler", cause="backstop") > backstop
        assert served.stop(signal.SIGTERM) == 0
    finally:
        served.stop(signal.SIGKILL)
    assert_log_clean(tmp_path / "serve.log")


# -- (c) acknowledged in a burst, then kill -9 --------------------------------------------------------


def test_a_burst_acknowledged_just_before_kill_9_is_copied_by_the_next_serve(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    postgres_database: PostgresDatabase,
) -> None:
    primary, eu = registry_factory("primary"), registry_factory("eu")  # no notifications: only ours
    repository = "burst/app"
    port = free_port()
    config = write_geo_config(
        tmp_path / "geo",
        primary,
        [eu],
        key_pair,
        engine={"reconcile_interval": 3600, "database": postgres_database.url},
        notifications={"listen": f"127.0.0.1:{port}", "secret": SECRET},
    )
    images = {f"b{i}": oci_image(f"burst-{i}") for i in range(12)}
    served = Served(config, port, tmp_path / "serve-1.log").start()
    try:
        eu.stop()  # nothing the events ask for can be copied before the kill
        with RawPusher.for_registry(primary) as pusher:
            for tag, image in images.items():
                pusher.push_tree(repository, image, tag)

        def send(tag: str) -> int:
            event = notification(repository, tag=tag, event_id=f"burst-{tag}-{uuid.uuid4()}")
            event["target"]["digest"] = images[tag].digest
            return post(served, {"events": [event]}).status_code

        started = time.monotonic()
        with ThreadPoolExecutor(len(images)) as pool:
            codes = list(pool.map(send, images))
        took = time.monotonic() - started
        assert served.process is not None
        served.process.kill()  # SIGKILL right after the last acknowledgement
        served.process.wait(timeout=10)
    finally:
        served.stop(signal.SIGKILL)
    assert codes == [200] * len(images)
    print(f"{len(images)} concurrent notifications acknowledged in {took * 1000:.0f} ms on PostgreSQL")
    stored = db_query(config.parent, "SELECT COUNT(*) FROM notifications WHERE event_id LIKE 'burst-%'")
    assert stored == [(len(images),)]
    # Each push is still queued for its copy, or its copy failed (eu down) and queued a full sync instead.
    queued = {
        t
        for (t,) in db_query(config.parent, "SELECT tag FROM push_queue WHERE repository = ?", (repository,))
    }
    rows = db_query(config.parent, "SELECT state FROM repositories WHERE repository = ?", (repository,))
    assert queued == set(images) or rows == [("pending",)] or rows == [("failed",)], (queued, rows)

    eu.start()
    restarted = Served(config, port, tmp_path / "serve-2.log").start()
    try:
        with RawPusher.for_registry(eu) as e:
            wait_replicated([e], repository, {t: i.digest for t, i in images.items()}, timeout=90)
        wait_until(lambda: _idle(restarted), timeout=60, what="the push queue empty")
        assert db_query(config.parent, "SELECT COUNT(*) FROM push_queue") == [(0,)]
        assert restarted.stop(signal.SIGTERM) == 0
    finally:
        restarted.stop(signal.SIGKILL)
    assert_log_clean(tmp_path / "serve-1.log", tmp_path / "serve-2.log")
