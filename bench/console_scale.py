"""Console scale benchmark: the repositories table over a real tracking database of 100,000 rows.

Run it from the repository root::

    python bench/console_scale.py            # 100,000 rows over 2 sites, a table against the targets
    python bench/console_scale.py --json     # the figures as JSON on stdout (progress stays on stderr)

Options: --rows N (total rows, 100,000), --sites N (2), --repeats N (5), --no-peer, --no-freeze (leave the
loaded rows to the cycle collector: the console without its "freeze" tuning), --workdir DIR, --keep.

What it does:
1. Builds a tracking database in a temp dir with the engine's public API: `Tracking.ensure_rows` for
   rows/sites repositories on each site, then a mix of states through `mark_started`, `mark_synced` (70 %,
   with synced times spread over three days), `mark_failed` (10 %) and rows left started (5 %) or pending.
2. In a headless Textual app at 160x48 holding a `RepositoryTable`, times (each from the call to the end of
   the next frame, which `Pilot.pause` renders; the table's `render_line` records that it drew):
   first paint (`Tracking.rows()` out of SQLite + `set_rows` + first frame), filter (substring, regex,
   invert, state, clear), scroll (pagedown, end, home), sort (every column, and reverse), and the
   process RSS (ru_maxrss, and VmRSS from /proc/self/status) before and after the rows are loaded.
   After the first paint it freezes the heap (`freeze_loaded_heap`) as the console does, unless --no-freeze.
3. Peer: the same rows in Textual's own `DataTable` (`add_rows` + first frame, one sort, pagedown), the
   widget the console must not use at this size; the table prints the ratio peer / ours.
Targets: first paint < 1 s; filter, scroll and sort < 100 ms (the worst of the repeats).
Exit status: 0 (missed targets are reported, never fatal); 2 setup problem; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from rich.text import Text  # noqa: E402
from textual.app import App, ComposeResult  # noqa: E402
from textual.pilot import Pilot  # noqa: E402
from textual.strip import Strip  # noqa: E402
from textual.widgets import DataTable  # noqa: E402

from geo_tui.console.tuning import freeze_loaded_heap  # noqa: E402
from geo_tui.console.widgets.repository_table import RepositoryTable  # noqa: E402
from geo_tui.engine import RepositoryRow, SyncState, Tracking  # noqa: E402

NOW = 1_700_000_000.0
TARGETS = {"first_paint": 1.0, "filter": 0.1, "scroll": 0.1, "sort": 0.1}
ERRORS = (
    "manifest unknown: tag {n} is not on the primary any more",
    "blob upload unknown: the secondary dropped the upload session after 30 s",
    "TLS handshake timeout talking to https://registry-{site}.example:5000",
    "denied: requested access to the resource is denied (token scope repository:{repo}:push)",
)
_started = time.monotonic()
_quiet = False


def log(message: str) -> None:
    if not _quiet:
        print(f"[{time.monotonic() - _started:6.1f}s] {message}", file=sys.stderr, flush=True)


def rss_mib() -> dict[str, float]:
    """Peak (ru_maxrss, KiB on Linux) and current (VmRSS) resident memory of this process, in MiB."""
    current = 0.0
    try:
        for status_line in Path("/proc/self/status").read_text().splitlines():
            if status_line.startswith("VmRSS:"):
                current = int(status_line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"max_rss_mib": round(peak, 1), "current_rss_mib": round(current, 1)}


def build_database(path: Path, rows: int, sites: int, seed: int = 1) -> float:
    """The tracking database, filled through the engine's API. Returns the seconds it took."""
    started = time.perf_counter()
    clock = [NOW]
    tracking = Tracking(path, clock=lambda: clock[0])
    names = [f"site-{chr(ord('a') + s)}" for s in range(sites)]
    per_site = rows // sites
    repositories = [f"group-{i % 211:03d}/team-{i % 7}/project-{i:06d}" for i in range(per_site)]
    chance = random.Random(seed)
    try:
        for site in names:
            tracking.ensure_rows(site, repositories)
            for number, repository in enumerate(repositories):
                roll = number % 20
                if roll >= 6:  # 70 % synced, at some time over the last three days
                    generation = tracking.mark_started(site, repository)
                    clock[0] = NOW - chance.uniform(0, 3 * 86400)
                    size = chance.randint(10_000, 3_000_000_000)
                    tracking.mark_synced(
                        site, repository, generation, tag_count=chance.randint(1, 80), size=size
                    )
                    clock[0] = NOW
                elif roll >= 4:  # 10 % failed
                    tracking.mark_started(site, repository)
                    reason = ERRORS[number % len(ERRORS)].format(n=number, site=site, repo=repository)
                    tracking.mark_failed(site, repository, reason, retry_at=NOW + 60)
                elif roll == 3:  # 5 % running
                    tracking.mark_started(site, repository)
            log(f"  {site}: {per_site:,} rows")
    finally:
        tracking.close()
    return time.perf_counter() - started


class TimedTable(RepositoryTable):
    """The table, noting when it last drew a line (so a frame is known to have been painted)."""

    painted_at = 0.0

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        self.painted_at = time.perf_counter()
        return strip


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield TimedTable(now=lambda: NOW)

    def on_mount(self) -> None:
        self.query_one(TimedTable).focus()


class FullCollections:
    """Python's full (generation 2) garbage collections: with 100k rows alive each walks them all."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self._began = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                self._began = time.perf_counter()
            else:
                self.spans.append((self._began, time.perf_counter()))

    def within(self, start: float, end: float) -> float:
        return sum(b - a for a, b in self.spans if a >= start and b <= end)

    def close(self) -> None:
        gc.callbacks.remove(self._note)


COLLECTIONS = FullCollections()


async def frame_after(
    pilot: Pilot[None], table: TimedTable | TimedDataTable, change: Callable[[], Awaitable[None] | None]
) -> tuple[float, float]:
    """Seconds from making `change` to the end of the frame that shows it, and of them in full GC."""
    started = time.perf_counter()
    result = change()
    if result is not None:
        await result
    await pilot.pause()
    if table.painted_at < started:
        raise RuntimeError("no frame was painted after the change")
    return table.painted_at - started, COLLECTIONS.within(started, table.painted_at)


def clear_filters(table: RepositoryTable) -> None:
    table.set_state_filter(None)
    table.set_text_filter("")


async def measure_table(database: Path, repeats: int, freeze: bool = True) -> dict[str, Any]:
    results: dict[str, Any] = {}
    app = TableApp()
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one(TimedTable)
        await pilot.pause()
        results["rss_before"] = rss_mib()
        tracking = Tracking(database)
        try:
            started = time.perf_counter()
            rows = tracking.rows()
            loaded = time.perf_counter() - started
            table.set_rows(rows)
            given = time.perf_counter() - started
            await pilot.pause()
            results["first_paint"] = (
                table.painted_at - started,
                COLLECTIONS.within(started, table.painted_at),
            )
            results["first_paint_parts"] = {"db_rows": loaded, "set_rows": given - loaded}
        finally:
            tracking.close()
        del rows
        if freeze:  # as the console does after its first full load
            results["frozen_objects"] = freeze_loaded_heap()
        results["rows"] = table.total_count
        log(f"  first paint {results['first_paint'][0] * 1000:.0f} ms for {table.total_count:,} rows")

        filters: list[tuple[str, Callable[[], None]]] = [
            ("substring", lambda: table.set_text_filter("project-0001")),
            ("error text", lambda: table.set_text_filter("handshake")),
            ("regex", lambda: table.set_text_filter(r"team-[35]/project-\d+7$", regex=True)),
            ("invert", lambda: table.set_text_filter("group-1", invert=True)),
            ("state failed", lambda: table.set_state_filter(frozenset({SyncState.FAILED}))),
            ("clear", lambda: clear_filters(table)),
        ]
        samples: dict[str, list[tuple[float, float]]] = {}
        for _ in range(repeats):
            for name, change in filters:
                samples.setdefault(f"filter {name}", []).append(await frame_after(pilot, table, change))
        for _ in range(repeats):
            for key in ("pagedown", "pagedown", "end", "pageup", "home"):
                samples.setdefault(f"scroll {key}", []).append(
                    await frame_after(pilot, table, lambda key=key: pilot.press(key))  # type: ignore[misc]
                )
        for _ in range(repeats):
            for column in ("site", "repository", "last_synced", "size", "error", "state"):
                samples.setdefault(f"sort {column}", []).append(
                    await frame_after(pilot, table, lambda column=column: table.sort_by(column))  # type: ignore[misc]
                )
            samples.setdefault("sort reverse", []).append(
                await frame_after(
                    pilot, table, lambda: table.sort_by("state", reverse=not table.sort_reverse)
                )
            )
        results["samples"] = samples
        results["rss_after"] = rss_mib()
    return results


class TimedDataTable(DataTable[Any]):
    painted_at = 0.0

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        self.painted_at = time.perf_counter()
        return strip


class PeerApp(App[None]):
    def compose(self) -> ComposeResult:
        yield TimedDataTable(cursor_type="row")


async def measure_peer(database: Path) -> dict[str, float]:
    """Textual's DataTable holding the same rows, timed the same way: what RepositoryTable avoids."""
    app = PeerApp()
    results: dict[str, float] = {}
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one(TimedDataTable)
        table.add_columns("state", "site", "repository", "tags", "synced", "size", "last error")
        tracking = Tracking(database)
        try:
            started = time.perf_counter()
            rows: list[RepositoryRow] = tracking.rows()
            table.add_rows(
                (
                    Text(str(r.state)),
                    r.site,
                    r.repository,
                    r.tag_count or 0,
                    r.last_synced_at or 0.0,
                    r.bytes or 0,
                    r.last_sync_failure or "",
                )
                for r in rows
            )
            await pilot.pause()
            results["first_paint"] = table.painted_at - started
        finally:
            tracking.close()

        def sort_by_repository() -> None:
            table.sort(table.ordered_columns[2].key)

        results["sort"], _ = await frame_after(pilot, table, sort_by_repository)
        results["scroll"], _ = await frame_after(pilot, table, lambda: pilot.press("pagedown"))
    return results


def summarise(results: dict[str, Any], peer: dict[str, float] | None) -> dict[str, Any]:
    samples: dict[str, list[tuple[float, float]]] = results["samples"]
    groups: dict[str, list[tuple[float, float]]] = {"first_paint": [results["first_paint"]]}
    for name, values in samples.items():
        groups.setdefault(name.split()[0], []).extend(values)
    figures: dict[str, Any] = {}
    for group, values in groups.items():
        times = [t for t, _ in values]
        clean = [t for t, in_gc in values if not in_gc] or times
        figure = figures[group] = {
            "median_ms": round(statistics.median(times) * 1000, 1),
            "max_ms": round(max(times) * 1000, 1),
            "max_without_full_gc_ms": round(max(clean) * 1000, 1),
            "full_gcs": sum(1 for _, in_gc in values if in_gc),
            "full_gc_ms": round(max((in_gc for _, in_gc in values), default=0.0) * 1000, 1),
            "target_ms": TARGETS[group] * 1000,
            "ok": max(times) < TARGETS[group],
            "ok_without_full_gc": max(clean) < TARGETS[group],
        }
        if peer and group in peer:
            figure["peer_datatable_ms"] = round(peer[group] * 1000, 1)
            figure["peer_ratio"] = round(peer[group] / statistics.median(times), 1)
    return {
        "rows": results["rows"],
        "frozen_objects": results.get("frozen_objects"),
        "figures": figures,
        "first_paint_parts_ms": {k: round(v * 1000, 1) for k, v in results["first_paint_parts"].items()},
        "detail_ms": {
            name: {
                "median": round(statistics.median(t for t, _ in v) * 1000, 1),
                "max": round(max(t for t, _ in v) * 1000, 1),
            }
            for name, v in samples.items()
        },
        "memory": {"before_rows": results["rss_before"], "after": results["rss_after"]},
    }


def render(summary: dict[str, Any], build_seconds: float) -> str:
    lines = [
        f"geo-tui console scale: RepositoryTable, {summary['rows']:,} rows, 160x48 headless",
        f"(tracking database built in {build_seconds:.1f} s; not timed against a target)",
        "",
        f"{'measure':<12}{'median':>9}{'worst':>9}{'w/o GC':>9}{'target':>9}  {'verdict':<16}"
        f"{'DataTable':>10}{'ratio':>7}",
    ]
    for group, figure in summary["figures"].items():
        peer = figure.get("peer_datatable_ms")
        peer_text = f"{peer:>8.0f}ms" if peer is not None else f"{'-':>10}"
        ratio = f"{figure['peer_ratio']:>6.0f}x" if peer is not None else f"{'-':>7}"
        if figure["ok"]:
            verdict = "ok"
        elif figure["ok_without_full_gc"]:
            verdict = f"MISSED in {figure['full_gcs']} GC"
        else:
            verdict = "MISSED"
        lines.append(
            f"{group:<12}{figure['median_ms']:>7.1f}ms{figure['max_ms']:>7.1f}ms"
            f"{figure['max_without_full_gc_ms']:>7.1f}ms{'<' + format(figure['target_ms'], '.0f'):>7}ms  "
            f"{verdict:<16}{peer_text}{ratio}"
        )
    parts = summary["first_paint_parts_ms"]
    lines.append(
        f"  first paint = rows out of SQLite {parts['db_rows']:.0f} ms + set_rows {parts['set_rows']:.0f} ms"
        " + the frame"
    )
    gc_pauses = [f["full_gc_ms"] for f in summary["figures"].values() if f["full_gcs"]]
    if gc_pauses:
        lines.append(
            f"  w/o GC: worst of the samples without a full (gen 2) garbage collection; those took up to "
            f"{max(gc_pauses):.0f} ms (the interpreter walking every live row object)"
        )
    lines.append("")
    lines.append("detail (median / worst, ms):")
    for name, figure in summary["detail_ms"].items():
        lines.append(f"  {name:<22}{figure['median']:>8.1f}{figure['max']:>8.1f}")
    before, after = summary["memory"]["before_rows"], summary["memory"]["after"]
    lines.append("")
    lines.append(
        f"memory: RSS {before['current_rss_mib']:.0f} MiB before the rows, {after['current_rss_mib']:.0f} MiB"
        f" after; peak (ru_maxrss) {after['max_rss_mib']:.0f} MiB (includes building the database)"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the console's repositories table over a 100,000-row tracking database."
    )
    parser.add_argument(
        "--rows", type=int, default=100_000, help="rows in all, split over the sites (100000)"
    )
    parser.add_argument("--sites", type=int, default=2, help="secondary sites (2)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each filter, scroll and sort (5)")
    parser.add_argument("--no-peer", action="store_true", help="skip the DataTable comparison")
    parser.add_argument(
        "--no-freeze", action="store_true", help="leave the loaded rows to the cycle collector (as before)"
    )
    parser.add_argument("--workdir", type=Path, help="parent of the temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (the database)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.rows < args.sites or args.sites < 1 or args.repeats < 1:
        parser.error("need --sites >= 1, --rows >= --sites and --repeats >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    global _quiet
    args = parse_args(argv)
    _quiet = args.quiet
    workdir = Path(tempfile.mkdtemp(prefix="geo-tui-console-scale-", dir=args.workdir))
    try:
        database = workdir / "tracking.db"
        log(f"building {args.rows:,} rows over {args.sites} sites in {database}")
        build_seconds = build_database(database, args.rows, args.sites)
        log(f"built in {build_seconds:.1f} s; timing RepositoryTable")
        results = asyncio.run(measure_table(database, args.repeats, freeze=not args.no_freeze))
        peer = None
        if not args.no_peer:
            log("timing the peer: Textual's DataTable with the same rows")
            peer = asyncio.run(measure_peer(database))
        COLLECTIONS.close()
        summary = summarise(results, peer)
        summary["build_seconds"] = round(build_seconds, 1)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except (OSError, RuntimeError) as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(summary, indent=2) if args.json else render(summary, build_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
