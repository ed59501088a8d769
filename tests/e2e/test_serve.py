"""`geo-tui serve` with a real Distribution primary whose notifications point at it."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from geo_tui.engine.tracking.postgres import PostgresDatabase
from tests.support.distribution import Distribution, free_port
from tests.support.geo import image_with_layers, tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import (
    OCI_LAYER_GZIP,
    Blob,
    docker_image,
    layer_blob,
    multi_arch,
    oci_image,
    random_bytes,
    write_oci_layout,
)
from tests.support.postgres import BACKENDS, database_option, query_tracking
from tests.support.push import RawPusher, skopeo_push
from tests.support.served import EVENTS, NOTIFY_SECRET, Served, wait_until

SECRET = NOTIFY_SECRET


@pytest.fixture(params=BACKENDS)
def tracking_backend(request: pytest.FixtureRequest) -> str:
    """The serve tests that use `tracking_target` run on a SQLite file and on a real PostgreSQL."""
    return str(request.param)


@pytest.fixture
def live(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    tracking_target: Path | PostgresDatabase,
) -> Iterator[tuple[Distribution, Distribution, Distribution, Served]]:
    port = free_port()
    primary = registry_factory(
        "primary", notification_url=f"http://127.0.0.1:{port}{EVENTS}", notification_secret=SECRET
    )
    secondaries = [registry_factory("eu"), registry_factory("us")]
    config = write_geo_config(
        tmp_path / "geo",
        primary,
        secondaries,
        key_pair,
        engine={"reconcile_interval": 3600, **database_option(tracking_target)},
        notifications={"listen": f"127.0.0.1:{port}", "secret": SECRET},
    )
    served = Served(config, port, tmp_path / "serve.log").start()
    try:
        yield primary, secondaries[0], secondaries[1], served
    finally:
        served.stop(signal.SIGKILL)


def test_a_push_reaches_every_secondary_and_sigterm_exits_cleanly(
    live: tuple[Distribution, Distribution, Distribution, Served],
) -> None:
    primary, eu, us, served = live
    with (
        RawPusher.for_registry(primary) as pusher,
        RawPusher.for_registry(eu) as eu_p,
        RawPusher.for_registry(us) as us_p,
    ):
        image = oci_image("live-1")
        pusher.push_tree("live/app", image, "v1")
        for target in (eu_p, us_p):
            wait_until(
                lambda t=target: tag_digests_safe(t, "live/app") == {"v1": image.digest}, what="replication"
            )
        metrics = httpx.get(served.url + "/metrics").text
        assert 'geo_tui_notifications_total{action="push"}' in metrics
        assert "geo_tui_event_to_synced_seconds_bucket" in metrics
    started = time.monotonic()
    assert served.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 8
    log = served.log_path.read_text()
    assert SECRET not in log and "Traceback" not in log


def tag_digests_safe(pusher: RawPusher, repository: str) -> dict[str, str]:
    try:
        return tag_digests(pusher, repository)
    except AssertionError:
        return {}


# -- helpers for the tests below -------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
Live = tuple[Distribution, Distribution, Distribution, Served]


def notification(
    repository: str,
    *,
    action: str = "push",
    tag: str | None = "v1",
    media_type: str | None = OCI_MANIFEST,
    event_id: str | None = None,
) -> dict[str, Any]:
    """One well-formed event, shaped as Distribution 2.8 posts it."""
    target: dict[str, Any] = {
        "repository": repository,
        "digest": "sha256:" + "0" * 64,
        "size": 1,
        "length": 1,
    }
    if media_type is not None:
        target["mediaType"] = media_type
    if tag is not None:
        target["tag"] = tag
    return {
        "id": event_id or str(uuid.uuid4()),
        "timestamp": "2024-05-01T10:11:12Z",
        "action": action,
        "target": target,
        "request": {"method": "PUT", "useragent": "geo-tui-tests"},
        "actor": {},
        "source": {"addr": "test"},
    }


def post(
    served: Served,
    body: bytes | dict[str, Any] | list[Any],
    *,
    secret: str | None = SECRET,
    client: httpx.Client | None = None,
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
    if secret is not None:
        headers["Authorization"] = secret
    return (client or httpx).post(served.url + EVENTS, content=content, headers=headers, timeout=10)


def healthy(served: Served) -> bool:
    assert served.process is not None and served.process.poll() is None, "serve exited"
    return httpx.get(served.url + "/-/health", timeout=2).status_code == 200


def health(served: Served) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(served.url + "/-/health", timeout=2).json()
    return document


def db_query(config_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the tracking database (SQLite read-only, or PostgreSQL), from outside the serve process."""
    return query_tracking(config_dir / "config.toml", sql, params)


def wait_settled(served: Served, repository: str, timeout: float = 30.0) -> None:
    """Wait until serve is idle and every site's row of `repository` is synced and verified: no request
    for it is still to come from geo-tui (verification runs after a copy, outside `in_flight`)."""

    def settled() -> bool:
        document = health(served)
        if document["in_flight"] or document["queue_depth"]:
            return False
        states = db_query(
            served.config.parent,
            "SELECT state, verification_state FROM repositories WHERE repository = ?",
            (repository,),
        )
        return bool(states) and all(state == ("synced", "succeeded") for state in states)

    wait_until(settled, timeout=timeout, what=f"{repository} synced and verified everywhere, serve idle")


def wait_replicated(
    pushers: list[RawPusher], repository: str, expected: dict[str, str], timeout: float = 20.0
) -> None:
    for target in pushers:
        wait_until(
            lambda t=target: tag_digests_safe(t, repository) == expected,
            timeout=timeout,
            what=f"{repository} = {sorted(expected)} on {target.base_url}",
        )


def assert_log_clean(*paths: Path) -> None:
    for path in paths:
        text = path.read_text(errors="replace")
        assert SECRET not in text, f"the secret is in {path}"
        assert "Traceback" not in text, f"a traceback in {path}:\n{text[-3000:]}"


@pytest.fixture
def pushers(live: Live) -> Iterator[tuple[RawPusher, RawPusher, RawPusher]]:
    primary, eu, us, _ = live
    with (
        RawPusher.for_registry(primary) as p,
        RawPusher.for_registry(eu) as e,
        RawPusher.for_registry(us) as u,
    ):
        yield p, e, u


# -- pushes ----------------------------------------------------------------------------------------------


def test_skopeo_and_raw_pushes_reach_both_secondaries(
    live: Live, pushers: tuple[RawPusher, RawPusher, RawPusher], tmp_path: Path
) -> None:
    primary, _, _, served = live
    pusher, eu_p, us_p = pushers
    images = {
        "oci": oci_image("sk-oci"),
        "multi": multi_arch("sk-multi"),
        "docker": docker_image("sk-docker"),
    }
    layout = write_oci_layout(tmp_path / "layout", images)
    skopeo_push(layout, "oci", primary.url, "skopeo/oci", dest_tag="v1")
    skopeo_push(layout, "multi", primary.url, "skopeo/multi", dest_tag="latest")
    skopeo_push(layout, "docker", primary.url, "skopeo/docker", dest_tag="1.0")
    raw = oci_image("raw-1")
    pusher.push_tree("raw/app", raw, "v1")
    pusher.push_tree("raw/app", multi_arch("raw-2"), "multi")
    expected = {
        "skopeo/oci": {"v1": images["oci"].digest},
        "skopeo/multi": {"latest": images["multi"].digest},
        "skopeo/docker": {"1.0": images["docker"].digest},
        "raw/app": {"v1": raw.digest, "multi": multi_arch("raw-2").digest},
    }
    for repository, tags in expected.items():
        wait_replicated([eu_p, us_p], repository, tags)
    # every platform of the multi-arch images is there, not just the index
    for target in (eu_p, us_p):
        for child in images["multi"].children:
            assert target.head_manifest("skopeo/multi", child.digest).status_code == 200
    assert healthy(served)
    assert_log_clean(served.log_path)


# -- deletions -------------------------------------------------------------------------------------------


def test_a_deleted_tag_disappears_and_tags_sharing_a_manifest_are_never_lost(
    live: Live, pushers: tuple[RawPusher, RawPusher, RawPusher]
) -> None:
    _, _, _, served = live
    pusher, eu_p, us_p = pushers
    repository = "del/app"
    only_v1, shared, multi = oci_image("del-v1"), oci_image("del-shared"), multi_arch("del-multi")
    pusher.push_tree(repository, only_v1, "v1")
    pusher.push_tree(repository, shared, "latest")
    pusher.push_tree(repository, shared, "stable")
    pusher.push_tree(repository, multi, "multi")
    before = {"v1": only_v1.digest, "latest": shared.digest, "stable": shared.digest, "multi": multi.digest}
    wait_replicated([eu_p, us_p], repository, before)
    # Tags the primary never had, on the secondaries, whose manifests kept tags reach: deleting them
    # by digest (all Distribution 2.8 can do) would take `latest`, `stable` or `multi` along.
    child = multi.children[0]
    for target in (eu_p, us_p):
        target.push_manifest(repository, "alias", shared.manifest, shared.media_type)
        target.push_manifest(repository, "child", child.manifest, child.media_type)

    # v1's manifest is used by v1 alone: delete it on the primary by digest (Distribution 2.8's way).
    response = pusher.delete_manifest(repository, only_v1.digest)
    assert response.status_code == 202, response.text
    assert pusher.list_tags(repository) == ["latest", "multi", "stable"]
    for target in (eu_p, us_p):
        wait_until(
            lambda t=target: (
                "v1" not in tag_digests_safe(t, repository) and bool(tag_digests_safe(t, repository))
            ),
            what=f"v1 deleted on {target.base_url}",
        )
    for target in (eu_p, us_p):
        held = tag_digests(target, repository)
        assert held == {
            "latest": shared.digest,
            "stable": shared.digest,
            "multi": multi.digest,
            "alias": shared.digest,
            "child": child.digest,
        }, target.base_url
        assert target.head_manifest(repository, only_v1.digest).status_code == 404
        for platform in multi.children:
            assert target.head_manifest(repository, platform.digest).status_code == 200
    log = served.log_path.read_text()
    assert "tag alias kept" in log and "tag child kept" in log
    assert healthy(served)


# -- bad input -------------------------------------------------------------------------------------------


def _five_mib() -> bytes:
    return json.dumps({"events": [notification("big/app")], "pad": " " * (5 * 1024 * 1024)}).encode()


def test_bad_input_gets_its_status_and_the_process_keeps_replicating(
    live: Live, pushers: tuple[RawPusher, RawPusher, RawPusher]
) -> None:
    _, _, _, served = live
    pusher, eu_p, us_p = pushers
    good = {"events": [notification("anything/app")]}
    cases: list[tuple[str, bytes | dict[str, Any] | list[Any], str | None, int]] = [
        ("no secret", good, None, 401),
        ("empty secret", good, "", 401),
        ("wrong secret", good, "wrong-" + SECRET[6:], 401),
        ("secret prefix", good, SECRET[:-1], 401),
        ("bearer secret", good, f"Bearer {SECRET}", 401),
        ("malformed JSON", b'{"events": [', SECRET, 400),
        ("not UTF-8", b"\xff\xfe\xfd", SECRET, 400),
        ("empty body", b"", SECRET, 400),
        ("JSON array", [notification("anything/app")], SECRET, 400),
        ("events not a list", {"events": {"a": 1}}, SECRET, 400),
        ("5 MiB body", _five_mib(), SECRET, 413),
        ("5 MiB body, wrong secret", _five_mib(), "wrong", 401),
        (
            "unknown actions",
            {"events": [notification("x/app", action=a) for a in ("frobnicate", "pull", "mount", "")]},
            SECRET,
            200,
        ),
        ("non-existent repository", {"events": [notification("no/such/repository")]}, SECRET, 200),
        (
            "delete in non-existent repository",
            {"events": [notification("no/such", action="delete")]},
            SECRET,
            200,
        ),
        ("../x", {"events": [notification("../x"), notification("../x", action="delete")]}, SECRET, 200),
        ("upper case", {"events": [notification("UPPER/App")]}, SECRET, 200),
        ("odd events", {"events": [1, None, "x", [], {}]}, SECRET, 200),
    ]
    with httpx.Client() as client:
        for what, body, secret, status in cases:
            response = post(served, body, secret=secret, client=client)
            assert response.status_code == status, f"{what}: {response.status_code} {response.text[:200]}"
            assert SECRET not in response.text and SECRET[:10] not in response.text, what
            if status == 200 and what in ("unknown actions", "../x", "upper case", "odd events"):
                assert response.json()["queued"] == 0, what
            assert healthy(served), what
    tracked = {r[0] for r in db_query(served.config.parent, "SELECT DISTINCT repository FROM repositories")}
    assert not tracked & {"../x", "UPPER/App", "x/app", ""}, tracked
    # the process still runs and replicates
    image = oci_image("after-bad-input")
    pusher.push_tree("after/bad", image, "v1")
    wait_replicated([eu_p, us_p], "after/bad", {"v1": image.digest})
    metrics = httpx.get(served.url + "/metrics").text
    assert 'geo_tui_notification_requests_rejected_total{status="401"}' in metrics
    assert 'geo_tui_notification_requests_rejected_total{status="413"}' in metrics
    assert_log_clean(served.log_path)


def test_an_over_long_repository_name_is_not_queued(live: Live) -> None:
    _, _, _, served = live
    name = "a" * 300
    response = post(served, {"events": [notification(name), notification("b" * 300 + "/c")]})
    assert response.status_code == 200
    assert healthy(served)
    rows = db_query(
        served.config.parent, "SELECT site, state FROM repositories WHERE length(repository) >= 256"
    )
    assert response.json()["queued"] == 0 and rows == [], f"queued {response.json()}; rows {rows}"


def test_deeply_nested_json_is_400_not_a_crash(live: Live) -> None:
    _, _, _, served = live
    response = post(served, b'{"events": ' + b"[" * 100_000)
    assert healthy(served)
    assert response.status_code == 400, response.text[:200]
    assert_log_clean(served.log_path)


def test_the_receiver_answers_without_a_delayed_ack_stall(live: Live) -> None:
    # Distribution delivers its events one at a time per endpoint: every millisecond the receiver takes
    # to answer is a millisecond every later event waits in the primary's in-memory queue.
    _, _, _, served = live
    body = {"events": [notification("timing/app", action="pull")]}
    with httpx.Client() as client:
        assert post(served, body, client=client).status_code == 200  # connect, warm up
        times = []
        for _ in range(20):
            started = time.perf_counter()
            assert post(served, body, client=client).status_code == 200
            times.append(time.perf_counter() - started)
    median = sorted(times)[len(times) // 2]
    assert median < 0.015, f"median {median * 1000:.1f} ms per acknowledged event on 127.0.0.1"


# -- crash after the 200 ---------------------------------------------------------------------------------


def test_an_acknowledged_event_survives_kill_9(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    tracking_target: Path | PostgresDatabase,
) -> None:
    # The primary sends no notifications here: the only event is the one this test posts.
    primary = registry_factory("primary")
    eu, us = registry_factory("eu"), registry_factory("us")
    repository = "crash/app"
    image = oci_image("crash-1")
    with RawPusher.for_registry(primary) as pusher:
        pusher.push_tree(repository, image, "v1")  # pushed while no serve runs
    port = free_port()
    config = write_geo_config(
        tmp_path / "geo",
        primary,
        [eu, us],
        key_pair,
        engine={"reconcile_interval": 3600, **database_option(tracking_target)},
        notifications={"listen": f"127.0.0.1:{port}", "secret": SECRET},
    )
    config_dir = config.parent
    # Secondaries down: the start-up backfill, and the sync the event asks for, cannot complete.
    eu.stop()
    us.stop()
    served = Served(config, port, tmp_path / "serve-1.log").start()
    try:

        def backfill_failed() -> bool:
            rows = db_query(config_dir, "SELECT state FROM repositories WHERE repository = ?", (repository,))
            return len(rows) == 2 and all(state == "failed" for (state,) in rows)

        wait_until(backfill_failed, what="the start-up backfill to fail on both secondaries")
        before = dict(
            db_query(
                config_dir, "SELECT site, generation FROM repositories WHERE repository = ?", (repository,)
            )
        )
        assert all(
            at is None for (at,) in db_query(config_dir, "SELECT oldest_unsynced_event_at FROM repositories")
        )
        event_id = f"kill-9-{uuid.uuid4()}"
        response = post(served, {"events": [notification(repository, event_id=event_id)]})
        # Issue 17: a push that names its manifest is queued as that push (one), not as two repository runs.
        assert response.status_code == 200 and response.json()["queued"] == 1
        assert served.process is not None
        served.process.kill()  # SIGKILL right after the acknowledgement
        served.process.wait(timeout=10)
    finally:
        served.stop(signal.SIGKILL)
    stored = db_query(
        config_dir, "SELECT action, repository, tag FROM notifications WHERE event_id = ?", (event_id,)
    )
    assert stored == [("push", repository, "v1")]
    rows = db_query(
        config_dir,
        "SELECT site, state, generation, oldest_unsynced_event_at FROM repositories WHERE repository = ?",
        (repository,),
    )
    assert len(rows) == 2
    # The event asks for no whole-repository run. A push copy that began in the few ms between the 200
    # and the kill fails on the stopped sites, and a failed push copy asks for one: then its log says so.
    failed_copy = "copy of pushed v1 failed" in (tmp_path / "serve-1.log").read_text()
    for site, state, generation, _ in rows:
        assert state in ("pending", "started", "failed"), (site, state)  # never synced: the sites are down
        allowed = {before[site], before[site] + 1} if failed_copy else {before[site]}
        assert generation in allowed, (site, generation, before[site], failed_copy)
    queued = db_query(config_dir, "SELECT repository, tag, received_at FROM push_queue")
    if not failed_copy:  # the push itself is queued for its copy, with its time kept for the lag figure
        assert [(r, t) for r, t, _ in queued] == [(repository, "v1")] and queued[0][2] is not None

    eu.start()
    us.start()
    restarted = Served(config, port, tmp_path / "serve-2.log").start()
    try:
        with RawPusher.for_registry(eu) as eu_p, RawPusher.for_registry(us) as us_p:
            wait_replicated([eu_p, us_p], repository, {"v1": image.digest})
        wait_until(
            lambda: [r[0] for r in db_query(config_dir, "SELECT state FROM repositories")] == ["synced"] * 2,
            what="both rows synced",
        )
        assert all(
            at is None for (at,) in db_query(config_dir, "SELECT oldest_unsynced_event_at FROM repositories")
        )
        assert restarted.stop(signal.SIGTERM) == 0
    finally:
        restarted.stop(signal.SIGKILL)
    assert_log_clean(tmp_path / "serve-1.log", tmp_path / "serve-2.log")


# -- signals and logs ------------------------------------------------------------------------------------


def test_sigint_exits_0_quickly_and_logs_go_to_stderr_without_the_secret(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> None:
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
        engine={"reconcile_interval": 3600},
        notifications={"listen": f"127.0.0.1:{port}", "secret": SECRET},
    )
    served = Served(config, port, tmp_path / "stderr.log", stdout=tmp_path / "stdout.log").start()
    try:
        image = oci_image("sigint-1")
        with (
            RawPusher.for_registry(primary) as pusher,
            RawPusher.for_registry(eu) as eu_p,
            RawPusher.for_registry(us) as us_p,
        ):
            pusher.push_tree("sigint/app", image, "v1")
            wait_replicated([eu_p, us_p], "sigint/app", {"v1": image.digest})
        assert post(served, {"events": [notification("sigint/app")]}, secret="wrong").status_code == 401
        # a copy in flight when the signal comes: SIGINT must not wait for it for long
        pusher_big = RawPusher.for_registry(primary)
        try:
            big = image_with_layers([Blob(random_bytes("sigint-big", 8 << 20), OCI_LAYER_GZIP)], seed="sb")
            pusher_big.push_tree("sigint/big", big, "v1")
        finally:
            pusher_big.close()
        started = time.monotonic()
        assert served.stop(signal.SIGINT, timeout=10) == 0
        assert time.monotonic() - started < 7
    finally:
        served.stop(signal.SIGKILL)
    stderr = (tmp_path / "stderr.log").read_text()
    stdout = (tmp_path / "stdout.log").read_text()
    assert "receiving notifications on http://127.0.0.1" in stderr
    assert "shutting down" in stderr and "engine stopped" in stderr
    assert stdout == "", stdout[:2000]
    assert_log_clean(tmp_path / "stderr.log")
    assert SECRET.encode() not in (config.parent / "tracking.db").read_bytes()


# -- coalescing ------------------------------------------------------------------------------------------


def test_a_burst_of_events_coalesces_and_an_event_during_a_run_runs_it_again(
    live: Live, pushers: tuple[RawPusher, RawPusher, RawPusher]
) -> None:
    _, eu, us, served = live
    pusher, eu_p, us_p = pushers
    repository = "burst/app"
    first = oci_image("burst-0")
    pusher.push_tree(repository, first, "v0")
    wait_replicated([eu_p, us_p], repository, {"v0": first.digest})
    # The verification after v0's copy lists tags too: let it finish before the count starts.
    wait_settled(served, repository)
    marks = {"eu": eu.mark(), "us": us.mark()}
    log_mark = len(served.log_path.read_text().splitlines())

    # 50 events for one repository from 5 threads; meanwhile the primary gets a large tag (a slow copy)
    # and, while that copy runs, a small one: its event lands during a run.
    big = image_with_layers([Blob(random_bytes("burst-big", 24 << 20), OCI_LAYER_GZIP)], seed="burst-big")
    small = image_with_layers([layer_blob("burst-mid")], seed="burst-mid")
    statuses: list[int] = []
    lock = threading.Lock()

    def burst(offset: int) -> None:
        with httpx.Client() as client:
            for n in range(10):
                event = notification(repository, tag="v0", event_id=f"burst-{offset}-{n}")
                status = post(served, {"events": [event]}, client=client).status_code
                with lock:
                    statuses.append(status)

    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(burst, k) for k in range(5)]
        pusher.push_tree(repository, big, "big")
        in_flight_seen = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not in_flight_seen:
            in_flight_seen = health(served)["in_flight"] > 0
        pusher.push_tree(repository, small, "mid")
        for future in futures:
            future.result(timeout=30)
    assert statuses == [200] * 50
    assert in_flight_seen, "no run was in flight when the second tag was pushed"
    expected = {"v0": first.digest, "big": big.digest, "mid": small.digest}
    wait_replicated([eu_p, us_p], repository, expected, timeout=30)
    wait_settled(served, repository)
    time.sleep(0.5)  # let the access logs catch up with the last replies

    # Only geo-tui's listings: wait_replicated's own polling of the secondaries lists tags too, the more
    # often the slower the machine (that made this count 23 and more under load).
    runs = {
        name: sum(
            entry.user_agent.startswith("geo-tui/")
            for entry in registry.requests("GET", f"/v2/{repository}/tags/list", since_mark=marks[name])
        )
        for name, registry in (("eu", eu), ("us", us))
    }
    log_lines = served.log_path.read_text().splitlines()[log_mark:]
    synced = [line for line in log_lines if "synced:" in line and repository in line]
    # Every sync run lists the secondary's tags once (so does a verification after a run that wrote).
    for name, count in runs.items():
        assert 1 <= count <= 20, f"{name}: {count} tag listings for 52 events (synced lines: {len(synced)})"
    assert len(synced) <= 20, synced
    stored = db_query(
        served.config.parent, "SELECT COUNT(*) FROM notifications WHERE event_id LIKE 'burst-%'"
    )[0][0]
    assert stored == 50


def test_the_periodic_reconcile_catches_a_push_whose_notification_was_lost(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    tracking_target: Path | PostgresDatabase,
) -> None:
    # The primary sends no notifications at all: as if Distribution's in-memory queue lost them.
    primary = registry_factory("primary")
    secondary = registry_factory("eu")
    port = free_port()
    config = write_geo_config(
        tmp_path / "geo",
        primary,
        [secondary],
        key_pair,
        engine={"reconcile_interval": 10, **database_option(tracking_target)},
        notifications={"listen": f"127.0.0.1:{port}", "secret": SECRET},
    )
    served = Served(config, port, tmp_path / "serve.log").start()
    try:
        time.sleep(1.0)  # the start-up backfill has run over an empty primary
        image = oci_image("lost-event")
        with RawPusher.for_registry(primary) as pusher, RawPusher.for_registry(secondary) as eu:
            pusher.push_tree("quiet/app", image, "v1")
            waited = wait_until(
                lambda: tag_digests_safe(eu, "quiet/app") == {"v1": image.digest},
                timeout=25,
                what="reconcile",
            )
        assert waited <= 15, f"the reconcile took {waited:.1f} s with reconcile_interval = 10"
    finally:
        assert served.stop(signal.SIGTERM) == 0
