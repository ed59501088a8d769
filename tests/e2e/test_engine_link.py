"""The console's link to its own engine, in a child process reached through the API client: commands
that return at once, coalesced batches, and the engine's failure or its notifications, against real
Distribution."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from geo_tui.config import load_config
from geo_tui.engine.wire import Resync, Verify
from geo_tui.link.spawned import SpawnedEngine
from tests.support.distribution import Distribution, free_port
from tests.support.geo import tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.links import all_synced, drain_until
from tests.support.oci import oci_image
from tests.support.push import PushError, RawPusher


def test_the_console_engine_reports_and_obeys(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    secondary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    for i in range(3):
        primary_pusher.push_tree(f"link/r{i}", oci_image(f"l{i}"), "v1")
    link = SpawnedEngine(load_config(write_geo_config(tmp_path, primary, [secondary], key_pair)))
    started = time.monotonic()
    link.start()
    assert time.monotonic() - started < 0.5, "start() must not wait for the engine"
    assert link.wait_connected(30)
    assert link._process is not None and link._process.poll() is None, "the engine runs in its process"

    batches = drain_until(link, all_synced(3))
    assert any(b.snapshot is not None for b in batches)
    assert any(b.logs for b in batches)
    # rows are coalesced: one entry per key in a batch
    for b in batches:
        assert len({r.key for r in b.rows}) == len(b.rows)

    primary_pusher.push_tree("link/r0", oci_image("l0-v2"), "v2")
    link.command(lambda engine: engine.resync(Resync(keys=(("secondary", "link/r0"),))))
    drain_until(link, lambda bs: any("resync queued" in r.message for b in bs for r in b.results))
    deadline = time.monotonic() + 15
    while "v2" not in tag_digests(secondary_pusher, "link/r0"):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    link.command(lambda engine: engine.verify(Verify(keys=(("secondary", "link/r0"),))))
    results = drain_until(link, lambda bs: any("verified" in r.message for b in bs for r in b.results))
    verified = [r for b in results for r in b.results if "verified" in r.message]
    assert verified[-1].ok and "1 ok" in verified[-1].message

    link.load_detail("link/r0")
    details = drain_until(link, lambda bs: any(b.details for b in bs))
    detail = next(d for b in details for d in b.details)
    by_site = {s.site: s.tags for s in detail.sites}
    assert by_site["primary"] == by_site["secondary"] and set(by_site["primary"] or {}) == {"v1", "v2"}
    assert detail.differing_tags() == set()

    link.stop()
    assert link._process.returncode == 0, "the engine process stopped cleanly"


def test_a_broken_engine_is_reported_not_raised(
    tmp_path: Path, key_pair: TestKeyPair, primary: Distribution, secondary: Distribution
) -> None:
    config = load_config(write_geo_config(tmp_path, primary, [secondary], key_pair))
    database = config.engine.database
    database.parent.mkdir(parents=True, exist_ok=True)
    database.mkdir()  # a directory where the database file should be: the engine cannot open it
    link = SpawnedEngine(config)
    link.start()
    batch = drain_until(link, lambda bs: any(b.failure for b in bs), timeout=30)[-1]
    assert batch.failure and "Traceback" not in batch.failure
    link.command(lambda engine: engine.resync(Resync(keys=(("secondary", "x"),))))
    assert any(not r.ok for r in link.drain().results)
    link.stop()


def test_the_console_engine_receives_notifications(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    """The console's engine listens on `[notifications] listen` like `serve`: a push reaches the secondary
    long before the (here: one hour) reconcile would find it."""
    port = free_port()
    secret = "Qnotificationsecret0123456789abcdef"
    primary = registry_factory(
        "primary",
        notification_url=f"http://127.0.0.1:{port}/api/v4/container_registry_event/events",
        notification_secret=secret,
    )
    secondary = registry_factory("secondary")
    config = load_config(
        write_geo_config(
            tmp_path,
            primary,
            [secondary],
            key_pair,
            engine={"reconcile_interval": 3600},
            notifications={"listen": f"127.0.0.1:{port}", "secret": secret},
        )
    )
    link = SpawnedEngine(config)
    link.start()
    try:
        assert link.wait_connected(30)
        drain_until(link, lambda bs: any("receiving notifications" in r.message for b in bs for r in b.logs))
        with RawPusher.for_registry(primary) as pusher:
            pusher.push_tree("live/app", oci_image("live"), "v1")
        with RawPusher.for_registry(secondary) as reader:
            deadline = time.monotonic() + 15
            while not _has_tag(reader, "live/app", "v1"):
                assert time.monotonic() < deadline, "the notification never led to a copy"
                time.sleep(0.1)
    finally:
        link.stop()
    # nothing listens on the port once the engine stopped (SO_REUSEADDR: closed connections may linger)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def _has_tag(pusher: RawPusher, repository: str, tag: str) -> bool:
    try:
        return tag in tag_digests(pusher, repository)
    except PushError:  # the repository does not exist yet
        return False
