"""Bounded resources on real registries: listings that never end are refused with a reason naming the
site or repository; the receiver closes connections whose request head never ends, and logs running
out of file descriptors once a minute."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from geo_tui._http_server import HEADER_TIMEOUT
from geo_tui.config import load_config
from geo_tui.engine import Engine, SyncSummary
from tests.e2e.test_api import tags_on
from tests.e2e.test_cli import geo
from tests.support.distribution import Distribution, free_port
from tests.support.endless import EndlessListings
from tests.support.geo import tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.many_tags import tag_names, write_tags
from tests.support.oci import oci_image
from tests.support.push import RawPusher
from tests.support.served import EVENTS, NOTIFY_SECRET, Served, wait_until, write_served_config
from tests.support.synthetic import synthetic_sync_in_child

# Peak RSS added per tag of a listing, at most. The tag -> digest maps themselves stay (~60-byte names in
# a few dicts); what went is the task per tag, ~1.6 KiB each.
BYTES_PER_TAG = 700

# A request head begun and never finished: what a slowloris client, or a port scanner, leaves open.
HALF_A_HEAD = f"POST {EVENTS} HTTP/1.1\r\nHost: geo\r\nContent-Type: application/json\r\n".encode()


def half_open(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(HALF_A_HEAD)
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def push_event(repository: str, tag: str, digest: str) -> bytes:
    event = {
        "id": f"bounds-{tag}",
        "timestamp": "2026-12-06T10:11:12Z",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "repository": repository,
            "digest": digest,
            "tag": tag,
        },
        "request": {"method": "PUT"},
        "actor": {},
        "source": {"addr": "test"},
    }
    return json.dumps({"events": [event]}).encode()


def test_a_catalog_that_pages_forever_ends_sync_once_with_exit_1_naming_the_site(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> None:
    primary, eu = registry_factory("primary"), registry_factory("eu")
    with RawPusher.for_registry(primary) as pusher:
        pusher.push_tree("shop/app", oci_image("app"), "v1")
    with EndlessListings(primary.url, endless=r"^/v2/_catalog$") as proxy:
        config = write_geo_config(
            tmp_path / "geo",
            primary,
            [eu],
            key_pair,
            engine={"max_catalog_pages": 25},
            primary_options={"registry": proxy.url},
        )
        result = geo("--config", str(config), "sync", "--once")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "geo-tui: primary: GET catalog: more than 25 pages and the registry still links to a next one; "
        "raise [engine] max_catalog_pages if it really lists that many repositories"
    )
    assert proxy.pages == 25  # it stopped at the cap, not one page later


def test_a_tag_list_that_pages_forever_fails_that_repository_by_name_and_the_others_sync(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> None:
    primary, eu = registry_factory("primary"), registry_factory("eu")
    with RawPusher.for_registry(primary) as pusher:
        pusher.push_tree("shop/app", oci_image("app"), "v1")
        pusher.push_tree("shop/endless", oci_image("endless"), "v1")
        want = tag_digests(pusher, "shop/app")
    with EndlessListings(primary.url, endless=r"^/v2/shop/endless/tags/list$") as proxy:
        config = write_geo_config(
            tmp_path / "geo",
            primary,
            [eu],
            key_pair,
            engine={"max_tags_per_repository": 40, "sync_attempts": 1},
            primary_options={"registry": proxy.url},
        )
        result = geo("--config", str(config), "sync", "--once", "--json")
    assert result.returncode == 1, result
    summary = json.loads(result.stdout)["sites"]["eu"]
    assert summary["synced"] == 1 and summary["failed"] == 1, summary
    assert list(summary["failures"]) == ["shop/endless"]
    assert (
        "primary: GET tags shop/endless: more than 40 tags; raise [engine] max_tags_per_repository "
        "if the repository really holds that many"
    ) in summary["failures"]["shop/endless"]
    assert proxy.pages == 40  # one tag a page (the same one again): every page counts
    with RawPusher.for_registry(eu) as eu_pusher:
        assert tag_digests(eu_pusher, "shop/app") == want


def test_sockets_that_never_finish_their_headers_are_closed_and_the_receiver_keeps_answering(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> None:
    port = free_port()
    primary, eu = registry_factory("primary"), registry_factory("eu")
    with RawPusher.for_registry(primary) as pusher, RawPusher.for_registry(eu) as eu_pusher:
        pusher.push_tree("shop/app", oci_image("app"), "v1")
        config = write_served_config(tmp_path / "geo", primary, [eu], key_pair, port=port)
        served = Served(config, port, tmp_path / "serve.log").start()
        try:
            wait_until(lambda: "v1" in tags_on(eu_pusher, "shop/app"), what="the backfill")
            stuck = half_open(port, 200)
            opened = time.monotonic()
            # Health and a real notification are answered while the 200 wait for their deadline.
            assert httpx.get(served.url + "/-/health", timeout=5).status_code == 200
            digest = pusher.push_tree("shop/app", oci_image("app-2"), "v2")
            answer = httpx.post(
                served.url + EVENTS,
                content=push_event("shop/app", "v2", digest),
                headers={"Authorization": NOTIFY_SECRET, "Content-Type": "application/json"},
                timeout=5,
            )
            assert answer.status_code == 200, answer.text
            wait_until(lambda: tags_on(eu_pusher, "shop/app").get("v2") == digest, what="the push")
            # Every stuck socket is closed by the receiver once its head is overdue, not kept forever.
            deadline = opened + HEADER_TIMEOUT + 10
            left = [s for s in stuck if not closed_by_server(s, max(0.01, deadline - time.monotonic()))]
            assert left == [], f"{len(left)} of 200 half-open sockets still open"
            for sock in stuck:
                sock.close()
            assert httpx.get(served.url + "/-/health", timeout=5).status_code == 200
        finally:
            assert served.stop() == 0
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def test_running_out_of_file_descriptors_is_logged_once_a_minute_and_serve_recovers(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> None:
    port = free_port()
    primary, eu = registry_factory("primary"), registry_factory("eu")
    config = write_served_config(tmp_path / "geo", primary, [eu], key_pair, port=port)
    log_path = tmp_path / "serve.log"
    limit = 96  # enough for serve's own files and connections, far fewer than the sockets below

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    )
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "geo_tui", "--config", str(config), "serve"],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            preexec_fn=lower_limit,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, log_path.read_text()
        try:
            return httpx.get(url + "/-/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, what="serve's /-/health")
        stuck = half_open(port, 2 * limit)  # the kernel queues what serve cannot accept
        wait_until(lambda: "cannot accept connections" in log_path.read_text(), what="the EMFILE line")
        time.sleep(3)  # asyncio retries accept() every second: three more rounds of EMFILE
        # Once the accepted ones pass their header deadline they are closed, descriptors come back, and
        # the queued ones are accepted (and closed in turn): serve answers again.
        for sock in stuck:
            closed_by_server(sock, 0.01)
        wait_until(healthy, timeout=3 * HEADER_TIMEOUT + 10, what="/-/health after the descriptors came back")
        for sock in stuck:
            sock.close()
        text = log_path.read_text()  # the running serve's log; its shutdown is another matter (below)
    finally:
        # The SIGTERM while out of descriptors is the next test's; this one has what it needs.
        process.kill()
        process.wait()
    assert text.count("cannot accept connections: Too many open files") == 1, text[-3000:]
    assert "socket.accept() out of system resource" not in text and "Traceback" not in text, text[-3000:]
    assert len(text.splitlines()) < 50, text[-3000:]


def test_sigterm_while_out_of_file_descriptors_stops_serve_at_once_and_cleanly(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> None:
    """SIGTERM while the receiver cannot accept (EMFILE, so asyncio holds accept retries on a timer and
    the accepted sockets have not reached their header deadline): serve stops within seconds, exit 0,
    no traceback (a retry firing on the closed listening socket would log one)."""
    port = free_port()
    primary, eu = registry_factory("primary"), registry_factory("eu")
    config = write_served_config(tmp_path / "geo", primary, [eu], key_pair, port=port)
    log_path = tmp_path / "serve.log"
    limit = 96

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    )
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "geo_tui", "--config", str(config), "serve"],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            preexec_fn=lower_limit,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, log_path.read_text()
        try:
            return httpx.get(url + "/-/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    stuck: list[socket.socket] = []
    try:
        wait_until(healthy, what="serve's /-/health")
        stuck = half_open(port, 2 * limit)
        wait_until(lambda: "cannot accept connections" in log_path.read_text(), what="the EMFILE line")
        time.sleep(1.5)  # an accept retry is pending on its timer now
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            status = None
    finally:
        for sock in stuck:
            sock.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log_path.read_text()
    assert status == 0, f"serve did not exit 0 within 15 s of SIGTERM ({status}):\n{text[-3000:]}"
    assert "Traceback" not in text and "Invalid file descriptor" not in text, text[-3000:]


def test_a_repository_of_many_tags_is_read_by_a_bounded_pool_and_every_tag_is_looked_at(
    registry_factory: Callable[..., Distribution], key_pair: TestKeyPair, tmp_path: Path
) -> None:
    count = 400
    primary, eu = registry_factory("primary"), registry_factory("eu")
    tags = tag_names(count)
    lacking = set(tags[1::40])  # 10 tags the secondary must get
    with RawPusher.for_registry(primary) as pusher, RawPusher.for_registry(eu) as eu_pusher:
        digest = pusher.push_tree("ci/builds", oci_image("builds"), tags[0])
        eu_pusher.push_tree("ci/builds", oci_image("builds"), tags[0])
    write_tags(primary, "ci/builds", digest, tags[1:])
    write_tags(eu, "ci/builds", digest, [t for t in tags[1:] if t not in lacking])
    config = load_config(write_geo_config(tmp_path / "geo", primary, [eu], key_pair))
    marks = primary.settled_mark(), eu.settled_mark()

    async def run() -> tuple[SyncSummary, int]:
        most = 0
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal most
            while not done.is_set():
                most = max(most, len(asyncio.all_tasks()))
                await asyncio.sleep(0.001)

        watcher = asyncio.ensure_future(watch())
        async with Engine(config) as engine:
            summary = await engine.sync_once()
        done.set()
        await watcher
        return summary, most

    summary, most_tasks = asyncio.run(run())
    site = summary.sites["eu"]
    assert summary.ok and site.synced == 1 and site.stats.tags_pushed == len(lacking), summary
    # One task per tag would be 400 at once (the old gather); a pool is a few dozen whatever the count.
    assert most_tasks < 100, most_tasks

    def heads(registry: Distribution, mark: int) -> list[str]:
        prefix = "/v2/ci/builds/manifests/"
        paths = [r.path for r in registry.requests(method="HEAD", since_mark=mark)]
        return sorted(p.removeprefix(prefix) for p in paths if p.startswith(prefix) and ":" not in p)

    assert heads(primary, marks[0]) == tags  # every tag looked at, once
    assert heads(eu, marks[1]) == sorted(set(tags) - lacking)
    with RawPusher.for_registry(eu) as eu_pusher:
        assert len(eu_pusher.list_tags("ci/builds")) == count


def test_memory_stays_flat_from_2k_to_20k_tags_and_every_tag_is_looked_at() -> None:
    """The real engine, client and database over the synthetic registry (tests/support/synthetic.py), in
    child processes: their peak RSS differs by far less than the old ~1.6 KiB a tag."""

    def sync(count: int) -> dict[str, Any]:
        figures = synthetic_sync_in_child(count)
        assert figures["primary_tags_looked_at"] == count and figures["primary_tag_heads"] == count
        assert figures["secondary_tag_heads"] == count - figures["missing_on_secondary"]
        assert (
            figures["puts"] == figures["missing_on_secondary"]
            and figures["secondary_tags_held_after"] == count
        )
        assert figures["max_tasks"] < 100, figures
        return figures

    small, large = sync(2_000), sync(20_000)
    growth = (large["peak_rss_kib"] - small["peak_rss_kib"]) * 1024 / 18_000
    assert growth < BYTES_PER_TAG, f"{growth:.0f} bytes a tag: {small}, {large}"
