"""Engine cost per repository with 1 and N `geo-tui serve` workers on one PostgreSQL database, against
`skopeo sync` on the same repositories in the same run (issue 16). `bench/scale_out.py --engine` runs it.

Run it from the repository root (it imports the test lab, `tests.support`)::

    python bench/scale_out.py --engine                        # 400 repositories x 3 tags, 1 and 3 workers
    python bench/scale_out.py --engine --repos 100 --workers 1,2,3 --json

What it does, all on 127.0.0.1:
1. Starts a token realm, a primary Distribution and one empty secondary per tool run: S for skopeo and
   one per worker count (G1, G3, ...), and a throwaway PostgreSQL cluster (as the tests do).
2. Pushes --repos repositories x --tags tags of small images into the primary (bench/backfill.py's
   generator at --scale; the default 0.002 makes each layer a few KiB, so requests, not bytes, dominate).
3. skopeo: `skopeo sync` into S (the first copy), then again (the no-op), each under a launcher that reads
   the child's own CPU time from wait4.
4. For each worker count N: a fresh database, N `python -m geo_tui serve` processes with one config each
   (the same database URL, their own API socket, no receiver), discovery by the leader, the backfill
   shared through the claims. The copy ends when every row is synced; then a resync of everything, sent
   to worker 0's API as a console sends it, puts every row back and the workers compare them all again
   (the no-op: every tag is on the secondary), timed from before the command to every row synced. The
   no-op runs in freshly started workers, as a reconcile an hour later would (no token, connection or
   cache of the copy's). The workers' CPU is read from /proc/<pid>/stat at each boundary (user + system,
   summed over workers), and their idle CPU over a quiet --idle seconds is measured first and reported.
5. Verifies every secondary: each tag answers HEAD with the primary's digest.

Printed: per tool run, wall clock and CPU of the first copy and of the no-op, CPU per 1,000 no-op
repository compares and per GiB copied, and the ratios against skopeo. CPU time is what holds on a loaded
machine; the wall clock of N workers on a 2-core machine is bounded by the two cores they share with the
registries and PostgreSQL. Exit status: 0 done, every copy complete; 1 a copy failed or is incomplete;
2 setup problem.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402
import tomli_w  # noqa: E402

from bench.backfill import (  # noqa: E402
    MiB,
    _child_env,
    compile_bytecode,
    load_primary,
    log,
    run_child,
    skopeo_command,
    skopeo_yaml,
    verify_copy,
)
from geo_tui.engine.wire import CommandAnswer, Resync  # noqa: E402
from geo_tui.link.client import EngineClient  # noqa: E402
from tests.support.distribution import Distribution  # noqa: E402
from tests.support.geo import write_geo_config  # noqa: E402
from tests.support.keys import session_key_pair  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402
from tests.support.token_server import TokenServer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
GiB = 1 << 30


@dataclass
class ToolRun:
    """One tool's first copy and no-op, in wall seconds and CPU seconds."""

    name: str
    workers: int
    copy_seconds: float = 0.0
    copy_cpu: float = 0.0
    noop_seconds: float = 0.0
    noop_cpu: float = 0.0
    idle_cpu_per_second: float = 0.0
    noop_requests: tuple[int, int] = (0, 0)  # (on the primary, on the secondary)
    copy_shares: list[int] = field(default_factory=list)  # repositories each worker synced, copying
    shares: list[int] = field(default_factory=list)  # and in the no-op

    def as_dict(self, repositories: int, unique_bytes: int) -> dict[str, Any]:
        return {
            "tool": self.name,
            "workers": self.workers,
            "copy_seconds": round(self.copy_seconds, 2),
            "copy_cpu_seconds": round(self.copy_cpu, 2),
            "cpu_seconds_per_gib": round(self.copy_cpu / (unique_bytes / GiB), 1) if unique_bytes else None,
            "noop_seconds": round(self.noop_seconds, 2),
            "noop_cpu_seconds": round(self.noop_cpu, 2),
            "noop_cpu_seconds_per_1000_repositories": round(self.noop_cpu * 1000 / repositories, 2),
            "noop_requests_per_repository": {
                "primary": round(self.noop_requests[0] / repositories, 2),
                "secondary": round(self.noop_requests[1] / repositories, 2),
            },
            "idle_cpu_per_second": round(self.idle_cpu_per_second, 4),
            "copy_shares": self.copy_shares,
            "noop_shares": self.shares,
        }


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (its children not included: serve forks none)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Workers:
    """N `geo-tui serve` processes on one database, each in its own process group."""

    def __init__(self, configs: list[Path], logdir: Path, phase: str) -> None:
        self.configs = configs
        self.logs = [logdir / f"{config.parent.name}-{phase}.log" for config in configs]
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for n, (config, log_path) in enumerate(zip(self.configs, self.logs, strict=True)):
            with open(log_path, "wb") as err:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "geo_tui", "--config", str(config), "serve"],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        cwd=REPO_ROOT,
                        env=_child_env(),
                        process_group=0,
                    )
                )
            log(f"worker {n} started (pid {self.processes[-1].pid})")

    def cpu(self) -> float:
        return sum(process_cpu(p.pid) for p in self.processes)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def ready(self) -> bool:
        """Every worker serves its API (it has opened its engine and registered)."""
        return all(Path(api_socket(config)).is_socket() for config in self.configs)

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.logdir = workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.key_pair = session_key_pair()
        self.sites: dict[str, Distribution] = {}
        self.failures: list[str] = []
        self.runs: list[ToolRun] = []

    def fail(self, message: str) -> None:
        self.failures.append(message)
        log(f"FAILURE: {message}")

    def start(self, stack: contextlib.ExitStack) -> None:
        realm = stack.enter_context(TokenServer(self.key_pair))
        names = ["primary", "S", *(f"G{n}" for n in self.args.workers)]
        for name in names:
            site = Distribution(
                self.workdir / f"registry-{name}", name=name, key_pair=self.key_pair, token_realm=realm.url
            )
            stack.callback(site.stop)
            site.start()
            self.sites[name] = site
        self.cluster = PostgresCluster()
        stack.callback(self.cluster.remove)

    def worker_configs(self, count: int, site: Distribution, url: str) -> list[Path]:
        configs = []
        for n in range(count):
            directory = self.workdir / f"{site.name}-w{n}"
            path = write_geo_config(
                directory,
                self.sites["primary"],
                [site],
                self.key_pair,
                engine={
                    "database": url,
                    "reconcile_interval": 3600,
                    "repository_concurrency": self.args.repository_concurrency,
                    **(
                        {}
                        if self.args.reconcile_rps is None
                        else {"reconcile_requests_per_second": self.args.reconcile_rps}
                    ),
                },
            )
            data = tomllib.loads(path.read_text())
            data["api"] = {
                "listen": str(Path(tempfile.gettempdir()) / f"gtw-{os.getpid()}-{site.name}-{n}.sock")
            }
            path.write_text(tomli_w.dumps(data))
            configs.append(path)
        return configs

    def run(self) -> dict[str, Any]:
        args = self.args
        primary = self.sites["primary"]
        log(f"loading the primary: {args.repos} repositories x {args.tags} tags, scale {args.scale}")
        content = load_primary(primary, args.repos, args.tags, args.scale, args.seed)
        repositories = len(content.tags)

        sources = skopeo_yaml(self.workdir / "skopeo-sources.yaml", primary, content)
        skopeo = ToolRun("skopeo sync", 1)
        for label in ("copy", "noop"):
            os.sync()
            marks = (primary.mark(), self.sites["S"].mark())
            run = run_child(
                f"skopeo-{label}", skopeo_command(sources, self.sites["S"]), self.logdir, args.timeout
            )
            if not run.ok:
                self.fail(f"skopeo {label}: exit {run.returncode}")
            if label == "copy":
                skopeo.copy_seconds, skopeo.copy_cpu = run.seconds, run.cpu_seconds
            else:
                skopeo.noop_seconds, skopeo.noop_cpu = run.seconds, run.cpu_seconds
                skopeo.noop_requests = self.requests_since(marks, self.sites["S"])
        self.runs.append(skopeo)
        for problem in verify_copy(self.sites["S"], content):
            self.fail(f"skopeo: {problem}")

        for count in args.workers:
            self.runs.append(self.geo_run(count, content, repositories))

        unique = content.unique_bytes
        results = {
            # serve paces whole-repository work, the no-op included, at this many requests a second per
            # site (None: geo-tui's default; 0: unpaced)
            "reconcile_requests_per_second": args.reconcile_rps,
            "repositories": repositories,
            "tags": content.total_tags(),
            "unique_mib": round(unique / MiB, 2),
            "runs": [r.as_dict(repositories, unique) for r in self.runs],
        }
        base = next(r for r in self.runs if r.name.startswith("geo-tui") and r.workers == min(args.workers))
        results["ratios"] = {
            f"{r.workers} worker(s)": {
                "noop_wall_skopeo_over_geo_tui": round(skopeo.noop_seconds / r.noop_seconds, 2),
                "noop_cpu_geo_tui_over_skopeo": round(r.noop_cpu / skopeo.noop_cpu, 2),
                "copy_wall_skopeo_over_geo_tui": round(skopeo.copy_seconds / r.copy_seconds, 2),
                "noop_speedup_over_fewest_workers": round(base.noop_seconds / r.noop_seconds, 2),
            }
            for r in self.runs
            if r.name.startswith("geo-tui") and r.noop_seconds and r.copy_seconds
        }
        return results

    def requests_since(self, marks: tuple[int, int], secondary: Distribution) -> tuple[int, int]:
        """Requests the primary and `secondary` served since `marks` (their access logs)."""
        time.sleep(0.3)  # a request's access-log line lands after its reply
        return (
            len(self.sites["primary"].access_log_lines()) - marks[0],
            len(secondary.access_log_lines()) - marks[1],
        )

    def geo_run(self, count: int, content: Any, repositories: int) -> ToolRun:
        args = self.args
        site = self.sites[f"G{count}"]
        url = self.cluster.url(self.cluster.database())
        tool = ToolRun("geo-tui serve", count)
        configs = self.worker_configs(count, site, url)
        workers = Workers(configs, self.logdir, "copy")
        with psycopg.connect(url, autocommit=True) as db:

            def synced(since: float) -> int:
                try:
                    row = db.execute(
                        "SELECT COUNT(*) FROM repositories WHERE site = %s AND state = 'synced' "
                        "AND last_synced_at >= %s",
                        (site.name, since),
                    ).fetchone()
                except psycopg.errors.UndefinedTable:
                    return 0  # the first worker has not made the schema yet
                return int(row[0]) if row else 0

            def wait_all(what: str, started: float, since: float = 0.0) -> float:
                """Wait until every row was synced at or after `since` (wall clock, as the rows are)."""
                while synced(since) < repositories:
                    if not workers.alive():
                        raise RuntimeError(
                            f"{count} workers, {what}: a worker exited (logs in {self.logdir})"
                        )
                    if time.monotonic() - started > args.timeout:
                        raise RuntimeError(
                            f"{count} workers, {what}: not every row synced in {args.timeout} s"
                        )
                    time.sleep(0.05)
                return time.monotonic() - started

            os.sync()
            started = time.monotonic()
            workers.start()
            try:
                # The copy: from the processes' start (their imports, discovery, claims) to every row synced.
                wait_all("copy", started)
                tool.copy_seconds, tool.copy_cpu = time.monotonic() - started, workers.cpu()
                for problem in verify_copy(site, content):
                    self.fail(f"{count} workers: {problem}")
                tool.copy_shares = shares_from_logs(workers.logs)
                # The no-op runs in fresh processes, as a periodic reconcile an hour later would: no
                # registry token, connection or cache left from the copy (with several workers, most
                # repositories go to another worker than the one that copied them).
                workers.stop()
                workers = Workers(configs, self.logdir, "noop")
                workers.start()
                ready_by = time.monotonic() + args.timeout
                while not workers.ready():
                    if not workers.alive() or time.monotonic() > ready_by:
                        raise RuntimeError(f"{count} workers did not start again (logs in {self.logdir})")
                    time.sleep(0.05)
                settle(workers, args.timeout)  # start-up done: registration, the leader's discovery
                before = workers.cpu()
                time.sleep(args.idle)
                tool.idle_cpu_per_second = (workers.cpu() - before) / args.idle
                marks = (self.sites["primary"].mark(), site.mark())
                before, started, since = workers.cpu(), time.monotonic(), time.time()
                answer = asyncio.run(resync_all(api_socket(workers.configs[0])))
                if not answer.ok:
                    raise RuntimeError(f"resync through the API refused: {answer.message}")
                tool.noop_seconds = wait_all("no-op", started, since)
                tool.noop_cpu = workers.cpu() - before
                tool.noop_requests = self.requests_since(marks, site)
                rows = db.execute(
                    "SELECT COUNT(*) FROM repositories WHERE site = %s AND state <> 'synced'", (site.name,)
                ).fetchone()
                if rows and int(rows[0]):
                    self.fail(f"{count} workers: {rows[0]} rows not synced after the no-op")
            finally:
                workers.stop()
            log(
                f"{count} workers: copy {tool.copy_seconds:.1f} s (CPU {tool.copy_cpu:.1f} s), "
                f"no-op {tool.noop_seconds:.1f} s (CPU {tool.noop_cpu:.1f} s)"
            )
        tool.shares = shares_from_logs(workers.logs)
        return tool


def settle(workers: Workers, timeout: float, window: float = 0.5, quiet: float = 0.02) -> None:
    """Wait until the workers' start-up work is done: under `quiet` CPU-seconds a second per worker over
    a `window`, two windows in a row."""
    calm, deadline = 0, time.monotonic() + timeout
    while calm < 2 and time.monotonic() < deadline:
        before = workers.cpu()
        time.sleep(window)
        rate = (workers.cpu() - before) / window / len(workers.processes)
        calm = calm + 1 if rate < quiet else 0


def api_socket(config: Path) -> str:
    return str(tomllib.loads(config.read_text())["api"]["listen"])


async def resync_all(target: str) -> CommandAnswer:
    async with EngineClient(target) as client:
        return await client.resync(Resync())


def shares_from_logs(logs: list[Path]) -> list[int]:
    """Repositories each worker logged as synced in one phase (its share of the work)."""
    return [
        sum(1 for line in path.read_text(errors="replace").splitlines() if " synced" in line) for path in logs
    ]


def _rate(rate: float | None) -> str:
    if rate is None:
        return "geo-tui's default (it paces the no-op: 4 requests a repository per site)"
    return "0 (unpaced)" if rate == 0 else f"{rate:g}"


def render(results: dict[str, Any], failures: list[str]) -> str:
    lines = [
        f"engine cost: {results['repositories']} repositories, {results['tags']} tags, "
        f"{results['unique_mib']} MiB unique; serve's reconcile_requests_per_second: "
        + _rate(results.get("reconcile_requests_per_second")),
        "",
        f"{'tool':<16}{'workers':>8}{'copy s':>9}{'copy CPU':>10}{'no-op s':>9}{'no-op CPU':>11}"
        f"{'CPU/1000 repos':>16}{'req/repo P+S':>14}{'idle CPU/s':>12}",
    ]
    for run in results["runs"]:
        per = run["noop_requests_per_repository"]
        lines.append(
            f"{run['tool']:<16}{run['workers']:>8}{run['copy_seconds']:>9.2f}{run['copy_cpu_seconds']:>10.2f}"
            f"{run['noop_seconds']:>9.2f}{run['noop_cpu_seconds']:>11.2f}"
            f"{run['noop_cpu_seconds_per_1000_repositories']:>16.2f}"
            f"{per['primary']:>7.1f}+{per['secondary']:<6.1f}{run['idle_cpu_per_second']:>12.3f}"
        )
    lines.append("")
    for label, ratio in results["ratios"].items():
        lines.append(
            f"geo-tui, {label}: no-op wall skopeo/geo-tui {ratio['noop_wall_skopeo_over_geo_tui']}x, "
            f"no-op CPU geo-tui/skopeo {ratio['noop_cpu_geo_tui_over_skopeo']}x, "
            f"copy wall skopeo/geo-tui {ratio['copy_wall_skopeo_over_geo_tui']}x, "
            f"no-op speed-up over the fewest workers {ratio['noop_speedup_over_fewest_workers']}x"
        )
    lines += [f"FAILURE: {f}" for f in failures]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("--engine (engine cost per repository, against skopeo sync)")
    group.add_argument("--repos", type=int, default=400, help="repositories (default 400)")
    group.add_argument("--tags", type=int, default=3, help="tags per repository (default 3)")
    group.add_argument("--scale", type=float, default=0.002, help="layer size factor (default 0.002)")
    group.add_argument("--seed", type=int, default=1, help="content seed (default 1)")
    group.add_argument(
        "--engine-workers", dest="engine_workers", default="1,3", help="worker counts (default 1,3)"
    )
    group.add_argument("--repository-concurrency", type=int, default=4, help="per worker (default 4)")
    group.add_argument(
        "--reconcile-rps",
        type=float,
        default=None,
        help="serve's reconcile_requests_per_second, which paces the no-op (default geo-tui's; 0: unpaced)",
    )
    group.add_argument("--idle", type=float, default=3.0, help="seconds of idle CPU measured (default 3)")
    group.add_argument("--timeout", type=float, default=900.0, help="per phase (default 900 s)")
    group.add_argument("--keep", action="store_true", help="keep the temp dir (registries, workers' logs)")


def run_engine_cost(args: argparse.Namespace) -> int:
    for binary, package in (("docker-registry", "docker-registry"), ("skopeo", "skopeo")):
        if not shutil.which(binary):
            print(f"bench: `{binary}` is not on PATH: apt-get install -y {package}", file=sys.stderr)
            return 2
    args.workers = sorted({int(n) for n in args.engine_workers.split(",")})
    workdir = Path(tempfile.mkdtemp(prefix="geo-tui-scale-"))
    compile_bytecode(workdir / "pycache")
    bench = Bench(args, workdir)
    results: dict[str, Any] = {}
    try:
        with contextlib.ExitStack() as stack:
            if not args.keep:
                stack.callback(shutil.rmtree, workdir, True)
            bench.start(stack)
            results = bench.run()
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # report what was measured, and why it stopped
        bench.fail(f"bench error: {type(error).__name__}: {error}")
    if args.json:
        print(json.dumps({"ok": not bench.failures, "failures": bench.failures, **results}, indent=2))
    elif results:
        print(render(results, bench.failures))
    if args.keep:
        print(f"workdir {workdir}")
    else:
        print("\n".join(f"FAILURE: {f}" for f in bench.failures))
    return 1 if bench.failures else 0
