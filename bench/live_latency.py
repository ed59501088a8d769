"""Live replication benchmark: `geo-tui serve` fed by a real primary's notifications.

Run it from the repository root (it imports the test lab, `tests.support`)::

    python bench/live_latency.py            # 40 pushes, then up to 2,000 events / 10 s
    python bench/live_latency.py --json     # the figures as JSON on stdout (progress stays on stderr)

Options: --pushes N, --layer-size BYTES, --events N, --event-seconds S, --threads N, --push-timeout S,
--large-sizes 2000,20000, --large-pushes N, --burst N, --burst-seconds S, --large-skopeo-timeout S,
--large-only, --large-settle S, --no-large-peer, --reconcile-rps R, --blob-events, --pull-events,
--workdir DIR (parent of the temp dir), --keep (keep it).

What it does, all on 127.0.0.1, with real CNCF Distribution 2.8:
1. Starts a token realm, a primary whose notifications point at a `geo-tui serve` subprocess (blob and
   pull events ignored, as `geo-tui init` writes it; --pull-events keeps the pulls, --blob-events both),
   two secondaries (eu, us) that serve replicates into, and a peer secondary for skopeo.
2. Latency: pushes N small images one after another with the lab's RawPusher (each a new tag of
   `bench/live`, one ~4 KiB layer and its config). For each, the clock starts when the primary's 201 on the
   tag PUT is back, and stops when the tag answers HEAD with the pushed digest on EVERY secondary (one
   thread per secondary, HEAD every 10 ms). p50/p90/p99/max against the targets (1 s p50, 3 s p99).
3. Peer: `skopeo sync` of the same repository into the peer (once untimed, so it holds what came before),
   then one more push, timed with skopeo sync run right after the 201: the latency floor of the
   "no receiver, sync on a schedule" alternative, set against geo-tui's latency for the same push and p50.
4. Throughput: synthetic well-formed push events POSTed straight to the receiver, one per request as
   Distribution 2.8 sends them, from a few threads (bounded by --events and --event-seconds).
   Acknowledged events/s, and every acknowledged event's id is looked up in the tracking database's
   `notifications` table (read-only connection). Target: >= 200 events/s, none lost.
5. Large repositories (issue 17), for each of --large-sizes (2,000 and 20,000 tags): `bench/large<N>` holds
   N tags on every site, one pushed image and N-1 tags written straight into Distribution's storage
   (`tests.support.many_tags`; geo-tui learns of the repository from the first push, and its first
   reconcile of it runs in the background meanwhile, at `reconcile_requests_per_second`). Then: one push with
   `skopeo sync` of the repository into the peer right after it (the peer holds the same tags, so skopeo
   copies that one image: what a polling replica pays per sync); --large-pushes single pushes, p50/p99
   and requests per event (serve's own count in /metrics: `geo_tui_push_requests_total` over
   `geo_tui_push_events_copied_total`, exact whatever else runs); a burst of --burst pushes in
   --burst-seconds, p50/p99, and how long after its last push every tag is on both secondaries; for both,
   where the time went, from serve's /metrics (the primary's delivery, then geo-tui's stages). Targets:
   p50 <= 0.1 s, p99 <= 0.3 s, <= 20 requests per event, burst done <= 5 s after its last push.
Exit status: 0 everything arrived and every acknowledged event is stored (missed timing targets are
reported, never fatal); 1 a push never arrived or an acknowledged event is missing; 2 setup problem
(docker-registry or skopeo missing); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

from geo_tui.setup.snippets import BACKOFF, THRESHOLD, TIMEOUT  # noqa: E402
from tests.support.distribution import Distribution, free_port  # noqa: E402
from tests.support.geo import image_with_layers, write_geo_config  # noqa: E402
from tests.support.keys import repository_scope, session_key_pair  # noqa: E402
from tests.support.many_tags import write_tags  # noqa: E402
from tests.support.oci import ALL_MANIFEST_TYPES, ManifestNode, layer_blob  # noqa: E402
from tests.support.push import RawPusher  # noqa: E402
from tests.support.token_server import TokenServer  # noqa: E402

EVENTS_PATH = "/api/v4/container_registry_event/events"
SECRET = "bench-live-" + uuid.uuid4().hex
REPOSITORY = "bench/live"
THROUGHPUT_REPOSITORY = "bench/events"
POLL_INTERVAL = 0.010
TARGET_P50 = 1.0
TARGET_P99 = 3.0
TARGET_EVENTS_PER_S = 200.0
TARGET_LARGE_P50 = 0.1
TARGET_LARGE_P99 = 0.3
TARGET_REQUESTS = 20
TARGET_BURST_AFTER_LAST = 5.0
SKOPEO_TIMEOUT = 60.0
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

_started = time.monotonic()
_quiet = False


def log(message: str) -> None:
    if not _quiet:
        print(f"[{time.monotonic() - _started:6.1f}s] {message}", file=sys.stderr, flush=True)


class SetupError(RuntimeError):
    """The bench cannot run here (exit 2)."""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.results: dict[str, Any] = {}
        self.key_pair = session_key_pair()
        self.sites: dict[str, Distribution] = {}
        self.serve: subprocess.Popen[bytes] | None = None
        self.serve_port = free_port()
        self.config: Path | None = None

    def fail(self, message: str) -> None:
        self.failures.append(message)
        log(f"FAILURE: {message}")

    # -- setup ----------------------------------------------------------------------------------------

    def start(self, stack: contextlib.ExitStack) -> None:
        realm = stack.enter_context(TokenServer(self.key_pair))
        for name in ("primary", "eu", "us", "peer"):
            options: dict[str, Any] = {}
            if name == "primary":
                url = f"http://127.0.0.1:{self.serve_port}{EVENTS_PATH}"
                endpoint = primary_endpoint(url, self.args.blob_events, self.args.pull_events)
                options = {"extra_config": {"notifications": {"endpoints": [endpoint]}}}
            site = Distribution(
                self.workdir / f"registry-{name}",
                name=name,
                key_pair=self.key_pair,
                token_realm=realm.url,
                **options,
            )
            stack.callback(site.stop)
            site.start()
            self.sites[name] = site
        log("registries: " + ", ".join(f"{n} {s.url}" for n, s in self.sites.items()))
        self.config = write_geo_config(
            self.workdir / "geo",
            self.sites["primary"],
            [self.sites["eu"], self.sites["us"]],
            self.key_pair,
            engine={"reconcile_interval": 3600, **self.reconcile_rate()},
            notifications={"listen": f"127.0.0.1:{self.serve_port}", "secret": SECRET},
        )
        stack.callback(self.stop_serve)
        self.start_serve()

    def reconcile_rate(self) -> dict[str, float]:
        rate = self.args.reconcile_rps
        return {} if rate is None else {"reconcile_requests_per_second": rate}

    def start_serve(self) -> None:
        assert self.config is not None
        stderr = open(self.workdir / "serve.log", "ab")
        self.serve = subprocess.Popen(
            [sys.executable, "-m", "geo_tui", "--config", str(self.config), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            cwd=REPO_ROOT,
        )
        stderr.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.serve.poll() is not None:
                raise SetupError(f"geo-tui serve exited {self.serve.returncode}:\n{self.serve_log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.serve_url + "/-/health", timeout=0.5).status_code == 200:
                    log(f"geo-tui serve ready on {self.serve_url} (pid {self.serve.pid})")
                    return
            time.sleep(0.05)
        raise SetupError(f"geo-tui serve did not answer /-/health:\n{self.serve_log_tail()}")

    def stop_serve(self) -> None:
        process, self.serve = self.serve, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
            self.notes.append("geo-tui serve did not exit within 10 s of SIGTERM (killed)")
            return
        if code != 0:
            self.notes.append(f"geo-tui serve exited {code} on SIGTERM")

    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}"

    def serve_log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "serve.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # -- pushes and arrival -------------------------------------------------------------------------

    def image(self, seed: str) -> ManifestNode:
        return image_with_layers([layer_blob(f"live-{seed}", self.args.layer_size)], seed=f"live-{seed}")

    def push(self, pusher: RawPusher, tag: str, image: ManifestNode, repository: str = REPOSITORY) -> float:
        """Blobs, then the manifest by tag; returns the monotonic time the 201 came back."""
        for blob in image.blobs:
            pusher.push_blob(repository, blob)
        pusher.push_manifest(repository, tag, image.manifest, image.media_type)
        return time.monotonic()

    def wait_everywhere(
        self,
        readers: dict[str, httpx.Client],
        tag: str,
        digest: str,
        started: float,
        repository: str = REPOSITORY,
    ) -> dict[str, float | None]:
        """Seconds from `started` until `tag` answers HEAD with `digest` on each secondary (None: never)."""
        arrived: dict[str, float | None] = {name: None for name in readers}
        deadline = started + self.args.push_timeout

        def poll(name: str, client: httpx.Client) -> None:
            while True:
                sent = time.monotonic()
                with contextlib.suppress(httpx.HTTPError):
                    response = client.head(f"/v2/{repository}/manifests/{tag}")
                    if (
                        response.status_code == 200
                        and response.headers.get("Docker-Content-Digest") == digest
                    ):
                        arrived[name] = time.monotonic() - started
                        return
                if sent >= deadline:
                    return
                time.sleep(max(0.0, POLL_INTERVAL - (time.monotonic() - sent)))

        threads = [
            threading.Thread(target=poll, args=(name, client), daemon=True)
            for name, client in readers.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.args.push_timeout + 5)
        return arrived

    def readers(self, names: tuple[str, ...], repository: str = REPOSITORY) -> dict[str, httpx.Client]:
        """One HEAD client per secondary, with a pull token good for the whole run."""
        clients = {}
        for name in names:
            site = self.sites[name]
            token = site.mint([repository_scope(repository, "pull")], ttl=1800)
            clients[name] = httpx.Client(
                base_url=site.url,
                timeout=5.0,
                headers={"Authorization": f"Bearer {token}", "Accept": ", ".join(ALL_MANIFEST_TYPES)},
            )
        return clients

    def run_latency(self, pusher: RawPusher, readers: dict[str, httpx.Client]) -> None:
        args = self.args
        warm = self.image("warm")
        started = self.push(pusher, "warm", warm)
        warmup = self.wait_everywhere(readers, "warm", warm.digest, started)
        if any(v is None for v in warmup.values()):
            self.fail(f"warm-up push never arrived everywhere: {warmup}\n{self.serve_log_tail()}")
            return
        log(f"warm-up push arrived in {max(v for v in warmup.values() if v is not None):.3f} s")

        latencies: list[float] = []
        per_site: dict[str, list[float]] = {name: [] for name in readers}
        missing: list[str] = []
        budget_end = time.monotonic() + 60.0
        log(f"latency: {args.pushes} pushes, one ~{args.layer_size} B layer each, HEAD every 10 ms")
        for n in range(args.pushes):
            if time.monotonic() > budget_end:
                self.notes.append(f"latency phase stopped after {n} pushes (60 s budget)")
                break
            tag = f"t{n:03d}"
            image = self.image(tag)
            started = self.push(pusher, tag, image)
            arrived = self.wait_everywhere(readers, tag, image.digest, started)
            if any(v is None for v in arrived.values()):
                missing.append(tag)
                self.fail(
                    f"{REPOSITORY}:{tag} not on {[k for k, v in arrived.items() if v is None]} "
                    f"after {args.push_timeout:.0f} s"
                )
                continue
            for name, seconds in arrived.items():
                assert seconds is not None
                per_site[name].append(seconds)
            latencies.append(max(v for v in arrived.values() if v is not None))
        result: dict[str, Any] = {"pushes": len(latencies) + len(missing), "missing": missing}
        if latencies:
            result.update(
                {
                    "p50": _round(percentile(latencies, 50)),
                    "p90": _round(percentile(latencies, 90)),
                    "p99": _round(percentile(latencies, 99)),
                    "max": _round(max(latencies)),
                    "mean": _round(statistics.fmean(latencies)),
                    "min": _round(min(latencies)),
                    "per_site_p50": {k: _round(percentile(v, 50)) for k, v in per_site.items() if v},
                    "p50_first_10": _round(percentile(latencies[:10], 50)),
                    "p50_last_10": _round(percentile(latencies[-10:], 50)),
                    "all": [_round(v) for v in latencies],
                    "target_p50": TARGET_P50,
                    "target_p99": TARGET_P99,
                    "meets_targets": percentile(latencies, 50) <= TARGET_P50
                    and percentile(latencies, 99) <= TARGET_P99,
                }
            )
            log(
                f"latency p50 {result['p50']:.3f} s  p90 {result['p90']:.3f} s  p99 {result['p99']:.3f} s  "
                f"max {result['max']:.3f} s"
            )
        self.results["latency"] = result

    # -- the peer -------------------------------------------------------------------------------------

    def skopeo_sync(
        self, repository: str = REPOSITORY, timeout: float = SKOPEO_TIMEOUT
    ) -> tuple[float, subprocess.CompletedProcess[str]]:
        primary, peer = self.sites["primary"], self.sites["peer"]
        command = [
            shutil.which("skopeo") or "skopeo",
            "--insecure-policy",
            "sync",
            "--all",
            "--preserve-digests",
            "--src",
            "docker",
            "--dest",
            "docker",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--src-no-creds",
            "--dest-no-creds",
            "--retry-times",
            "0",
            f"{primary.host}/{repository}",
            # no --scoped: skopeo appends the last path component, so bench/live lands at bench/live
            f"{peer.host}/{repository.rsplit('/', 1)[0]}",
        ]
        started = time.monotonic()
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        return time.monotonic() - started, result

    def run_peer(self, pusher: RawPusher, readers: dict[str, httpx.Client]) -> None:
        """One more push: geo-tui's latency for it, then (not concurrently, so neither slows the other)
        the time `skopeo sync` of the repository takes: what a scheduled sync started at the very
        moment of the 201 would need at least."""
        log("peer: skopeo sync of the repository into the peer (untimed, to bring it up to date)")
        _, result = self.skopeo_sync()
        if result.returncode != 0:
            self.notes.append(f"skopeo sync (catch-up) exited {result.returncode}: {result.stderr[-500:]}")
            return
        image = self.image("peer")
        started = self.push(pusher, "peer", image)
        arrived = self.wait_everywhere(readers, "peer", image.digest, started)
        if any(v is None for v in arrived.values()):
            self.fail(f"{REPOSITORY}:peer never arrived everywhere via geo-tui: {arrived}")
            return
        geo_latency = max(v for v in arrived.values() if v is not None)
        skopeo_seconds, result = self.skopeo_sync()
        if result.returncode != 0:
            self.notes.append(f"skopeo sync exited {result.returncode}: {result.stderr[-500:]}")
            return
        with RawPusher.for_registry(self.sites["peer"]) as peer:
            response = peer.head_manifest(REPOSITORY, "peer")
        if response.headers.get("Docker-Content-Digest") != image.digest:
            self.notes.append("skopeo sync did not put the new tag on the peer")
        p50 = (self.results.get("latency") or {}).get("p50")
        self.results["peer"] = {
            "tags_in_repository": len(pusher.list_tags(REPOSITORY)),
            "skopeo_sync_seconds": _round(skopeo_seconds),
            "geo_tui_latency_same_push": _round(geo_latency),
            "ratio_skopeo_over_geo_same_push": _round(skopeo_seconds / geo_latency, 2),
            "ratio_skopeo_over_geo_p50": _round(skopeo_seconds / p50, 2) if p50 else None,
        }
        log(f"peer: skopeo sync {skopeo_seconds:.3f} s vs geo-tui {geo_latency:.3f} s for the same push")

    # -- large repositories --------------------------------------------------------------------------

    def push_counts(self) -> tuple[float, float]:
        """(push events copied, requests their copies sent), from serve's /metrics."""
        text = httpx.get(self.serve_url + "/metrics", timeout=10).text
        values = {"geo_tui_push_events_copied_total": 0.0, "geo_tui_push_requests_total": 0.0}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in values:
                values[name] = float(value)
        return values["geo_tui_push_events_copied_total"], values["geo_tui_push_requests_total"]

    def stage_totals(self) -> dict[str, tuple[float, float]]:
        """(sum, count) of the histograms that say where a push's time went, from serve's /metrics."""
        wanted = {
            'geo_tui_notification_delay_seconds_{}{{action="push",origin="other"}}': "delivery",
            'geo_tui_notification_delay_seconds_{}{{action="pull",origin="own"}}': "own_pull_delivery",
            'geo_tui_push_stage_seconds_{}{{stage="store"}}': "store",
            'geo_tui_push_stage_seconds_{}{{stage="queued"}}': "queued",
            'geo_tui_push_stage_seconds_{}{{stage="manifest"}}': "manifest",
            'geo_tui_push_stage_seconds_{}{{stage="blobs"}}': "blobs",
            'geo_tui_push_stage_seconds_{}{{stage="copy"}}': "copy",
        }
        text = httpx.get(self.serve_url + "/metrics", timeout=10).text
        values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        totals: dict[str, tuple[float, float]] = {}
        for pattern, name in wanted.items():
            totals[name] = (
                float(values.get(pattern.format("sum"), 0.0)),
                float(values.get(pattern.format("count"), 0.0)),
            )
        totals["held"] = (float(values.get("geo_tui_background_held_seconds", 0.0)), 1.0)
        totals["yielded"] = (float(values.get("geo_tui_background_yielded_seconds", 0.0)), 1.0)
        totals["gave_way"] = (float(values.get("geo_tui_background_gave_way_seconds", 0.0)), 1.0)
        return totals

    @staticmethod
    def stage_means(
        before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
    ) -> dict[str, Any]:
        """Mean seconds per stage between two `stage_totals`, and background seconds held meanwhile."""
        means: dict[str, Any] = {}
        for name, (total, count) in after.items():
            total0, count0 = before.get(name, (0.0, 0.0))
            if name in ("held", "yielded", "gave_way"):
                means[f"{name}_s"] = _round(total - total0)
            elif count > count0:
                means[name] = _round((total - total0) / (count - count0), 4)
        return means

    def geo_requests(self, marks: dict[str, int]) -> dict[str, int]:
        """geo-tui's requests since `marks` per site, and how many were tag lists or HEADs by tag."""
        counts = {"requests": 0, "tag_lists": 0}
        for name, mark in marks.items():
            for line in self.sites[name].access_log_lines()[mark:]:
                if line.user_agent.startswith("geo-tui/"):
                    counts["requests"] += 1
                    counts["tag_lists"] += "/tags/list" in line.uri
        return counts

    def run_large(self, size: int) -> None:
        """One repository of `size` tags on every site (one pushed image, the other tags written into
        Distribution's storage), then single pushes and a burst, each a new one-layer image."""
        args = self.args
        repository = f"bench/large{size}"
        base = image_with_layers([layer_blob(f"large-{size}", args.layer_size)], seed=f"large-{size}")
        # The primary last: its push event makes geo-tui copy `base` to eu and us, and a copy racing the
        # bench's own upload of the same blob into the same repository made Distribution refuse one. The
        # primary gets eu's copy of the repository in its storage, all tags at once, before the tag push
        # that tells geo-tui of it: any event of the repository starts its first reconcile, and one that
        # read the tags while they were being written kept the rest on the secondaries, one warning and
        # one event-log row per tag, while the pushes were measured.
        for name, site in self.sites.items():
            if name == "primary":
                continue
            with RawPusher.for_registry(site) as pusher:
                pusher.push_tree(repository, base, "base")
            write_tags(site, repository, base.digest, (f"t{n:05d}" for n in range(size - 1)))
            log(f"large {size}: {name} holds {size} tags")
        copy_storage(self.sites["eu"], self.sites["primary"], repository)
        with RawPusher.for_registry(self.sites["primary"]) as pusher:
            pusher.push_manifest(repository, "base", base.manifest, base.media_type)
        log(f"large {size}: {repository} holds {size} tags on every site")
        result: dict[str, Any] = {"tags": size}
        result["settle_seconds"] = self._settle(repository)
        readers = self.readers(("eu", "us"), repository)
        try:
            with RawPusher.for_registry(self.sites["primary"]) as pusher:
                # The peer first: it holds the same tags as the primary, so skopeo copies the one push.
                if not self.args.no_large_peer:
                    self._large_peer(pusher, readers, repository, result)
                self._large_singles(pusher, readers, repository, result)
                self._large_burst(pusher, readers, repository, result)
        finally:
            for client in readers.values():
                client.close()
        self.results.setdefault("large", []).append(result)

    def _settle(self, repository: str) -> float | None:
        """Wait (--large-settle seconds at most) until geo-tui's first reconcile and verification of the
        new repository are done on every secondary, so the pushes measure the steady state of a large
        repository; seconds waited, None if it did not settle (the pushes then run beside that work)."""
        assert self.config is not None
        database = self.config.parent / "tracking.db"
        started = time.monotonic()
        deadline = started + self.args.large_settle
        query = (
            "SELECT COUNT(*) FROM repositories WHERE repository = ? AND state = 'synced' "
            "AND verification_state IN ('succeeded', 'failed')"
        )
        while time.monotonic() < deadline:
            with contextlib.suppress(sqlite3.Error):
                uri = f"file:{database}?mode=ro"
                with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
                    if db.execute(query, (repository,)).fetchone()[0] >= 2:
                        waited = time.monotonic() - started
                        log(f"{repository}: geo-tui's reconcile and verification done after {waited:.1f} s")
                        return _round(waited, 1)
            time.sleep(0.5)
        self.notes.append(f"{repository}: background reconcile/verification still running when pushes began")
        return None

    def _large_singles(
        self, pusher: RawPusher, readers: dict[str, httpx.Client], repository: str, result: dict[str, Any]
    ) -> None:
        warm = self.image(f"{repository}-warm")
        started = self.push(pusher, "warm", warm, repository)
        self.wait_everywhere(readers, "warm", warm.digest, started, repository)
        events_before, requests_before = self.push_counts()
        marks = {name: self.sites[name].settled_mark() for name in ("primary", "eu", "us")}
        stages_before = self.stage_totals()
        latencies: list[float] = []
        for n in range(self.args.large_pushes):
            image = self.image(f"{repository}-s{n}")
            started = self.push(pusher, f"s{n:03d}", image, repository)
            arrived = self.wait_everywhere(readers, f"s{n:03d}", image.digest, started, repository)
            if any(v is None for v in arrived.values()):
                self.fail(f"{repository}:s{n:03d} never arrived everywhere: {arrived}")
                continue
            latencies.append(max(v for v in arrived.values() if v is not None))
        time.sleep(0.5)
        events, requests = (
            a - b for a, b in zip(self.push_counts(), (events_before, requests_before), strict=True)
        )
        logged = self.geo_requests(marks)
        if latencies:
            result["single"] = {
                "pushes": len(latencies),
                "p50": _round(percentile(latencies, 50)),
                "p99": _round(percentile(latencies, 99)),
                "max": _round(max(latencies)),
                "requests_per_event": _round(requests / events, 1) if events else None,
                "events": int(events),
                # every geo-tui request the registries logged meanwhile: the pushes' copies, and the
                # background reconcile of the new repository if it is still running
                "registry_logged_geo_requests": logged["requests"],
                "registry_logged_tag_lists": logged["tag_lists"],
                "stages": self.stage_means(stages_before, self.stage_totals()),
            }
            log(f"large {result['tags']}: single pushes {result['single']}")
        peer = result.get("peer") or {}
        if peer.get("skopeo_sync_seconds") and latencies:
            peer["ratio_skopeo_over_geo_p50"] = _round(
                peer["skopeo_sync_seconds"] / percentile(latencies, 50), 1
            )

    def _large_burst(
        self, pusher: RawPusher, readers: dict[str, httpx.Client], repository: str, result: dict[str, Any]
    ) -> None:
        """100 pushes in 10 s; each tag's arrival on every secondary is watched from a thread per site."""
        count, seconds = self.args.burst, self.args.burst_seconds
        images = {f"b{n:03d}": self.image(f"{repository}-b{n}") for n in range(count)}
        pushed: dict[str, float] = {}
        arrived: dict[str, dict[str, float]] = {name: {} for name in readers}
        done = threading.Event()

        def watch(name: str, client: httpx.Client) -> None:
            # The oldest tag not seen yet, then the next as soon as it is there: copies put the tags on
            # in push order, and HEADing every missing tag each round loaded the machine the bench
            # measures (a tag put on out of order is seen late: latency over-, never under-reported).
            seen = arrived[name]
            order = list(images)
            while not done.is_set() and len(seen) < count:
                tag = order[len(seen)]
                if tag in pushed:
                    with contextlib.suppress(httpx.HTTPError):
                        response = client.head(f"/v2/{repository}/manifests/{tag}")
                        if response.headers.get("Docker-Content-Digest") == images[tag].digest:
                            seen[tag] = time.monotonic()
                            continue
                time.sleep(POLL_INTERVAL)

        threads = [threading.Thread(target=watch, args=item, daemon=True) for item in readers.items()]
        for thread in threads:
            thread.start()
        events_before, requests_before = self.push_counts()
        stages_before = self.stage_totals()
        start = time.monotonic()
        for n, (tag, image) in enumerate(images.items()):
            pushed[tag] = self.push(pusher, tag, image, repository)
            time.sleep(max(0.0, start + (n + 1) * seconds / count - time.monotonic()))
        last = max(pushed.values())
        deadline = last + self.args.push_timeout
        while time.monotonic() < deadline and any(len(seen) < count for seen in arrived.values()):
            time.sleep(0.05)
        done.set()
        for thread in threads:
            thread.join(5)
        missing = sorted({t for seen in arrived.values() for t in images if t not in seen})
        if missing:
            self.fail(f"{repository}: {len(missing)} burst tags never arrived everywhere: {missing[:5]}")
            return
        time.sleep(0.5)
        events, requests = (
            a - b for a, b in zip(self.push_counts(), (events_before, requests_before), strict=True)
        )
        latencies = [max(arrived[name][tag] for name in arrived) - pushed[tag] for tag in images]
        everywhere = max(arrived[name][tag] for name in arrived for tag in images)
        result["burst"] = {
            "pushes": count,
            "push_seconds": _round(last - start),
            "replicated_after_last_push": _round(everywhere - last),
            "p50": _round(percentile(latencies, 50)),
            "p99": _round(percentile(latencies, 99)),
            "events": int(events),
            "requests_per_event": _round(requests / events, 1) if events else None,
            "target_after_last_push": TARGET_BURST_AFTER_LAST,
            "stages": self.stage_means(stages_before, self.stage_totals()),
        }
        log(f"large {result['tags']}: burst {result['burst']}")

    def _large_peer(
        self, pusher: RawPusher, readers: dict[str, httpx.Client], repository: str, result: dict[str, Any]
    ) -> None:
        """skopeo sync of the repository right after one more push: what a polling replica pays."""
        image = self.image(f"{repository}-peer")
        started = self.push(pusher, "peer", image, repository)
        arrived = self.wait_everywhere(readers, "peer", image.digest, started, repository)
        geo = max((v for v in arrived.values() if v is not None), default=None)
        try:
            skopeo_seconds, completed = self.skopeo_sync(repository, self.args.large_skopeo_timeout)
        except subprocess.TimeoutExpired:
            result["peer"] = {"skopeo_sync_seconds": None, "over": self.args.large_skopeo_timeout}
            self.notes.append(f"skopeo sync of {repository} ran over {self.args.large_skopeo_timeout:.0f} s")
            return
        if completed.returncode != 0:
            self.notes.append(
                f"skopeo sync of {repository} exited {completed.returncode}: {completed.stderr[-300:]}"
            )
            return
        result["peer"] = {
            "skopeo_sync_seconds": _round(skopeo_seconds),
            "geo_tui_same_push": _round(geo),
            "ratio_skopeo_over_geo_same_push": _round(skopeo_seconds / geo, 1) if geo else None,
        }
        log(f"large {result['tags']}: peer {result['peer']}")

    # -- notification throughput --------------------------------------------------------------------

    def run_throughput(self, pusher: RawPusher, readers: dict[str, httpx.Client]) -> None:
        args = self.args
        # The events name a repository that exists, so each one queues real work, as a real push would.
        image = image_with_layers([layer_blob("events")], seed="events")
        pusher.push_tree(THROUGHPUT_REPOSITORY, image, "v1")
        run = uuid.uuid4().hex[:8]
        acknowledged: list[str] = []
        refused: dict[int, int] = {}
        errors: list[str] = []
        lock = threading.Lock()
        issued = [0]
        start_at = time.monotonic()
        stop_at = start_at + args.event_seconds

        def next_number() -> int | None:
            with lock:
                if issued[0] >= args.events or time.monotonic() >= stop_at:
                    return None
                issued[0] += 1
                return issued[0]

        def sender(worker: int) -> None:
            with httpx.Client(base_url=self.serve_url, timeout=10.0) as client:
                while (number := next_number()) is not None:
                    event_id = f"tp-{run}-{worker}-{number}"
                    body = json.dumps({"events": [synthetic_event(THROUGHPUT_REPOSITORY, event_id, number)]})
                    try:
                        response = client.post(
                            EVENTS_PATH,
                            content=body.encode(),
                            headers={
                                "Authorization": SECRET,
                                "Content-Type": "application/vnd.docker.distribution.events.v1+json",
                            },
                        )
                    except httpx.HTTPError as exc:
                        with lock:
                            errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    with lock:
                        if response.status_code == 200:
                            acknowledged.append(event_id)
                        else:
                            refused[response.status_code] = refused.get(response.status_code, 0) + 1

        log(f"throughput: up to {args.events} events or {args.event_seconds:.0f} s, {args.threads} threads")
        threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(args.event_seconds + 30)
        elapsed = time.monotonic() - start_at
        stored = self.stored_event_ids(f"tp-{run}-%")
        lost = sorted(set(acknowledged) - stored)
        rate = len(acknowledged) / elapsed if elapsed else 0.0
        if lost:
            self.fail(f"{len(lost)} acknowledged events are not in the tracking database, e.g. {lost[:3]}")
        if errors:
            self.notes.append(f"{len(errors)} event POSTs failed in transport, e.g. {errors[0]}")
        if refused:
            self.notes.append(f"event POSTs refused: {refused}")
        # the repository the events named is replicated afterwards (they were work, not just rows)
        arrived = self.wait_repository(readers, THROUGHPUT_REPOSITORY, "v1", image.digest)
        if not arrived:
            self.fail(f"{THROUGHPUT_REPOSITORY}:v1 never arrived everywhere after the event flood")
        self.results["throughput"] = {
            "sent": issued[0],
            "acknowledged": len(acknowledged),
            "seconds": _round(elapsed),
            "events_per_s": _round(rate, 1),
            "stored": len(stored),
            "lost": len(lost),
            "threads": args.threads,
            "target_events_per_s": TARGET_EVENTS_PER_S,
            "meets_target": rate >= TARGET_EVENTS_PER_S and not lost,
        }
        log(
            f"throughput: {len(acknowledged)} acknowledged in {elapsed:.2f} s = {rate:.0f} events/s; "
            f"{len(stored)} stored, {len(lost)} lost"
        )

    def wait_repository(
        self, readers: dict[str, httpx.Client], repository: str, tag: str, digest: str
    ) -> bool:
        deadline = time.monotonic() + self.args.push_timeout
        for name, site in self.sites.items():
            if name not in readers:
                continue
            token = site.mint([repository_scope(repository, "pull")], ttl=300)
            headers = {"Authorization": f"Bearer {token}", "Accept": ", ".join(ALL_MANIFEST_TYPES)}
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    response = httpx.head(f"{site.url}/v2/{repository}/manifests/{tag}", headers=headers)
                    if response.headers.get("Docker-Content-Digest") == digest:
                        break
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
        return True

    def stored_event_ids(self, pattern: str) -> set[str]:
        assert self.config is not None
        database = self.config.parent / "tracking.db"
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as db:
            rows = db.execute("SELECT event_id FROM notifications WHERE event_id LIKE ?", (pattern,))
            return {str(r[0]) for r in rows.fetchall()}

    # -- all ------------------------------------------------------------------------------------------

    def run(self) -> None:
        readers = self.readers(("eu", "us"))
        try:
            with RawPusher.for_registry(self.sites["primary"]) as pusher:
                if not self.args.large_only:
                    self.run_latency(pusher, readers)
                    self.run_peer(pusher, readers)
                    self.run_throughput(pusher, readers)
        finally:
            for client in readers.values():
                client.close()
        for size in self.args.large_sizes:
            self.run_large(size)
        if self.serve is not None and self.serve.poll() is not None:
            self.fail(f"geo-tui serve died during the run (exit {self.serve.returncode})")
        log_text = (self.workdir / "serve.log").read_text(errors="replace")
        if SECRET in log_text:
            self.fail("the notification secret appears in the serve log")
        if "Traceback" in log_text:
            self.notes.append("the serve log holds a traceback")


def copy_storage(source: Distribution, target: Distribution, repository: str) -> None:
    """Put `source`'s copy of `repository` (its links, and every blob `source` stores) into `target`'s
    filesystem storage: Distribution reads both from disk, so `target` serves the repository at once."""
    v2 = Path("docker/registry/v2")
    shutil.copytree(source.root_dir / v2 / "blobs", target.root_dir / v2 / "blobs", dirs_exist_ok=True)
    shutil.copytree(
        source.root_dir / v2 / "repositories" / repository,
        target.root_dir / v2 / "repositories" / repository,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("_uploads"),
    )


def primary_endpoint(url: str, blob_events: bool = False, pull_events: bool = False) -> dict[str, Any]:
    """The primary's notification endpoint as `geo-tui init` writes it: blob and pull events ignored
    (geo-tui acts on none of them; each is one more delivery ahead of the next push). `pull_events` keeps
    the pulls, `blob_events` keeps both (Distribution 2.8 applies ignore.actions only beside mediatypes)."""
    endpoint: dict[str, Any] = {
        "name": "geo_event",
        "url": url,
        "headers": {"Authorization": [SECRET]},
        "timeout": TIMEOUT,
        "threshold": THRESHOLD,
        "backoff": BACKOFF,
    }
    if not blob_events:
        endpoint["ignore"] = {"mediatypes": ["application/octet-stream"]}
        if not pull_events:
            endpoint["ignore"]["actions"] = ["pull"]
    return endpoint


def synthetic_event(repository: str, event_id: str, number: int) -> dict[str, Any]:
    return {
        "id": event_id,
        "timestamp": "2024-05-01T10:11:12Z",
        "action": "push",
        "target": {
            "mediaType": OCI_MANIFEST,
            "size": 428,
            "digest": "sha256:" + f"{number:064x}",
            "length": 428,
            "repository": repository,
            "tag": "v1",
        },
        "request": {"id": event_id, "method": "PUT", "useragent": "geo-tui-bench"},
        "actor": {},
        "source": {"addr": "bench"},
    }


def render(results: dict[str, Any], failures: list[str], notes: list[str]) -> str:
    lines = ["geo-tui serve: live replication on real Distribution 2.8 (127.0.0.1)"]
    lat = results.get("latency") or {}
    if lat.get("p50") is not None:
        ok = "meets" if lat["meets_targets"] else "MISSES"
        lines.append(
            f"latency   {lat['pushes']} pushes, 201 on the tag PUT -> on every secondary: "
            f"p50 {lat['p50']:.3f} s  p90 {lat['p90']:.3f} s  p99 {lat['p99']:.3f} s  "
            f"max {lat['max']:.3f} s  ({ok} targets p50 <= {TARGET_P50:.0f} s, p99 <= {TARGET_P99:.0f} s)"
        )
        lines.append(
            f"          per secondary p50: {lat['per_site_p50']}; p50 of the first 10 pushes "
            f"{lat['p50_first_10']:.3f} s, of the last 10 {lat['p50_last_10']:.3f} s (an event copies "
            "what it names: no slope with the tag count)"
        )
    peer = results.get("peer")
    if peer:
        lines.append(
            f"peer      skopeo sync of the repository ({peer['tags_in_repository']} tags) after one push: "
            f"{peer['skopeo_sync_seconds']:.3f} s into one secondary; geo-tui for the same push "
            f"{peer['geo_tui_latency_same_push']:.3f} s (both secondaries): ratio skopeo/geo-tui "
            f"{peer['ratio_skopeo_over_geo_same_push']}x "
            f"(vs geo-tui p50: {peer['ratio_skopeo_over_geo_p50']}x)"
        )
    tp = results.get("throughput")
    if tp:
        ok = "meets" if tp["meets_target"] else "MISSES"
        lines.append(
            f"events    {tp['acknowledged']}/{tp['sent']} acknowledged in {tp['seconds']:.2f} s = "
            f"{tp['events_per_s']:.0f} events/s from {tp['threads']} threads; "
            f"{tp['stored']} in the tracking DB, "
            f"{tp['lost']} lost ({ok} target >= {TARGET_EVENTS_PER_S:.0f}/s without loss)"
        )
    large = results.get("large") or []
    if large:
        lines.append(
            f"large     {'tags':>6} {'p50 s':>7} {'p99 s':>7} {'req/event':>9} {'burst p50':>9} "
            f"{'burst p99':>9} {'burst done':>10} {'req/event':>9} {'skopeo s':>9} {'skopeo/p50':>10}"
        )
    for row in large:
        single, burst, peer = row.get("single") or {}, row.get("burst") or {}, row.get("peer") or {}

        def cell(value: object, width: int, suffix: str = "") -> str:
            return f"{'-' if value is None else f'{value}{suffix}':>{width}}"

        lines.append(
            f"          {row['tags']:>6} {cell(single.get('p50'), 7)} {cell(single.get('p99'), 7)} "
            f"{cell(single.get('requests_per_event'), 9)} {cell(burst.get('p50'), 9)} "
            f"{cell(burst.get('p99'), 9)} {cell(burst.get('replicated_after_last_push'), 10)} "
            f"{cell(burst.get('requests_per_event'), 9)} {cell(peer.get('skopeo_sync_seconds'), 9)} "
            f"{cell(peer.get('ratio_skopeo_over_geo_p50'), 10, 'x')}"
        )
    for row in large:
        for phase in ("single", "burst"):
            stages = (row.get(phase) or {}).get("stages")
            if stages:
                shown = "  ".join(f"{k} {v}" for k, v in stages.items())
                lines.append(f"          {row['tags']:>6} {phase} mean seconds: {shown}")
    if large:
        lines.append(
            "          delivery: event timestamp at the primary -> receipt (Distribution's queue); "
            "store, queued, copy: geo-tui (receipt -> stored; receipt -> copy started; -> tag written; "
            "within copy, manifest: -> manifests read, blobs: -> blobs in place); "
            "held_s / yielded_s: background requests' waits for the own-pull backlog / for pushes (summed); "
            "gave_way_s: wall seconds during which background requests waited for pushes"
        )
        lines.append(
            f"          targets: p50 <= {TARGET_LARGE_P50} s, p99 <= {TARGET_LARGE_P99} s, "
            f"<= {TARGET_REQUESTS} requests per event, "
            f"burst replicated <= {TARGET_BURST_AFTER_LAST:.0f} s after its last push; "
            "'burst done' is seconds after the last push"
        )
    for note in notes:
        lines.append(f"note      {note}")
    lines.append("result    " + ("OK" if not failures else f"FAILED ({len(failures)})"))
    for failure in failures:
        lines.append(f"failure   {failure}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Live replication benchmark: geo-tui serve with a real primary's notifications."
    )
    parser.add_argument("--pushes", type=int, default=40, help="images pushed one after another (40)")
    parser.add_argument("--layer-size", type=int, default=4096, help="bytes of each image's layer (4096)")
    parser.add_argument("--events", type=int, default=2000, help="synthetic events at most (2000)")
    parser.add_argument("--event-seconds", type=float, default=10.0, help="event phase at most (10 s)")
    parser.add_argument("--threads", type=int, default=4, help="event sender threads (4)")
    parser.add_argument("--push-timeout", type=float, default=15.0, help="a push must arrive within (15 s)")
    parser.add_argument(
        "--large-sizes",
        type=lambda text: [int(v) for v in text.split(",") if v],
        default=[2000, 20000],
        help="tag counts of the large-repository phase, comma-separated ('' skips it; 2000,20000)",
    )
    parser.add_argument("--large-pushes", type=int, default=20, help="single pushes per large size (20)")
    parser.add_argument("--burst", type=int, default=100, help="pushes in the burst (100)")
    parser.add_argument("--burst-seconds", type=float, default=10.0, help="the burst's length (10 s)")
    parser.add_argument(
        "--large-skopeo-timeout",
        type=float,
        default=600.0,
        help="skopeo sync of a large repository at most (600 s)",
    )
    parser.add_argument("--large-only", action="store_true", help="only the large-repository phase")
    parser.add_argument(
        "--large-settle",
        type=float,
        default=300.0,
        help="wait for the first reconcile and verification of a large repository at most (300 s; 0: none)",
    )
    parser.add_argument(
        "--reconcile-rps",
        type=float,
        help="serve's reconcile_requests_per_second (default geo-tui's), to settle large repositories sooner",
    )
    parser.add_argument(
        "--no-large-peer", action="store_true", help="no skopeo sync of the large repositories"
    )
    parser.add_argument(
        "--blob-events",
        action="store_true",
        help="keep the primary's blob and pull events: no ignore at all (default: both ignored)",
    )
    parser.add_argument(
        "--pull-events",
        action="store_true",
        help="keep the primary's pull events (default: ignored, ignore.actions pull), blob events ignored",
    )
    parser.add_argument("--workdir", type=Path, help="parent of the temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, storage)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if not (1 <= args.pushes <= 1000 and 1 <= args.events <= 100_000 and 1 <= args.threads <= 64):
        parser.error("--pushes 1..1000, --events 1..100000, --threads 1..64")
    if not all(2 <= size <= 100_000 for size in args.large_sizes) or not 1 <= args.burst <= 1000:
        parser.error("--large-sizes: 2..100000 each; --burst 1..1000")
    if not (0 < args.event_seconds <= 60 and 0 < args.push_timeout <= 60):
        parser.error("--event-seconds and --push-timeout: 0..60")
    return args


def main(argv: list[str] | None = None) -> int:
    global _quiet
    args = parse_args(argv)
    _quiet = args.quiet

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for binary in ("docker-registry", "skopeo"):
        if shutil.which(binary) is None:
            print(f"bench: {binary} not found (apt-get install -y docker-registry skopeo)", file=sys.stderr)
            return 2
    parent = args.workdir or Path(tempfile.gettempdir())
    workdir = Path(tempfile.mkdtemp(prefix="geo-tui-live-", dir=parent))
    bench = Bench(args, workdir)
    code = 0
    try:
        with contextlib.ExitStack() as stack:
            if not args.keep:
                stack.callback(shutil.rmtree, workdir, True)
            bench.start(stack)
            bench.run()
    except KeyboardInterrupt:
        print("bench: interrupted; registries and serve stopped", file=sys.stderr)
        return 130
    except SetupError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # report what was measured
        bench.fail(f"bench error: {type(error).__name__}: {error}")
    if bench.failures:
        code = 1
    output = {"ok": not bench.failures, "failures": bench.failures, "notes": bench.notes, **bench.results}
    if args.keep:
        output["workdir"] = str(workdir)
    if args.json:
        print(json.dumps(output, indent=2))
    else:
        print(render(bench.results, bench.failures, bench.notes))
        if args.keep:
            print(f"workdir   {workdir}")
    return code


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
