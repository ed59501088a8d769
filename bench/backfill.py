"""Backfill benchmark: `geo-tui sync --once` against `skopeo sync`, on real CNCF Distribution 2.8.

Run it from the repository root (it imports the test lab, `tests.support`)::

    python bench/backfill.py                  # default: 8 repositories x 3 tags, ~500 MiB, 256 MiB RSS layer
    python bench/backfill.py --quick          # the same shape at ~60 MiB (scale 0.12)
    python bench/backfill.py --repeat 3       # three backfill rounds, order alternating; medians reported
    python bench/backfill.py --json           # the figures as JSON on stdout (progress stays on stderr)

Options: --repos N, --tags N, --scale F, --seed S, --big-layer-mib N (0 skips the RSS step), --repeat N,
--timeout SECONDS (per child process), --workdir DIR (parent of the temp dir), --keep (keep it).

What it does, all on 127.0.0.1:
1. Starts a token realm (grants anything, anonymously) and four empty Distribution instances: the primary
   and secondaries A (geo-tui), B (skopeo) and C (geo-tui, peak RSS). All are stopped at exit, also on an
   error, Ctrl-C or SIGTERM; the temp dir is removed unless --keep.
2. Pushes generated images into the primary with the lab's RawPusher: repositories `bench/app-NN`, each tag
   made of a common 2-layer base (shared by every repository, cross-mounted on the primary), one layer
   shared by the repository's tags and one layer of its own. Layers are gzip (stored, level 0) tars of
   seeded random bytes: incompressible, reproducible, each built once; sizes 2..40 MiB times --scale.
3. Backfill: secondary A with `python -m geo_tui --config A.toml sync --once --json`, then secondary B with
   `skopeo --insecure-policy sync --all --preserve-digests --src yaml --dest docker --dest-tls-verify=false
   --dest-no-creds --retry-times 0 SOURCES.yaml 127.0.0.1:PORT_B/bench` (no --scoped: skopeo keeps the last
   path component of each source repository, so the destination is the namespace, and the copies land at
   the primary's paths; the bench checks the catalog). With --repeat, A and B are emptied (storage wiped,
   same port) and the order alternates (A,B / B,A / ...). Before each run, os.sync() writes back what the
   load, a wipe or the other tool left dirty, so no run pays for another's disk writes. Wall clock per
   run; medians reported.
4. Verifies A and B after every round: the catalog equals the primary's repositories, every tag answers
   HEAD (full Accept list) with the primary's digest, and every blob is there with its size.
5. No-op: geo-tui again on A, skopeo sync again on B; times and the requests (and writes) each made, next
   to geo-tui's bare start-up time (`python -m geo_tui --version`).
6. Peak RSS: pushes `bench/big` (one --big-layer-mib layer, generated and uploaded streaming) into the
   primary and syncs it into C (include = ["bench/big"]) with geo-tui. Every child runs under a tiny
   launcher (`python -S`) that forks it and reads ru_maxrss (KiB) from os.wait4: measured straight from
   this bench, ru_maxrss would include the bench's own high-water mark (Linux carries the pre-exec address
   space's peak into the child). The floor is the launcher's ~7 MiB.
   Before any of this, geo_tui is compiled to bytecode (into the temp dir, PYTHONPYCACHEPREFIX) for every
   child, as an installed package is: a machine with PYTHONDONTWRITEBYTECODE set would otherwise charge
   each geo-tui start ~50 ms of compiling that skopeo, a Go binary, does not have.
7. Prints a table (or --json). Exit status: 0 every copy complete; 1 a copy failed or is incomplete (missed
   timing targets are reported, never fatal); 2 setup problem (missing docker-registry/skopeo, disk); 130
   interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

from tests.support.distribution import Distribution  # noqa: E402
from tests.support.geo import image_with_layers, write_geo_config  # noqa: E402
from tests.support.keys import TestKeyPair, repository_scope, session_key_pair  # noqa: E402
from tests.support.oci import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Blob, canonical_json  # noqa: E402
from tests.support.push import RawPusher  # noqa: E402
from tests.support.token_server import TokenServer  # noqa: E402

MiB = 1 << 20
CHUNK = 4 * MiB
NAMESPACE = "bench"
BIG_REPO = f"{NAMESPACE}/big"
LAYER_MIN_MIB, LAYER_MAX_MIB = 2.0, 40.0
QUICK_SCALE = 0.12
TARGET_RATIO = 1.5  # skopeo sync time / geo-tui time, at least
TARGET_NOOP = 0.2  # no-op geo-tui time / first geo-tui time, at most
TARGET_RSS_MIB = 100.0  # geo-tui peak RSS with the big layer, below
MTIME = 1704067200

_started = time.monotonic()
_quiet = False


def log(message: str) -> None:
    if not _quiet:
        print(f"[{time.monotonic() - _started:6.1f}s] {message}", file=sys.stderr, flush=True)


class SetupError(RuntimeError):
    """The bench cannot run here (exit 2)."""


# Content ------------------------------------------------------------------------------------------------


def layer_pieces(seed: str, size: int) -> Iterator[tuple[bytes, bytes]]:
    """(gzip bytes, tar bytes) pieces of a gzip'd tar holding one file of `size` seeded random bytes.

    Stored deflate (level 0): valid gzip, as incompressible as its content, and cheap to make. The same seed
    gives the same bytes, so a big layer can be generated twice (digest, then upload) instead of kept.
    """
    rng = random.Random(f"geo-tui-bench/{seed}")
    compressor = zlib.compressobj(0, zlib.DEFLATED, 31)  # wbits 31: gzip wrapper, mtime 0
    info = tarfile.TarInfo(f"data/{seed.replace('/', '-')}.bin")
    info.size, info.mtime, info.mode = size, MTIME, 0o644

    def tar_pieces() -> Iterator[bytes]:
        yield info.tobuf(format=tarfile.USTAR_FORMAT)
        left = size
        while left:
            n = min(CHUNK, left)
            yield rng.randbytes(n)
            left -= n
        yield b"\0" * (-size % 512 + 1024)  # pad the member, then the two end-of-archive blocks

    for piece in tar_pieces():
        yield compressor.compress(piece), piece
    yield compressor.flush(), b""


def make_layer(seed: str, size: int) -> Blob:
    diff = hashlib.sha256()
    parts = []
    for gz, tar in layer_pieces(seed, size):
        diff.update(tar)
        parts.append(gz)
    data = b"".join(parts)
    del parts
    return Blob(data, OCI_LAYER_GZIP, diff_id="sha256:" + diff.hexdigest())


def draw_size(rng: random.Random, scale: float) -> int:
    """Layer sizes between 2 and 40 MiB, skewed small (mean ~14.7 MiB), times `scale` (at least 64 KiB)."""
    mib = LAYER_MIN_MIB + (LAYER_MAX_MIB - LAYER_MIN_MIB) * rng.random() ** 2
    return max(64 * 1024, int(mib * MiB * scale))


@dataclass
class Content:
    """What the primary holds: tag -> manifest digest and blob digest -> size, per repository."""

    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    blobs: dict[str, dict[str, int]] = field(default_factory=dict)
    unique_layers: int = 0
    unique_bytes: int = 0  # every distinct blob once (what a secondary stores)
    seconds_generate: float = 0.0
    seconds_push: float = 0.0

    @property
    def repositories(self) -> list[str]:
        return sorted(self.tags)

    def total_tags(self) -> int:
        return sum(len(t) for t in self.tags.values())


def mount_blob(registry: Distribution, pusher: RawPusher, repo: str, digest: str, source: str) -> bool:
    token = registry.mint([repository_scope(repo, "pull", "push"), repository_scope(source, "pull")])
    response = pusher.request(
        "POST",
        f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source}",
        headers={"Authorization": f"Bearer {token}"},
    )
    return response.status_code == 201


def load_primary(primary: Distribution, repos: int, tags: int, scale: float, seed: int) -> Content:
    """Build and push `repos` x `tags` images; each layer is built once and dropped after its repository."""
    rng = random.Random(f"geo-tui-bench-sizes/{seed}")
    content = Content()
    generate = push = 0.0

    def layer(name: str) -> Blob:
        nonlocal generate
        started = time.monotonic()
        blob = make_layer(f"{seed}/{name}", draw_size(rng, scale))
        generate += time.monotonic() - started
        content.unique_layers += 1
        content.unique_bytes += blob.size
        return blob

    base = [layer(f"base/{i}") for i in range(2)]
    first_repo: str | None = None
    with RawPusher.for_registry(primary, timeout=120.0) as pusher:
        for r in range(repos):
            repo = f"{NAMESPACE}/app-{r:02d}"
            shared = layer(f"{repo}/shared")
            own = [layer(f"{repo}/tag-{t}") for t in range(tags)]
            started = time.monotonic()
            if first_repo is not None:  # the base is already on the primary: mount it, as a push would
                for blob in base:
                    mount_blob(primary, pusher, repo, blob.digest, first_repo)
            content.tags[repo], content.blobs[repo] = {}, {}
            for t in range(tags):
                tag = f"v1.{t}"
                image = image_with_layers([*base, shared, own[t]], seed=f"{seed}/{repo}:{tag}")
                digest = pusher.push_tree(repo, image, tag)
                if digest != image.digest:
                    raise RuntimeError(f"primary stored {repo}:{tag} as {digest}, pushed {image.digest}")
                content.tags[repo][tag] = image.digest
                for blob in image.blobs:
                    if blob.digest not in content.blobs[repo]:
                        content.blobs[repo][blob.digest] = blob.size
                        if blob.media_type == OCI_CONFIG:
                            content.unique_bytes += blob.size
            push += time.monotonic() - started
            first_repo = first_repo or repo
            del shared, own
            log(f"primary: {repo} pushed ({tags} tags)")
    content.seconds_generate, content.seconds_push = generate, push
    return content


def push_big_image(primary: Distribution, seed: int, size_mib: int) -> Content:
    """One repository, one tag, one `size_mib` MiB layer: generated twice (digest, upload), never held."""
    seed_name, size = f"{seed}/big", size_mib * MiB
    started = time.monotonic()
    digest, diff, length = hashlib.sha256(), hashlib.sha256(), 0
    for gz, tar in layer_pieces(seed_name, size):
        digest.update(gz)
        diff.update(tar)
        length += len(gz)
    layer_digest, diff_id = "sha256:" + digest.hexdigest(), "sha256:" + diff.hexdigest()
    generated = time.monotonic() - started

    token = primary.mint([repository_scope(BIG_REPO, "pull", "push")])
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=primary.url, timeout=300.0) as client:
        response = client.post(f"/v2/{BIG_REPO}/blobs/uploads/", headers=auth)
        if response.status_code != 202:
            raise RuntimeError(f"POST upload for {BIG_REPO}: {response.status_code} {response.text[:300]}")
        location = urlsplit(response.headers["Location"])
        query = f"{location.query}&digest={layer_digest}" if location.query else f"digest={layer_digest}"
        response = client.put(
            f"{location.path}?{query}",
            content=(gz for gz, _ in layer_pieces(seed_name, size) if gz),
            headers={
                **auth,
                "Content-Length": str(length),
                "Content-Type": "application/octet-stream",
            },
        )
        if response.status_code != 201:
            raise RuntimeError(f"PUT big layer: {response.status_code} {response.text[:300]}")

    config = Blob(
        canonical_json(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Labels": {"seed": seed_name}},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }
        ),
        OCI_CONFIG,
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": length}],
        },
        indent=3,
    ).encode()
    with RawPusher.for_registry(primary) as pusher:
        pusher.push_blob(BIG_REPO, config)
        manifest_digest = pusher.push_manifest(BIG_REPO, "latest", manifest, OCI_MANIFEST)
    if manifest_digest != "sha256:" + hashlib.sha256(manifest).hexdigest():
        raise RuntimeError(f"primary stored {BIG_REPO}:latest under an unexpected digest {manifest_digest}")
    content = Content(
        tags={BIG_REPO: {"latest": manifest_digest}},
        blobs={BIG_REPO: {layer_digest: length, config.digest: config.size}},
        unique_layers=1,
        unique_bytes=length + config.size,
        seconds_generate=generated,
        seconds_push=time.monotonic() - started - generated,
    )
    return content


# Checking a copy ----------------------------------------------------------------------------------------


def verify_copy(site: Distribution, content: Content, *, exact_catalog: bool = True) -> list[str]:
    """Problems with `site`'s copy of `content` (empty: complete and identical)."""
    problems: list[str] = []
    with RawPusher.for_registry(site, actions=("pull",)) as client:
        catalog = set(client.catalog())
        missing = sorted(set(content.tags) - catalog)
        extra = sorted(catalog - set(content.tags))
        if missing:
            problems.append(f"{site.name}: repositories missing: {', '.join(missing)}")
        if extra and exact_catalog:
            problems.append(f"{site.name}: unexpected repositories (paths changed?): {', '.join(extra)}")
        for repo in content.repositories:
            if repo in missing:
                continue
            want = content.tags[repo]
            tags_response = client.request("GET", f"/v2/{repo}/tags/list", repository=repo)
            have_tags = (
                set(tags_response.json().get("tags") or []) if tags_response.status_code == 200 else set()
            )
            for tag in sorted(set(want) - have_tags):
                problems.append(f"{site.name}: {repo}:{tag} missing from the tag list")
            for tag, digest in sorted(want.items()):
                head = client.head_manifest(repo, tag)
                got = head.headers.get("Docker-Content-Digest")
                if head.status_code != 200:
                    problems.append(f"{site.name}: HEAD {repo}:{tag} -> {head.status_code}")
                elif got != digest:
                    problems.append(f"{site.name}: {repo}:{tag} is {got}, the primary has {digest}")
            for digest, size in sorted(content.blobs[repo].items()):
                head = client.request("HEAD", f"/v2/{repo}/blobs/{digest}", repository=repo)
                length = int(head.headers.get("Content-Length", -1))
                if head.status_code != 200 or length != size:
                    problems.append(
                        f"{site.name}: blob {repo}@{digest[:19]} -> {head.status_code}, {length}/{size} bytes"
                    )
    return problems


def wipe(site: Distribution) -> None:
    """Empty a secondary: stop, remove its storage, start again on the same port."""
    site.stop()
    shutil.rmtree(site.root_dir, ignore_errors=True)
    site.start()


def writes_since(site: Distribution, mark: int) -> tuple[int, int]:
    """(requests, write requests) in `site`'s access log since `mark`."""
    time.sleep(0.2)  # access-log lines land as handlers return
    lines = site.access_log_lines()[mark:]
    return len(lines), sum(1 for line in lines if line.method in ("PUT", "POST", "PATCH", "DELETE"))


# Child processes ----------------------------------------------------------------------------------------


@dataclass
class ChildRun:
    label: str
    command: list[str]
    returncode: int
    seconds: float
    max_rss_kib: int
    cpu_seconds: float  # user + system time of the command and what it waited for (wait4's rusage)
    stdout: str
    stderr_path: Path
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def stderr_tail(self, lines: int = 15) -> str:
        text = self.stderr_path.read_text(errors="replace").splitlines() if self.stderr_path.exists() else []
        return "\n".join(text[-lines:])

    @property
    def rss_mib(self) -> float:
        return self.max_rss_kib / 1024  # ru_maxrss is KiB on Linux

    def summary(self) -> dict[str, Any] | None:
        try:
            parsed = json.loads(self.stdout)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None


# A fresh, small process forks and waits for the measured command. ru_maxrss cannot be read from a direct
# child of this bench: at exec, Linux folds the old address space's high-water mark into the new image's
# maxrss, and a (v)forked child's old address space is this process's, which holds the generated layers.
# The launcher's own few MiB are the floor instead (python -S, no imports beyond builtins).
_LAUNCHER = """
import os, sys, time
result, command = sys.argv[1], sys.argv[2:]
started = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(command[0], command)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(result, "w") as handle:
    cpu = usage.ru_utime + usage.ru_stime
    handle.write("%.6f %d %d %.6f" % (time.monotonic() - started, usage.ru_maxrss, status, cpu))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""

_current_child: subprocess.Popen[bytes] | None = None


def run_child(label: str, command: list[str], logdir: Path, timeout: float) -> ChildRun:
    """Run `command` via the launcher; wall clock and peak RSS (ru_maxrss, KiB) of the command itself."""
    global _current_child
    out_path, err_path = logdir / f"{label}.stdout", logdir / f"{label}.stderr"
    result_path = logdir / f"{label}.rusage"
    result_path.unlink(missing_ok=True)
    timed_out = threading.Event()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-S", "-c", _LAUNCHER, str(result_path), *command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=REPO_ROOT,
            env=_child_env(),
            process_group=0,  # its own group: a timeout or Ctrl-C here kills the command with it
        )
        _current_child = process

        def on_timeout() -> None:
            timed_out.set()
            _kill_group(process)

        timer = threading.Timer(timeout, on_timeout)
        timer.start()
        try:
            process.wait()
            elapsed = time.monotonic() - started
        finally:
            timer.cancel()
            _kill_group(process)  # leftovers of the group, or everything if interrupted
            _current_child = None
    seconds, max_rss_kib, returncode, cpu_seconds = elapsed, 0, process.returncode, 0.0
    if result_path.exists():
        fields = result_path.read_text().split()
        seconds, max_rss_kib = float(fields[0]), int(fields[1])
        returncode = os.waitstatus_to_exitcode(int(fields[2]))
        cpu_seconds = float(fields[3])
    run = ChildRun(
        label=label,
        command=command,
        returncode=returncode,
        seconds=seconds,
        max_rss_kib=max_rss_kib,
        cpu_seconds=cpu_seconds,
        stdout=out_path.read_text(errors="replace"),
        stderr_path=err_path,
        timed_out=timed_out.is_set(),
    )
    state = "ok" if run.ok else ("TIMED OUT" if run.timed_out else f"FAILED (exit {run.returncode})")
    log(
        f"{label}: {state} in {run.seconds:.2f} s, CPU {run.cpu_seconds:.2f} s, "
        f"peak RSS {run.rss_mib:.0f} MiB"
    )
    return run


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.returncode is None:
        process.wait()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(proxy, None)  # everything is on 127.0.0.1
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def geo_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "geo_tui", "--config", str(config), "sync", "--once", "--json"]


def skopeo_yaml(path: Path, primary: Distribution, content: Content) -> Path:
    """skopeo sync's YAML source: the primary, plain HTTP, every repository with its tags (JSON is YAML)."""
    images = {repo: sorted(tags) for repo, tags in sorted(content.tags.items())}
    path.write_text(json.dumps({primary.host: {"tls-verify": False, "images": images}}, indent=2))
    return path


def skopeo_command(sources: Path, destination: Distribution, namespace: str = NAMESPACE) -> list[str]:
    # No --scoped: skopeo appends path.Base(source repository) to the destination, so the destination is
    # the namespace and `bench/app-00` lands at `bench/app-00`.
    skopeo = shutil.which("skopeo") or "skopeo"
    return [
        skopeo,
        "--insecure-policy",
        "sync",
        "--all",
        "--preserve-digests",
        "--src",
        "yaml",
        "--dest",
        "docker",
        "--dest-tls-verify=false",
        "--dest-no-creds",
        "--retry-times",
        "0",
        str(sources),
        f"{destination.host}/{namespace}",
    ]


# The bench ----------------------------------------------------------------------------------------------


@dataclass
class Tool:
    """The runs of one tool in one phase."""

    runs: list[ChildRun] = field(default_factory=list)

    @property
    def ok_seconds(self) -> list[float]:
        return [run.seconds for run in self.runs if run.ok]

    @property
    def median(self) -> float | None:
        seconds = self.ok_seconds
        return statistics.median(seconds) if seconds else None

    @property
    def median_cpu(self) -> float | None:
        cpu = [run.cpu_seconds for run in self.runs if run.ok]
        return statistics.median(cpu) if cpu else None

    @property
    def first(self) -> float | None:
        return self.runs[0].seconds if self.runs and self.runs[0].ok else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_seconds": _round(self.median),
            "median_cpu_seconds": _round(self.median_cpu),
            "runs": [
                {
                    "seconds": round(run.seconds, 3),
                    "ok": run.ok,
                    "exit": run.returncode,
                    "peak_rss_mib": round(run.rss_mib, 1),
                    "cpu_seconds": round(run.cpu_seconds, 3),
                }
                for run in self.runs
            ],
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _per_gib(cpu_seconds: float | None, unique_bytes: int) -> float | None:
    return None if cpu_seconds is None or not unique_bytes else round(cpu_seconds / (unique_bytes / 2**30), 2)


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.logdir = workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.results: dict[str, Any] = {}
        self.key_pair: TestKeyPair = session_key_pair()
        self.sites: dict[str, Distribution] = {}

    def fail(self, message: str) -> None:
        self.failures.append(message)
        log(f"FAILURE: {message}")

    def check_run(self, run: ChildRun) -> None:
        if not run.ok:
            why = "timed out" if run.timed_out else f"exited {run.returncode}"
            self.fail(f"{run.label} {why}; stderr tail:\n{run.stderr_tail()}")

    def start_sites(self, stack: contextlib.ExitStack) -> None:
        realm = stack.enter_context(TokenServer(self.key_pair))
        for name in ("primary", "A", "B", "C"):
            site = Distribution(
                self.workdir / f"registry-{name}", name=name, key_pair=self.key_pair, token_realm=realm.url
            )
            stack.callback(site.stop)
            site.start()
            self.sites[name] = site
        log("registries: " + ", ".join(f"{n} {s.url}" for n, s in self.sites.items()))

    def geo_config(self, site: Distribution, tag: str, include: list[str] | None = None) -> Path:
        options = {site.name: {"include": include}} if include else None
        return write_geo_config(
            self.workdir / f"geo-{tag}",
            self.sites["primary"],
            [site],
            self.key_pair,
            secondary_options=options,
            engine={
                "repository_concurrency": self.args.repository_concurrency,
                "blob_concurrency": self.args.blob_concurrency,
            },
        )

    def run(self) -> None:
        args = self.args
        primary, a, b, c = (self.sites[n] for n in ("primary", "A", "B", "C"))

        log(f"loading the primary: {args.repos} repositories x {args.tags} tags, scale {args.scale}")
        content = load_primary(primary, args.repos, args.tags, args.scale, args.seed)
        problems = verify_copy(primary, content)
        if problems:
            raise RuntimeError("the primary does not hold what was pushed: " + "; ".join(problems[:5]))
        self.results["content"] = {
            "repositories": len(content.tags),
            "tags": content.total_tags(),
            "unique_layers": content.unique_layers,
            "unique_bytes": content.unique_bytes,
            "unique_mib": round(content.unique_bytes / MiB, 1),
            "seed": args.seed,
            "scale": args.scale,
            "generate_seconds": round(content.seconds_generate, 2),
            "push_seconds": round(content.seconds_push, 2),
        }
        log(
            f"primary loaded: {content.unique_layers} layers, {content.unique_bytes / MiB:.1f} MiB unique, "
            f"generated in {content.seconds_generate:.1f} s, pushed in {content.seconds_push:.1f} s"
        )
        sources = skopeo_yaml(self.workdir / "skopeo-sources.yaml", primary, content)

        # Backfill rounds, order alternating.
        geo, skopeo = Tool(), Tool()
        geo_config = self.geo_config(a, "A-1")
        for round_no in range(1, args.repeat + 1):
            if round_no > 1:
                wipe(a)
                wipe(b)
                geo_config = self.geo_config(a, f"A-{round_no}")  # a fresh tracking database
            order = ("geo", "skopeo") if round_no % 2 else ("skopeo", "geo")
            for which in order:
                # Neither tool pays for the writeback of what came before it (the primary's load, the
                # other tool's copy, a wiped secondary's files): ~0.5 s of a core at the start otherwise.
                os.sync()
                if which == "geo":
                    run = run_child(
                        f"backfill-{round_no}-geo-tui", geo_command(geo_config), self.logdir, args.timeout
                    )
                    geo.runs.append(run)
                    self.check_run(run)
                    self.check_geo_summary(run, a.name)
                    for problem in verify_copy(a, content):
                        self.fail(f"round {round_no}: {problem}")
                else:
                    command = skopeo_command(sources, b)
                    run = run_child(f"backfill-{round_no}-skopeo", command, self.logdir, args.timeout)
                    skopeo.runs.append(run)
                    self.check_run(run)
                    for problem in verify_copy(b, content):
                        self.fail(f"round {round_no}: {problem}")
        geo_summary = geo.runs[-1].summary() if geo.runs else None
        ratio = (skopeo.median / geo.median) if geo.median and skopeo.median else None
        self.results["backfill"] = {
            "geo_tui": {**geo.as_dict(), "summary": _site_summary(geo_summary, a.name)},
            "skopeo_sync": skopeo.as_dict(),
            "ratio_skopeo_over_geo_tui": _round(ratio, 2),
            "target_ratio": TARGET_RATIO,
            "target_met": None if ratio is None else ratio >= TARGET_RATIO,
            "geo_tui_throughput_mib_s": _round(content.unique_bytes / MiB / geo.median, 1)
            if geo.median
            else None,
            "skopeo_throughput_mib_s": (
                _round(content.unique_bytes / MiB / skopeo.median, 1) if skopeo.median else None
            ),
            # CPU per GiB copied: the engine's own cost, whatever the load of the machine around it.
            "geo_tui_cpu_seconds_per_gib": _per_gib(geo.median_cpu, content.unique_bytes),
            "skopeo_cpu_seconds_per_gib": _per_gib(skopeo.median_cpu, content.unique_bytes),
        }

        # What a no-op cannot go below: the interpreter and geo-tui's imports (`--version` exits after them).
        startup = run_child(
            "startup-geo-tui", [sys.executable, "-m", "geo_tui", "--version"], self.logdir, 60
        )
        self.results["geo_tui_startup_seconds"] = round(startup.seconds, 3) if startup.ok else None

        # No-op second runs over the up-to-date copies.
        mark = a.mark()
        noop_geo = run_child("noop-geo-tui", geo_command(geo_config), self.logdir, args.timeout)
        self.check_run(noop_geo)
        self.check_geo_summary(noop_geo, a.name)
        geo_requests, geo_writes = writes_since(a, mark)
        mark = b.mark()
        noop_skopeo = run_child("noop-skopeo", skopeo_command(sources, b), self.logdir, args.timeout)
        self.check_run(noop_skopeo)
        skopeo_requests, skopeo_writes = writes_since(b, mark)
        for problem in verify_copy(a, content) + verify_copy(b, content):
            self.fail(f"after the no-op runs: {problem}")
        first = geo.first
        noop_fraction = noop_geo.seconds / first if first and noop_geo.ok else None
        self.results["noop"] = {
            "geo_tui": {
                "seconds": round(noop_geo.seconds, 3),
                "cpu_seconds": round(noop_geo.cpu_seconds, 3),
                "cpu_seconds_per_1000_repositories": round(noop_geo.cpu_seconds * 1000 / args.repos, 2),
                "ok": noop_geo.ok,
                "requests": geo_requests,
                "write_requests": geo_writes,
                "fraction_of_first_run": _round(noop_fraction, 3),
                "summary": _site_summary(noop_geo.summary(), a.name),
            },
            "skopeo_sync": {
                "seconds": round(noop_skopeo.seconds, 3),
                "cpu_seconds": round(noop_skopeo.cpu_seconds, 3),
                "cpu_seconds_per_1000_repositories": round(noop_skopeo.cpu_seconds * 1000 / args.repos, 2),
                "ok": noop_skopeo.ok,
                "requests": skopeo_requests,
                "write_requests": skopeo_writes,
            },
            "ratio_skopeo_over_geo_tui": _round(
                noop_skopeo.seconds / noop_geo.seconds if noop_geo.ok and noop_skopeo.ok else None, 2
            ),
            "cpu_ratio_skopeo_over_geo_tui": _round(
                noop_skopeo.cpu_seconds / noop_geo.cpu_seconds
                if noop_geo.ok and noop_skopeo.ok and noop_geo.cpu_seconds
                else None,
                2,
            ),
            "target_fraction": TARGET_NOOP,
            "target_met": None if noop_fraction is None else noop_fraction <= TARGET_NOOP,
        }

        # Peak RSS with one big layer, into C only.
        if args.big_layer_mib > 0:
            log(f"pushing {BIG_REPO} with one {args.big_layer_mib} MiB layer (streamed)")
            big = push_big_image(primary, args.seed, args.big_layer_mib)
            log(
                f"big layer hashed in {big.seconds_generate:.1f} s, generated again and pushed "
                f"in {big.seconds_push:.1f} s"
            )
            config = self.geo_config(c, "C", include=[BIG_REPO])
            run = run_child("rss-geo-tui", geo_command(config), self.logdir, args.timeout)
            self.check_run(run)
            self.check_geo_summary(run, c.name)
            problems = verify_copy(c, big, exact_catalog=False)
            for problem in problems:
                self.fail(f"big layer: {problem}")
            with RawPusher.for_registry(c, actions=("pull",)) as client:
                extra = sorted(set(client.catalog()) - {BIG_REPO})
            if extra:
                self.notes.append(
                    f"C was limited to {BIG_REPO} (include) but also got {len(extra)} repositories"
                )
            self.results["peak_rss"] = {
                "big_layer_mib": args.big_layer_mib,
                "geo_tui_peak_rss_mib": round(run.rss_mib, 1) if run.ok else None,
                "geo_tui_peak_rss_mib_any_exit": round(run.rss_mib, 1),
                "seconds": round(run.seconds, 3),
                "ok": run.ok and not problems,
                "throughput_mib_s": round(big.unique_bytes / MiB / run.seconds, 1) if run.ok else None,
                "target_mib": TARGET_RSS_MIB,
                "target_met": (run.rss_mib < TARGET_RSS_MIB) if run.ok else None,
                "summary": _site_summary(run.summary(), c.name),
            }

    def check_geo_summary(self, run: ChildRun, site: str) -> None:
        summary = run.summary()
        if summary is None:
            self.fail(f"{run.label}: no JSON summary on stdout ({len(run.stdout)} bytes)")
            return
        site_summary = _site_summary(summary, site)
        if site_summary is None:
            self.fail(f"{run.label}: the JSON summary has no site {site!r}")
        elif site_summary.get("failed") or site_summary.get("failures"):
            self.fail(f"{run.label}: geo-tui reports failures: {site_summary.get('failures')}")
        if run.ok and summary.get("ok") is False:
            self.fail(f"{run.label}: exit 0 but the summary says ok=false")


def _site_summary(summary: dict[str, Any] | None, site: str) -> dict[str, Any] | None:
    if not summary:
        return None
    sites = summary.get("sites")
    found = sites.get(site) if isinstance(sites, dict) else None
    return found if isinstance(found, dict) else None


# Report -------------------------------------------------------------------------------------------------


def _s(value: float | None, suffix: str = " s", digits: int = 1) -> str:
    return "failed" if value is None else f"{value:.{digits}f}{suffix}"


def _met(flag: bool | None) -> str:
    return "" if flag is None else ("  met" if flag else "  MISSED")


def render_table(results: dict[str, Any], failures: list[str], notes: list[str]) -> str:
    lines = []
    content = results.get("content")
    if content:
        lines.append(
            f"content   {content['repositories']} repositories, {content['tags']} tags, "
            f"{content['unique_layers']} layers, {content['unique_mib']} MiB unique (seed {content['seed']}, "
            f"scale {content['scale']})"
        )
    backfill = results.get("backfill")
    if backfill:
        geo, sk = backfill["geo_tui"], backfill["skopeo_sync"]
        ratio = backfill["ratio_skopeo_over_geo_tui"]
        runs = len(geo["runs"])
        lines.append(
            f"backfill  geo-tui {_s(geo['median_seconds'])}   skopeo sync {_s(sk['median_seconds'])}   "
            f"ratio skopeo/geo-tui {_s(ratio, 'x', 2)}  (target >= {TARGET_RATIO}x)"
            f"{_met(backfill['target_met'])}" + (f"   median of {runs}" if runs > 1 else "")
        )
        summary = geo.get("summary")
        if summary:
            lines.append(
                f"          geo-tui copied {summary.get('blobs_copied')} blobs, "
                f"mounted {summary.get('blobs_mounted')}, "
                f"{(summary.get('bytes') or 0) / MiB:.1f} MiB; peak RSS geo-tui "
                f"{max(r['peak_rss_mib'] for r in geo['runs']):.0f} MiB, skopeo "
                f"{max(r['peak_rss_mib'] for r in sk['runs']):.0f} MiB"
            )
    noop = results.get("noop")
    if noop:
        geo, sk = noop["geo_tui"], noop["skopeo_sync"]
        fraction = geo["fraction_of_first_run"]
        lines.append(
            f"no-op     geo-tui {_s(geo['seconds'] if geo['ok'] else None)} "
            f"({_s(fraction, 'x', 2)} of first run, target <= {TARGET_NOOP}x{_met(noop['target_met'])}; "
            f"{geo['write_requests']} writes/{geo['requests']} requests)   skopeo sync "
            f"{_s(sk['seconds'] if sk['ok'] else None)} "
            f"({sk['write_requests']} writes/{sk['requests']} requests)"
        )
        lines.append(
            f"          no-op CPU geo-tui {_s(geo['cpu_seconds'], ' s', 2)} "
            f"({geo['cpu_seconds_per_1000_repositories']} s per 1,000 repositories)   skopeo sync "
            f"{_s(sk['cpu_seconds'], ' s', 2)} ({sk['cpu_seconds_per_1000_repositories']} s per 1,000)   "
            f"ratios skopeo/geo-tui: wall {_s(noop['ratio_skopeo_over_geo_tui'], 'x', 2)}, "
            f"CPU {_s(noop['cpu_ratio_skopeo_over_geo_tui'], 'x', 2)}"
        )
        if results.get("geo_tui_startup_seconds") is not None:
            lines.append(
                f"          (geo-tui start-up alone, `--version`: {results['geo_tui_startup_seconds']:.2f} s)"
            )
    rss = results.get("peak_rss")
    if rss:
        lines.append(
            f"peak RSS  geo-tui {_s(rss['geo_tui_peak_rss_mib'], ' MiB', 0)} "
            f"with a {rss['big_layer_mib']} MiB "
            f"layer (target < {TARGET_RSS_MIB:.0f} MiB){_met(rss['target_met'])}"
            + (
                ""
                if rss["ok"]
                else f"  [run failed; RSS at exit {rss['geo_tui_peak_rss_mib_any_exit']:.0f} MiB]"
            )
            + f"   {_s(rss['throughput_mib_s'], ' MiB/s')} on that layer"
        )
    if backfill:
        lines.append(
            f"throughput geo-tui {_s(backfill['geo_tui_throughput_mib_s'], ' MiB/s')}   "
            f"skopeo sync {_s(backfill['skopeo_throughput_mib_s'], ' MiB/s')}  (unique bytes / backfill time)"
        )
        lines.append(
            f"CPU/GiB   geo-tui {_s(backfill['geo_tui_cpu_seconds_per_gib'], ' s', 2)}   "
            f"skopeo sync {_s(backfill['skopeo_cpu_seconds_per_gib'], ' s', 2)}  (the tool's own CPU per GiB "
            "copied, median of the backfill runs)"
        )
    for note in notes:
        lines.append(f"note      {note}")
    if failures:
        lines.append(f"FAILED    {len(failures)} problem(s):")
        lines.extend("  - " + failure.replace("\n", "\n    ") for failure in failures)
    else:
        lines.append("copies    complete: every tag on A, B (and C) has the primary's digest")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/backfill.py",
        description="Backfill benchmark: geo-tui sync --once against skopeo sync on real Distribution 2.8.",
    )
    parser.add_argument("--repos", type=int, default=8, help="repositories (default 8)")
    parser.add_argument("--tags", type=int, default=3, help="tags per repository (default 3)")
    parser.add_argument("--scale", type=float, default=None, help="layer size factor (default 1.0)")
    parser.add_argument("--quick", action="store_true", help=f"scale {QUICK_SCALE} (~60 MiB) unless --scale")
    parser.add_argument("--seed", type=int, default=1, help="content seed (default 1)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="backfill rounds, order alternating (default 1)"
    )
    parser.add_argument(
        "--big-layer-mib",
        type=int,
        default=256,
        help="layer size for the peak-RSS run; 0 skips it (default 256)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="per child process, seconds (default 600)"
    )
    parser.add_argument(
        "--repository-concurrency",
        type=int,
        default=10,
        help="geo-tui [engine] repository_concurrency (default 10, the product default)",
    )
    parser.add_argument(
        "--blob-concurrency",
        type=int,
        default=4,
        help="geo-tui [engine] blob_concurrency (default 4, the product default)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where to make the temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (registries, logs)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.scale is None:
        args.scale = QUICK_SCALE if args.quick else 1.0
    if args.repos < 1 or args.tags < 1 or args.repeat < 1 or args.scale <= 0 or args.big_layer_mib < 0:
        parser.error("--repos, --tags, --repeat and --scale must be positive, --big-layer-mib >= 0")
    return args


def preflight(args: argparse.Namespace, parent: Path) -> None:
    for binary, package in (("docker-registry", "docker-registry"), ("skopeo", "skopeo")):
        if not shutil.which(binary):
            raise SetupError(f"`{binary}` is not on PATH: apt-get install -y {package}")
    # Primary + A + B hold the content; primary + C the big layer.
    expected = 3 * args.repos * (1 + args.tags) * 14.7 * MiB * args.scale + 2 * args.big_layer_mib * MiB
    free = shutil.disk_usage(parent).free
    if free < 1.2 * expected:
        raise SetupError(
            f"{parent}: {free / MiB:.0f} MiB free, the bench needs about {expected / MiB:.0f} MiB"
        )


def compile_bytecode(prefix: Path) -> None:
    """Give the geo-tui children compiled modules, as an installed package has: where
    PYTHONDONTWRITEBYTECODE is set (this development machine sets it), every start would compile
    geo_tui from source, ~50 ms that skopeo, a compiled binary, never pays. Into the temp dir, never
    into the source tree."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO_ROOT / "geo_tui")], env=_child_env(), check=True
    )


def main(argv: list[str] | None = None) -> int:
    global _quiet
    args = parse_args(argv)
    _quiet = args.quiet
    parent = args.workdir or Path(tempfile.gettempdir())

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    try:
        preflight(args, parent)
    except SetupError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="geo-tui-bench-", dir=parent))
    compile_bytecode(workdir / "pycache")
    bench = Bench(args, workdir)
    code = 0
    try:
        with contextlib.ExitStack() as stack:
            if not args.keep:
                stack.callback(shutil.rmtree, workdir, True)
            stack.callback(_kill_current_child)
            bench.start_sites(stack)
            bench.run()
    except KeyboardInterrupt:
        print("bench: interrupted; registries stopped", file=sys.stderr)
        return 130
    except Exception as error:  # a setup step broke: still report what was measured
        bench.fail(f"bench error: {type(error).__name__}: {error}")
        code = 1
    if bench.failures:
        code = 1
    output = {"ok": not bench.failures, "failures": bench.failures, "notes": bench.notes, **bench.results}
    if args.keep:
        output["workdir"] = str(workdir)
    if args.json:
        print(json.dumps(output, indent=2))
    else:
        print(render_table(bench.results, bench.failures, bench.notes))
        if args.keep:
            print(f"workdir   {workdir} (registries' storage and logs, child stdout/stderr in logs/)")
    return code


def _kill_current_child() -> None:
    if _current_child is not None:
        _kill_group(_current_child)


if __name__ == "__main__":
    sys.exit(main())
