"""The coordination ceiling of many workers on one PostgreSQL tracking database (issue 16).

Run it from the repository root (it starts a throwaway cluster the way the tests do, `tests.support`)::

    python bench/scale_out.py                    # 1, 4 and 16 workers, 1 row per claim, 3 s a phase
    python bench/scale_out.py --batch 10 --seconds 5 --rows 50000 --json
    python bench/scale_out.py --engine           # engine cost, 1 and 3 serve workers, against skopeo sync

The second part of the issue's benchmark, the engine's own CPU per repository with 1 and 3 workers on the
same workload against `skopeo sync` in the same run, is `--engine`: see bench/workers_cost.py.

What it does, all on this machine, with no registries: a throwaway PostgreSQL (initdb, pg_ctl, fsync
off as in the tests) gets, per phase, a fresh database with --rows due repositories rows over 4 sites.
N worker processes each loop, as a worker's copy loop will: `claim_due` (--batch rows, a 60 s lease),
`renew_leases` on what it claimed (the heartbeat), then `mark_synced` of each row under its lease, until
the phase's time is up or the queue is empty. One more phase runs 16 workers with a cap per site (the
caps' advisory lock taken on every claim), and one runs 1 worker on SQLite as the reference.

Workers are processes, not threads: the workers this stands for are separate `geo-tui serve` processes
(on other hosts), and threads of one interpreter share one GIL, so the client's Python would cap the
figure at one core whatever the database sustains.

Printed per phase: claims/s (claimed rows per second of the phase's wall time), the client's CPU per
claim (the workers' own CPU time, summed), and the server's CPU per claim (the postgres processes'
user+system time from /proc/<pid>/stat, summed over the postmaster's children, connections held open
across the measurement). The issue's target is 2,000 claims/s, so that the database is never what
limits 50 workers. On a shared 2-core machine client and server share the cores: the CPU per claim is
the steadier figure; claims/s is bounded by the cores the machine gives both.
Exit status: 0 done; 2 setup problem (no PostgreSQL binaries).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.workers_cost import add_arguments, run_engine_cost  # noqa: E402
from geo_tui.engine import Tracking  # noqa: E402
from geo_tui.engine.tracking.postgres import PostgresDatabase  # noqa: E402

SITES = ("eu", "us", "ap", "sa")
LEASE = 60.0
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    backend: str
    workers: int
    caps: bool
    claims: int = 0
    seconds: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float | None = None

    @property
    def label(self) -> str:
        return f"{self.backend} x{self.workers}{' caps' if self.caps else ''}"

    def figures(self) -> dict[str, Any]:
        rate = self.claims / self.seconds if self.seconds else 0.0

        def per(cpu: float) -> float | None:
            return round(1e6 * cpu / self.claims) if self.claims else None

        return {
            **asdict(self),
            "claims_per_s": round(rate, 1),
            "client_cpu_us_per_claim": per(self.client_cpu),
            "server_cpu_us_per_claim": None if self.server_cpu is None else per(self.server_cpu),
        }


def worker(
    target: Path | PostgresDatabase,
    owner: str,
    batch: int,
    caps: dict[str, int] | None,
    ready: Any,
    go: Event,
    stop: Event,
    results: Any,
    release: Event,
) -> None:
    tracking = Tracking(target)  # its connections open before the phase is measured
    ready.put(owner)
    go.wait()
    cpu, claims = time.process_time(), 0
    while not stop.is_set():
        rows = tracking.claim_due(owner, time.time(), limit=batch, lease_seconds=LEASE, caps=caps)
        if not rows:
            break
        held = tracking.renew_leases(owner, time.time(), LEASE, [(r.site, r.repository) for r in rows])
        for row in rows:
            if (row.site, row.repository) in held:
                tracking.mark_synced(
                    row.site, row.repository, row.generation, tag_count=3, size=None, owner=owner
                )
        claims += len(rows)
    results.put((claims, time.process_time() - cpu, time.monotonic()))
    release.wait(60)
    tracking.close()


def server_cpu(postmaster: int) -> float:
    """User + system seconds of the postmaster and its children (the backends, writers, autovacuum)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == postmaster or int(fields[1]) == postmaster:  # fields[1] is the parent's pid
            total += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return total


def seed(target: Path | PostgresDatabase, rows: int) -> None:
    tracking = Tracking(target)
    per_site = rows // len(SITES)
    for site in SITES:
        tracking.ensure_rows(site, [f"bench/app-{i:06d}" for i in range(per_site)])
    tracking.close()


def run_phase(
    phase: Phase, target: Path | PostgresDatabase, batch: int, seconds: float, postmaster: int | None
) -> None:
    context = multiprocessing.get_context("fork")  # no connection is open in this process when it forks
    ready, results = context.Queue(), context.Queue()
    go, stop, release = context.Event(), context.Event(), context.Event()
    caps = {site: 10**6 for site in SITES} if phase.caps else None
    processes = [
        context.Process(
            target=worker, args=(target, f"w{i}", batch, caps, ready, go, stop, results, release), daemon=True
        )
        for i in range(phase.workers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)
    before = server_cpu(postmaster) if postmaster else None
    started = time.monotonic()
    go.set()
    time.sleep(seconds)
    stop.set()
    finished = [results.get(timeout=120) for _ in processes]
    if postmaster and before is not None:
        phase.server_cpu = server_cpu(postmaster) - before
    release.set()
    for process in processes:
        process.join(60)
    phase.claims = sum(f[0] for f in finished)
    phase.client_cpu = sum(f[1] for f in finished)
    phase.seconds = max(f[2] for f in finished) - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=20_000, help="due rows per phase (default 20000)")
    parser.add_argument("--batch", type=int, default=1, help="rows per claim (default 1: the worst case)")
    parser.add_argument("--seconds", type=float, default=3.0, help="each phase's length (default 3)")
    parser.add_argument("--workers", default="1,4,16", help="worker counts on PostgreSQL (default 1,4,16)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--engine",
        action="store_true",
        help="instead: the engine's cost per repository with 1 and 3 serve workers against skopeo sync "
        "(bench/workers_cost.py)",
    )
    add_arguments(parser)
    args = parser.parse_args()
    if args.engine:
        return run_engine_cost(args)

    from tests.support.postgres import PostgresCluster  # the tests' throwaway cluster (skips need pytest)

    try:
        cluster = PostgresCluster()
    except BaseException as exc:  # pytest.skip's exception when the binaries are missing
        print(f"setup: no PostgreSQL to run against ({exc})", file=sys.stderr)
        return 2
    phases: list[Phase] = []
    try:
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        counts = [int(n) for n in args.workers.split(",")]
        plan = [Phase("postgresql", n, False) for n in counts] + [Phase("postgresql", max(counts), True)]
        for phase in plan:
            database = PostgresDatabase(cluster.url(cluster.database()))
            seed(database, args.rows)
            run_phase(phase, database, args.batch, args.seconds, postmaster)
            phases.append(phase)
        with tempfile.TemporaryDirectory(prefix="geo-bench-") as directory:
            phase = Phase("sqlite", 1, False)
            target = Path(directory) / "tracking.db"
            seed(target, args.rows)
            run_phase(phase, target, args.batch, args.seconds, None)
            phases.append(phase)
    finally:
        cluster.remove()

    figures = [p.figures() for p in phases]
    if args.json:
        print(json.dumps({"rows": args.rows, "batch": args.batch, "phases": figures}, indent=2))
        return 0
    print(
        f"claim -> renew -> complete, {args.batch} row(s) per claim, {args.rows} due rows, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"{'phase':<22}{'claims':>8}{'claims/s':>10}{'client us/claim':>17}{'server us/claim':>17}")
    for p, f in zip(phases, figures, strict=True):
        server = f["server_cpu_us_per_claim"]
        print(
            f"{p.label:<22}{p.claims:>8}{f['claims_per_s']:>10.0f}{f['client_cpu_us_per_claim'] or 0:>17.0f}"
            f"{'-' if server is None else f'{server:.0f}':>17}"
        )
    best = max((f["claims_per_s"] for f in figures if f["backend"] == "postgresql"), default=0.0)
    print(f"target >= 2000 claims/s on PostgreSQL: best {best:.0f} ({'met' if best >= 2000 else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
