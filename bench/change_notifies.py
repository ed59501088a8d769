"""What migration 7's change notifies cost the writers (issue 16: consoles on any worker see the cluster).

Run it from the repository root (it starts a throwaway cluster the way the tests do, `tests.support`)::

    python bench/change_notifies.py              # 20,000 rows, twice with the triggers and twice without
    python bench/change_notifies.py --rows 100000 --rounds 1

Per round, a fresh database: track --rows new repositories (one statement each, as discovery's first run
does), resync all of them (one statement), resync 500 named ones, and renew 10 leases 100 times (a
worker's heartbeat). With the triggers each statement also sends its NOTIFY; without them (dropped after
the migration) it does not. A listener counts the notifies. Printed: the seconds of each step, per round.
Exit status: 0 done; 2 setup problem (no PostgreSQL binaries).
"""

from __future__ import annotations

import argparse
import sys
import time

import psycopg

from geo_tui.engine.tracking import Tracking
from geo_tui.engine.tracking.postgres import CHANGE_CHANNEL, PostgresDatabase


def one_round(database: PostgresDatabase, rows: int, triggers: bool) -> str:
    tracking = Tracking(database)
    listener: psycopg.Connection[object] = psycopg.connect(database.url, autocommit=True)
    try:
        if not triggers:
            for trigger in ("geo_tui_rows_inserted", "geo_tui_rows_updated"):
                tracking._db.execute(f"DROP TRIGGER {trigger} ON repositories")
        listener.execute(f"LISTEN {CHANGE_CHANNEL}")
        names = [f"group/repo-{i:06d}" for i in range(rows)]
        start = time.perf_counter()
        tracking.ensure_rows("eu", names)
        tracked = time.perf_counter() - start
        start = time.perf_counter()
        tracking.request_sync(sites=["eu"])
        resync_all = time.perf_counter() - start
        start = time.perf_counter()
        tracking.request_sync(sites=["eu"], repositories=names[:500])
        resync_named = time.perf_counter() - start
        claimed = [r.key for r in tracking.claim_due("w", time.time(), limit=10, lease_seconds=60)]
        start = time.perf_counter()
        for _ in range(100):
            tracking.renew_leases("w", time.time(), 60, claimed)
        renew = (time.perf_counter() - start) / 100
        notifies = sum(1 for _ in listener.notifies(timeout=1))
    finally:
        listener.close()
        tracking.close()
    return (
        f"triggers {'on ' if triggers else 'off'}: track {rows:,} new {tracked:.2f} s, resync all "
        f"{resync_all:.3f} s, resync 500 named {resync_named * 1000:.1f} ms, renew 10 leases "
        f"{renew * 1000:.2f} ms, notifies {notifies:,}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        from tests.support.postgres import PostgresCluster

        cluster = PostgresCluster()
    except Exception as exc:  # pytest's skip, or the binaries missing
        print(f"cannot start PostgreSQL: {exc}", file=sys.stderr)
        return 2
    try:
        for _ in range(args.rounds):
            for triggers in (True, False):
                print(one_round(PostgresDatabase(cluster.url(cluster.database())), args.rows, triggers))
    finally:
        cluster.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
