"""Many `geo-tui serve` workers on one PostgreSQL tracking database (issue 16), on real Distribution
registries: they share a backfill without copying anything twice, and a worker killed in the middle of
a blob loses its lease to another, which completes the repository."""

from __future__ import annotations

import re
import shutil
import signal
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from geo_tui.engine.tracking.postgres import PostgresDatabase
from tests.e2e.test_deletion_safety import assert_pulls_whole
from tests.e2e.test_serve import SECRET, assert_log_clean, db_query
from tests.support.distribution import Distribution, free_port
from tests.support.geo import image_with_layers, tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import layer_blob, oci_image
from tests.support.postgres import database_option
from tests.support.push import RawPusher
from tests.support.served import Served, wait_until
from tests.support.throttle import ThrottledProxy

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.parametrize("registry_kind", ["distribution"], indirect=True),
]

REPOSITORIES = 300  # the figure
WORKERS = 3


@pytest.fixture
def sockets() -> Iterator[Path]:
    """A short folder for the workers' API sockets (a unix socket path must stay under ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="w16-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def worker_config(
    directory: Path,
    primary: Distribution,
    secondaries: list[Distribution],
    key_pair: TestKeyPair,
    database: PostgresDatabase,
    socket: Path,
    *,
    port: int,
    engine: dict[str, Any] | None = None,
    primary_url: str | None = None,
) -> Path:
    """One worker's config: the shared database, its own receiver port and API socket."""
    path = write_geo_config(
        directory,
        primary,
        secondaries,
        key_pair,
        engine={"reconcile_interval": 3600, **database_option(database), **(engine or {})},
        notifications={"listen": f"127.0.0.1:{port}", "secret": SECRET},
    )
    data = tomllib.loads(path.read_text())
    data["api"] = {"listen": str(socket)}
    if primary_url is not None:  # this worker reaches the primary through a slow link
        data["primary"]["registry"] = primary_url
    path.write_text(tomli_w.dumps(data))
    return path


def start_worker(
    name: str,
    tmp_path: Path,
    sockets: Path,
    make: Callable[[Path, Path, int], Path],
) -> Served:
    port = free_port()
    config = make(tmp_path / name, sockets / f"{name}.sock", port)
    return Served(config, port, tmp_path / f"{name}.log").start(timeout=40)


def blobs_copied(served: Served, how: str = "copied") -> dict[str, float]:
    """Blobs this worker streamed (or mounted, ...) into each secondary, from its own /metrics."""
    text = httpx.get(served.url + "/metrics", timeout=5).text
    found: dict[str, float] = {}
    for match in re.finditer(r"^geo_tui_blobs_total\{([^}]*)\} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match[1]))
        if labels.get("how") == how:
            found[labels["site"]] = float(match[2])
    return found


def uploads_by_digest(registry: Distribution) -> Counter[str]:
    """Blob uploads a registry completed, by digest (the PUT that ends an upload names it)."""
    counts: Counter[str] = Counter()
    for line in registry.requests("PUT", "/blobs/uploads/", status=201):
        match = re.search(r"digest=(sha256(?::|%3A)[0-9a-f]{64})", line.uri)
        if match:
            counts[match[1].replace("%3A", ":")] += 1
    return counts


def synced_rows(config: Path) -> int:
    rows = db_query(config.parent, "SELECT COUNT(*) FROM repositories WHERE state = 'synced'")
    return int(rows[0][0])


def test_three_workers_share_a_backfill_and_copy_nothing_twice(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    postgres_database: PostgresDatabase,
    sockets: Path,
) -> None:
    primary, eu, us = registry_factory("primary"), registry_factory("eu"), registry_factory("us")
    expected: dict[str, str] = {}
    began = time.monotonic()

    def push(first: int) -> None:
        with RawPusher.for_registry(primary) as pusher:
            for i in range(first, REPOSITORIES, 4):
                name = f"fleet/app-{i:03d}"
                image = oci_image(f"w16-{i}", layers=1, layer_size=512)
                expected[name] = pusher.push_tree(name, image, "v1")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(push, range(4)))
    print(f"pushed {REPOSITORIES} repositories in {time.monotonic() - began:.1f} s")

    def make(directory: Path, socket: Path, port: int) -> Path:
        return worker_config(
            directory, primary, [eu, us], key_pair, postgres_database, socket, port=port,
            engine={"repository_concurrency": 4, "lease_seconds": 15},
        )  # fmt: skip

    workers: list[Served] = []
    try:
        began = time.monotonic()
        workers = [start_worker(f"worker-{n}", tmp_path, sockets, make) for n in range(WORKERS)]
        config = workers[0].config
        registered = db_query(config.parent, "SELECT id, listen FROM workers")
        assert len(registered) == WORKERS, registered
        for worker in workers:  # each worker's row says where it listens
            assert any(f"127.0.0.1:{worker.port}" in str(listen) for _, listen in registered), registered
        took = wait_until(
            lambda: synced_rows(config) == 2 * REPOSITORIES, timeout=150, what="every row synced"
        )
        print(f"{WORKERS} workers backfilled {REPOSITORIES} repositories x 2 secondaries in {took:.1f} s")
        # Every tag identical on both secondaries.
        with RawPusher.for_registry(eu) as on_eu, RawPusher.for_registry(us) as on_us:
            for name, digest in expected.items():
                assert tag_digests(on_eu, name) == {"v1": digest}, name
                assert tag_digests(on_us, name) == {"v1": digest}, name
        # Each worker did a share, and between them every blob was streamed once per secondary.
        shares = [blobs_copied(w) for w in workers]
        print(f"blobs copied by each worker: {shares}")
        for n, share in enumerate(shares):
            assert sum(share.values()) > 0, f"worker-{n} copied nothing: {shares}"
        for registry in (eu, us):
            uploads = uploads_by_digest(registry)
            twice = {d: n for d, n in uploads.items() if n > 1}
            assert not twice, f"uploaded more than once to {registry.name}: {twice}"
            assert sum(share.get(registry.name, 0) for share in shares) == sum(uploads.values())
        holders = db_query(config.parent, "SELECT COUNT(*) FROM repositories WHERE lease_owner IS NOT NULL")
        assert holders == [(0,)]  # every run gave its lease up
        for worker in workers:
            # No run lost its lease (one that did was cancelled, its work thrown away).
            text = worker.log_path.read_text()
            assert "lease lost" not in text, worker.log_path
            assert "write was dropped" not in text, worker.log_path  # e.g. two workers' log lines
            assert worker.stop(signal.SIGTERM) == 0
        assert db_query(config.parent, "SELECT COUNT(*) FROM workers") == [(0,)]  # clean stops
    finally:
        for worker in workers:
            worker.stop(signal.SIGKILL)
    assert_log_clean(*(w.log_path for w in workers))


def test_a_worker_killed_mid_blob_loses_its_lease_and_another_completes_the_repository(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    postgres_database: PostgresDatabase,
    sockets: Path,
) -> None:
    primary, eu = registry_factory("primary"), registry_factory("eu")
    repository = "big/app"
    big = layer_blob("w16-big", size=6 * 2**20, compresslevel=0)
    image = image_with_layers([big], seed="w16-big")
    with RawPusher.for_registry(primary) as pusher:
        pusher.push_tree(repository, image, "v1")
    slow = ThrottledProxy(int(primary.url.rsplit(":", 1)[1]), bytes_per_second=256 * 1024).start()
    lease = 3.0

    def make_slow(directory: Path, socket: Path, port: int) -> Path:
        return worker_config(
            directory, primary, [eu], key_pair, postgres_database, socket, port=port,
            engine={"lease_seconds": lease}, primary_url=slow.url,
        )  # fmt: skip

    def make_fast(directory: Path, socket: Path, port: int) -> Path:
        return worker_config(
            directory, primary, [eu], key_pair, postgres_database, socket, port=port,
            engine={"lease_seconds": lease},
        )  # fmt: skip

    doomed = start_worker("doomed", tmp_path, sockets, make_slow)
    survivor: Served | None = None
    try:
        config = doomed.config
        # The doomed worker (the only one yet) claims the repository and streams its big blob slowly.
        wait_until(lambda: slow.passed > 1 * 2**20, timeout=60, what="the big blob half-way through")
        leased = db_query(
            config.parent, "SELECT lease_owner FROM repositories WHERE repository = ?", (repository,)
        )
        assert leased and leased[0][0] is not None, leased
        survivor = start_worker("survivor", tmp_path, sockets, make_fast)
        assert slow.passed < big.size, "the blob finished before the kill: slow the link down"
        doomed.stop(signal.SIGKILL)
        killed = time.monotonic()
        # Its lease runs out, and a sweep of the survivor's sends the row back through the failure path.
        owner = str(leased[0][0])

        def expiry_logged() -> bool:
            sql = "SELECT 1 FROM event_log WHERE repository = ? AND message LIKE ?"
            return bool(db_query(config.parent, sql, (repository, f"%lease of worker {owner} ran out%")))

        wait_until(expiry_logged, timeout=30, what="the dead worker's lease expired")
        print(f"lease expired {time.monotonic() - killed:.1f} s after the kill -9")
        state = db_query(
            config.parent,
            "SELECT state, retry_count, last_sync_failure FROM repositories WHERE repository = ?",
            (repository,),
        )
        assert survivor is not None
        if state[0][0] == "failed":
            # Waiting out its backoff (minutes), its retry count one higher: an operator's resync on the
            # surviving worker brings it forward.
            assert state[0][1] >= 1 and owner in state[0][2], state
            with httpx.Client(
                transport=httpx.HTTPTransport(uds=str(sockets / "survivor.sock")), base_url="http://w"
            ) as api:
                answer = api.post("/api/v1/commands/resync", json={"failed": True}, timeout=10)
                assert answer.status_code == 200, answer.text
        # Else the survivor, leading now, began with the reconcile of every row, which queued it at once.
        wait_until(lambda: synced_rows(config) == 1, timeout=60, what="the survivor completed the repository")
        with RawPusher.for_registry(eu) as on_eu:
            assert tag_digests(on_eu, repository) == {"v1": image.digest}
        assert_pulls_whole(eu, repository, "v1", image, tmp_path)
        assert blobs_copied(survivor).get("eu", 0) >= 1  # the survivor streamed the big blob itself
        assert uploads_by_digest(eu)[big.digest] == 1  # the dead worker's upload never completed
        assert survivor.stop(signal.SIGTERM) == 0
    finally:
        doomed.stop(signal.SIGKILL)
        if survivor is not None:
            survivor.stop(signal.SIGKILL)
        slow.close()
    assert_log_clean(tmp_path / "survivor.log")


SHARING = 24  # repositories that share one base layer


def test_workers_stream_a_shared_base_layer_once_per_secondary_and_mount_it_elsewhere(
    registry_factory: Callable[..., Distribution],
    key_pair: TestKeyPair,
    tmp_path: Path,
    postgres_database: PostgresDatabase,
    sockets: Path,
) -> None:
    """Issue 16: three workers whose repositories all share a base layer stream it once into each
    secondary; the others wait for that stream and mount it. The primary is behind a slow link, so the
    base layer's stream lasts seconds and the workers' copies of it overlap."""
    primary, eu, us = registry_factory("primary"), registry_factory("eu"), registry_factory("us")
    base = layer_blob("b16-base", size=5 * 2**20, compresslevel=0)
    images = {
        f"shared/app-{i:02d}": image_with_layers([base, layer_blob(f"b16-{i}", size=2048)], seed=f"b16-{i}")
        for i in range(SHARING)
    }
    with RawPusher.for_registry(primary) as pusher:
        for name, image in images.items():
            pusher.push_tree(name, image, "v1")
    # 5 MiB at 512 KiB/s: the base layer's stream lasts ~10 s, longer than the workers take to start
    slow = ThrottledProxy(int(primary.url.rsplit(":", 1)[1]), bytes_per_second=512 * 1024).start()

    def make(directory: Path, socket: Path, port: int) -> Path:
        return worker_config(
            directory, primary, [eu, us], key_pair, postgres_database, socket, port=port,
            engine={"repository_concurrency": 4, "lease_seconds": 15}, primary_url=slow.url,
        )  # fmt: skip

    workers: list[Served] = []
    try:
        began = time.monotonic()
        workers = [start_worker(f"worker-{n}", tmp_path, sockets, make) for n in range(WORKERS)]
        config = workers[0].config
        took = wait_until(lambda: synced_rows(config) == 2 * SHARING, timeout=150, what="every row synced")
        print(f"{WORKERS} workers backfilled {SHARING} repositories x 2 secondaries in {took:.1f} s")
        shares = [blobs_copied(w) for w in workers]
        print(f"blobs streamed by each worker: {shares}")
        assert sum(1 for share in shares if sum(share.values()) > 0) > 1, shares  # the work was shared
        mounts = [blobs_copied(w, "mounted") for w in workers]
        print(f"blobs mounted by each worker: {mounts}")
        for registry in (eu, us):
            uploads = uploads_by_digest(registry)
            print(f"{registry.name}: the base layer was uploaded {uploads[base.digest]} time(s)")
            assert uploads[base.digest] == 1, f"{registry.name}: {uploads[base.digest]} uploads of the base"
            twice = {d: n for d, n in uploads.items() if n > 1}
            assert not twice, f"uploaded more than once to {registry.name}: {twice}"
            # every other repository mounted it, from where the one stream landed
            assert sum(m.get(registry.name, 0) for m in mounts) == SHARING - 1, mounts
        assert db_query(config.parent, "SELECT COUNT(*) FROM blob_streams") == [(0,)]  # every turn ended
        with RawPusher.for_registry(eu) as on_eu, RawPusher.for_registry(us) as on_us:
            for name, image in images.items():
                assert tag_digests(on_eu, name) == {"v1": image.digest}, name
                assert tag_digests(on_us, name) == {"v1": image.digest}, name
        pulls = [(registry, name) for registry in (eu, us) for name in images]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda p: assert_pulls_whole(p[0], p[1], "v1", images[p[1]], tmp_path), pulls))
        print(f"pulled {len(pulls)} images whole; {time.monotonic() - began:.1f} s in all")
        for worker in workers:
            text = worker.log_path.read_text()
            assert "lease lost" not in text and "ran out" not in text, worker.log_path
            assert worker.stop(signal.SIGTERM) == 0
        # A row was inserted only for a blob streamed (49 per secondary), none for one a HEAD or a mount
        # placed (renewals are updates); the server's counts are complete once the sessions have ended.
        streamed = sum(sum(share.values()) for share in shares)
        sql = "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'blob_streams'"
        wait_until(
            lambda: db_query(config.parent, sql) == [(streamed,)], timeout=10, what=f"{streamed} takes"
        )
    finally:
        for worker in workers:
            worker.stop(signal.SIGKILL)
        slow.close()
    assert_log_clean(*(w.log_path for w in workers))
