"""``status``: counts per site and named repositories, read from the tracking database alone."""

from __future__ import annotations

import argparse
import json

from geo_tui.cli.common import EXIT_FAILED, EXIT_OK, UsageError
from geo_tui.config import Config, redactor_for
from geo_tui.engine import SyncState
from geo_tui.engine.model import WorkersView, workers_view
from geo_tui.figures import age, ago, count, rate


def _print_workers(view: WorkersView) -> None:
    """The workers sharing the database (issue 16); nothing at all when none has registered."""
    if not view.workers:
        return
    print(f"\nworkers (stale after {age(view.stale_after)} without a heartbeat):")
    width = max(len("HOST"), *(len(w.host) for w in view.workers))
    print(f"  {'HOST':<{width}} {'PID':>7}  {'HEARTBEAT':<12} {'IN FLIGHT':>9} {'THROUGHPUT':>12}  STATE")
    for w in sorted(view.workers, key=lambda w: (w.host, w.pid)):
        print(
            f"  {w.host:<{width}} {w.pid or '?':>7}  {ago(0.0, w.heartbeat_age):<12} {count(w.in_flight):>9} "
            f"{rate(w.throughput) if w.throughput is not None else '-':>12}  "
            f"{w.state.upper() if w.stale else w.state}{', leader' if w.leader else ''}"
        )


def _workers_json(view: WorkersView) -> list[dict[str, object]]:
    return [
        {
            "id": w.id,
            "host": w.host,
            "pid": w.pid,
            "heartbeat_age": round(w.heartbeat_age, 3),
            "state": "stale" if w.stale else "live",
            "leader": w.leader,
            "in_flight": w.in_flight,
            "repositories": [list(key) for key in w.repositories],
            "throughput": w.throughput,
            "listen": list(w.listen),
        }
        for w in view.workers
    ]


def _repository_status(
    config: Config, args: argparse.Namespace, seen: dict[str, tuple[dict[str, str], float]], now: float
) -> int:
    """`status --repository`: tag -> digest on each site as last seen. Exit 1 when they differ."""
    from geo_tui.console.glyphs import short_digest

    sites = [s.name for s in config.sites]
    tags = sorted(set().union(*(tags for tags, _ in seen.values())))
    differing = [t for t in tags if len({seen.get(s, ({}, 0.0))[0].get(t) for s in sites}) > 1]
    if args.json:
        document = {
            "repository": args.repository,
            "sites": {s: {"tags": seen[s][0], "seen_at": seen[s][1]} if s in seen else None for s in sites},
            "differing": differing,
        }
        print(json.dumps(document, indent=2))
        return EXIT_FAILED if differing else EXIT_OK
    print(f"{args.repository}: tags as the engine last saw them")
    for s in sites:
        print(
            f"  {s}: "
            + (f"{len(seen[s][0])} tags, seen {ago(seen[s][1], now)}" if s in seen else "never seen")
        )
    if not tags:
        return EXIT_OK
    width = max(len("TAG"), *(len(t) for t in tags))
    print(f"\n  {'TAG':<{width}}  " + "  ".join(f"{s:<18}" for s in sites))
    for tag in sorted(tags, key=lambda t: t not in differing):
        cells = [short_digest(seen[s][0][tag]) if s in seen and tag in seen[s][0] else "-" for s in sites]
        mark = "x" if tag in differing else " "
        print(f"{mark} {tag:<{width}}  " + "  ".join(f"{c:<18}" for c in cells))
    return EXIT_FAILED if differing else EXIT_OK


async def cmd_status(config: Config, args: argparse.Namespace, sites: list[str] | None) -> int:
    from geo_tui.engine import Tracking  # the status reads the database only: no network
    from geo_tui.engine.tracking import tracking_database, tracking_exists

    database = config.engine.database
    if not tracking_exists(config.engine):  # a mistyped path must not read as "nothing to do", nor create one
        raise UsageError(
            f"tracking database {database} does not exist: check [engine] database in {config.path}; "
            "`geo-tui sync --once` or `geo-tui serve` creates it"
        )
    tracking = Tracking(tracking_database(config.engine))
    try:
        if args.repository is not None:
            return _repository_status(config, args, tracking.tags_seen(args.repository), tracking.now())
        names = [s.name for s in config.secondaries]
        counts = tracking.counts(names)
        failed = tracking.rows(sites=names, states=[SyncState.FAILED])
        depths = tracking.verification_depths(names)
        wanted = set(args.repositories)
        # one read of each named row (a handful: they are named on the command line)
        named = [r for n in names for name in sorted(wanted) if (r := tracking.row(n, name)) is not None]
        now = tracking.now()
        # stale after a lease without a heartbeat (three missed): its leases have run out too
        workers = workers_view(tracking.workers(), tracking.leased(), now, config.engine.lease_seconds)
        pause = tracking.pause_state()  # every worker's: the pause is kept in the database
    finally:
        tracking.close()
    # Stored reasons are redacted when written; a database from an older geo-tui may predate that.
    redact = redactor_for(config).redact
    reasons = {r.key: redact(r.last_sync_failure or "") or None for r in failed}
    if args.json:
        print(
            json.dumps(
                {
                    "sites": {
                        n: {
                            "total": c.total,
                            "synced": c.synced,
                            "failed": c.failed,
                            "pending": c.pending,
                            "started": c.started,
                            "percent_synced": c.percent_synced,
                            "verified": c.verified,
                            "verification_failed": c.verification_failed,
                            "verification_depths": depths[n],
                            "bytes": c.bytes,
                        }
                        for n, c in counts.items()
                    },
                    "repositories": [
                        {
                            "site": r.site,
                            "repository": r.repository,
                            "state": str(r.state),
                            "verification_state": str(r.verification_state),
                            "verification_depth": r.verification_depth,
                            "verified_at": r.verified_at,
                            "deep_verified_at": r.deep_verified_at,
                            "verification_failure": redact(r.verification_failure or "") or None,
                        }
                        for r in named
                    ],
                    "failed": [
                        {
                            "site": r.site,
                            "repository": r.repository,
                            "reason": reasons[r.key],
                            "retry_count": r.retry_count,
                            "retry_at": r.retry_at,
                        }
                        for r in failed
                    ],
                    "workers": _workers_json(workers),
                    "paused": pause.paused,
                },
                indent=2,
            )
        )
        return EXIT_OK
    if pause.paused:
        by = f" by worker {pause.by}" if pause.by else ""
        since = f", {ago(pause.at, now)}" if pause.at is not None else ""
        print(f"replication PAUSED on every worker{by}{since}: nothing new starts until it is resumed\n")
    header = (
        f"{'SITE':<20} {'SYNCED':>7} {'FAILED':>7} {'PENDING':>8} {'TOTAL':>7} {'SYNCED %':>9} "
        f"{'VERIFIED':>9} {'VERIFY FAILED':>14}"
    )
    print(header)
    for n, c in counts.items():
        print(
            f"{n:<20} {count(c.synced):>7} {count(c.failed):>7} {count(c.pending + c.started):>8} "
            f"{count(c.total):>7} {c.percent_synced:>8.2f}% {count(c.verified):>9} "
            f"{count(c.verification_failed):>14}"
        )
    _print_workers(workers)
    print("\nverification depth (last check of each repository):")
    for n, d in depths.items():
        oldest = d["oldest_deep"]
        deep = "every repository" if isinstance(oldest, float) else "not every repository yet"
        since = f", the oldest {ago(oldest, now)}" if isinstance(oldest, float) else ""
        print(
            f"  {n}: {d['content']} content, {d['deep']} deep, {d['checksum']} checksum, {d['never']} never; "
            f"deep-verified: {deep}{since}"
        )
    for r in named:
        depth = r.verification_depth or "never verified"
        deep = f", last deep {ago(r.deep_verified_at, now)}" if r.deep_verified_at is not None else ""
        print(
            f"  {r.site}  {r.repository}: {r.state}, verification {r.verification_state} "
            f"({depth}, {ago(r.verified_at, now)}{deep})"
            + (f": {redact(r.verification_failure)}" if r.verification_failure else "")
        )
    missing = sorted(wanted - {r.repository for r in named})
    if missing:
        print(f"  not tracked: {', '.join(missing)}")
    if failed:
        print("\nfailed repositories:")
        for r in failed:
            print(f"  {r.site}  {r.repository}  (attempt {r.retry_count}): {reasons[r.key]}")
    return EXIT_OK
