"""The ``geo-tui`` command line: the console by default; serve, sync, status, verify and resync.

Exit status: 0 all good, 1 something failed or differs (a crash too: one line, and the traceback in a
crash log, see geo_tui.crash), 2 bad configuration or usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geo_tui import __version__
from geo_tui.config import (
    Config,
    ConfigError,
    Secret,
    load_config,
    redactor_for,
    resolve_config_path,
    warn_if_world_readable,
)
from geo_tui.engine import (
    DatabaseUnusable,
    Engine,
    SyncState,
    SyncSummary,
    VerificationDepth,
    VerificationResult,
)
from geo_tui.engine.lock import DatabaseInUse
from geo_tui.figures import ago, count, size
from geo_tui.progress import ProgressReporter
from geo_tui.registry import RegistryError
from geo_tui.setup.flags import add_init_arguments

if TYPE_CHECKING:
    from geo_tui.console.app import GeoTuiApp
    from geo_tui.engine.link import EngineLink
    from geo_tui.engine.plan import RepositoryPlan, SyncPlan

__all__ = ["main"]

TOKEN_ENV = "GEO_TUI_API_TOKEN"

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command line that names something that does not exist (a site, a repository)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geo-tui",
        description="Keep secondary container registries in step with a primary registry.",
    )
    parser.add_argument("--version", action="version", version=f"geo-tui {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $GEO_TUI_CONFIG, then the user config dir's geo-tui/config.toml)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    parser.add_argument(
        "--read-only",
        action="store_true",
        dest="read_only_console",
        help="console: hide what changes anything",
    )
    parser.add_argument(
        "--attach",
        metavar="URL|SOCKET",
        help="console: attach to the engine API of a running `geo-tui serve` (default: the one holding "
        "the config's tracking database, if any; else the console runs the engine itself)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    tui = sub.add_parser("tui", help="the console (the default when no command is given)")
    tui.add_argument("--read-only", action="store_true", help="hide every action that changes anything")

    sync = sub.add_parser("sync", help="backfill the secondaries: copy every repository that differs")
    sync.add_argument(
        "--once",
        action="store_true",
        required=True,
        help="run one pass and exit (continuous replication is `geo-tui serve`)",
    )
    sync.add_argument("--site", action="append", metavar="NAME", help="only this secondary (repeatable)")
    sync.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    sync.add_argument(
        "--dry-run",
        action="store_true",
        help="print what the run would write (tags, manifests, blobs, requests) and write nothing",
    )

    serve = sub.add_parser(
        "serve", help="replicate continuously: notifications, backfill, retries and periodic reconcile"
    )
    # The console's own engine process (geo_tui.engine.spawned): a ready line, and stop when stdin closes.
    serve.add_argument("--console-child", action="store_true", help=argparse.SUPPRESS)

    status = sub.add_parser("status", help="counts and percent synced per site, from the tracking database")
    status.add_argument(
        "repositories",
        nargs="*",
        metavar="REPO",
        help="also each of these: states, verification depth and age",
    )
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--repository",
        metavar="REPO",
        help="one repository's tags on every site, as the engine last saw them (asks no registry)",
    )

    verify = sub.add_parser(
        "verify",
        help="compare repository checksums on the primary and the secondaries; --deep, --content check blobs",
    )
    verify.add_argument("repositories", nargs="*", metavar="REPO")
    verify.add_argument("--site", action="append", metavar="NAME")
    depth = verify.add_mutually_exclusive_group()
    depth.add_argument(
        "--deep",
        action="store_const",
        const="deep",
        dest="depth",
        help="also check that every blob the secondary's tags reach is there, with its size (HEAD each)",
    )
    depth.add_argument(
        "--content",
        action="store_const",
        const="content",
        dest="depth",
        help="as --deep, and download each blob from the secondary and re-hash it",
    )
    verify.add_argument(
        "--sample",
        type=_fraction,
        default=1.0,
        metavar="FRACTION",
        help="with --content: hash this share of the blobs (the same ones every run), e.g. 0.1",
    )
    verify.add_argument("--json", action="store_true")

    resync = sub.add_parser("resync", help="queue repositories for a new sync")
    which = resync.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every repository")
    which.add_argument("--failed", action="store_true", help="the failed ones")
    which.add_argument("repositories", nargs="*", metavar="REPO", default=[])
    resync.add_argument("--site", action="append", metavar="NAME")
    resync.add_argument(
        "--blobs",
        action="store_true",
        help="also look at every blob of the tags that already match, and put back those missing",
    )
    resync.add_argument("--now", action="store_true", help="run them now instead of leaving them to `serve`")
    resync.add_argument("--json", action="store_true")

    demo = sub.add_parser("demo", help="live replication between three local lab registries, in the console")
    demo.add_argument("--seed", type=int, default=1, help="the workload's random seed (default 1)")
    demo.add_argument(
        "--speed", type=float, default=1.0, help="how fast the workload and the outage run (default 1.0)"
    )

    init = sub.add_parser("init", help="write a config, the shared key pair and each registry's snippet")
    add_init_arguments(init)
    doctor = sub.add_parser("doctor", help="check the config against the live registries and the receiver")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    return parser


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number above 0 and at most 1, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except Exception as exc:  # a bug: one line naming it and the crash log, and a failing status
        from geo_tui.crash import report_crash

        if isinstance(exc, ConsoleCrashed) and exc.__cause__ is not None:
            print(report_crash(exc.__cause__, what="the console"), file=sys.stderr)
        else:
            print(report_crash(exc, what="the command"), file=sys.stderr)
        return EXIT_FAILED


class ConsoleCrashed(Exception):
    """The console stopped on an error of its own (Textual caught it); the error is the cause."""


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    console = args.command in (None, "tui", "demo")
    if console and not (sys.stdin.isatty() and sys.stdout.isatty()):
        parser.print_usage(sys.stderr)
        print(
            "geo-tui: the console needs a terminal; without one, use a command such as "
            "`sync --once`, `serve` or `status`",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not console:
        _setup_logging(args.verbose)
    if args.command == "demo":
        return _run_demo(args.seed, args.speed, read_only=args.read_only_console)
    if args.command == "init":
        from geo_tui.setup.init import run_init

        return run_init(args)
    try:
        if console:
            read_only = args.read_only_console or getattr(args, "read_only", False)
            return _run_console(args.config, read_only=read_only, attach=args.attach)
        config = _load_config(resolve_config_path(args.config))
        sites = _check_sites(config, getattr(args, "site", None))
        handler = _COMMANDS[args.command]
        return asyncio.run(handler(config, args, sites))
    except ConfigError as exc:
        print(f"geo-tui: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"geo-tui: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (RegistryError, DatabaseInUse, DatabaseUnusable) as exc:  # damaged, or newer than this code
        print(f"geo-tui: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("geo-tui: interrupted", file=sys.stderr)
        return 130


def _load_config(path: Path) -> Config:
    """The checked config at `path`, with a one-line warning on stderr if others may read its secrets."""
    from geo_tui.crash import remember_secrets

    config = load_config(path)
    remember_secrets(config)  # a crash log never holds them
    warning = warn_if_world_readable(path)
    if warning is not None:
        print(f"geo-tui: {warning}", file=sys.stderr)
    return config


def _console_link(config: Config | None, attach: str | None) -> tuple[EngineLink, bool]:
    """Attach to a running engine (``--attach``, or whoever holds the tracking database), or else start
    the console's own in a child process. Returns the link and whether it may only read (it has a read
    token alone)."""
    from geo_tui.engine.client import is_unix_target
    from geo_tui.engine.lock import read_holder
    from geo_tui.engine.remote import RemoteLink
    from geo_tui.engine.spawned import SpawnedEngine

    api = config.api if config is not None else None
    token = api.token if api is not None else None
    read_token = api.read_token if api is not None else None
    if os.environ.get(TOKEN_ENV):
        token = Secret(os.environ[TOKEN_ENV])
    target = attach
    if target is None:
        assert config is not None
        holder = read_holder(config.engine.database)
        if holder is None:
            return SpawnedEngine(config), False
        if holder.api is None:
            raise DatabaseInUse(config.engine.database, holder)
        target = holder.api
    elif is_unix_target(target):
        path = Path(target).expanduser().absolute()
        if not path.is_socket():
            raise UsageError(f"--attach {target}: not an http(s):// URL or a unix socket")
        target = str(path)
    return RemoteLink(target, token=token or read_token), token is None and read_token is not None


def _run_console(config_arg: str | None, *, read_only: bool, attach: str | None) -> int:
    path = resolve_config_path(config_arg)
    # Attaching by URL works without a config file (the token then comes from $GEO_TUI_API_TOKEN).
    config = _load_config(path) if attach is None or path.exists() else None
    link, reads_only = _console_link(config, attach)
    return _run_app(config, link, read_only=read_only or reads_only)


def _run_app(
    config: Config | None,
    link: EngineLink,
    *,
    read_only: bool,
    watch: Callable[[GeoTuiApp], None] | None = None,
) -> int:
    """Run the console over `link`; `watch(app)` may start watching something that can end it."""
    from geo_tui.engine.spawned import EngineStartError, SpawnedEngine

    spawned = link if isinstance(link, SpawnedEngine) else None
    if spawned is not None:
        spawned.launch()  # it starts while Textual loads
    # Imported here: the headless commands never load Textual.
    from geo_tui.console.app import make_app
    from geo_tui.console.tuning import applied

    if spawned is not None:
        try:
            spawned.wait_ready()
        except EngineStartError as exc:
            print(f"geo-tui: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except BaseException:
            spawned.stop()
            raise

    # Engine log lines go to the console's event pane, not over the screen.
    logging.getLogger("geo_tui").handlers[:] = [logging.NullHandler()]
    logging.getLogger("geo_tui").propagate = False
    app = make_app(config, read_only=read_only, link=link)
    if watch is not None:
        watch(app)
    try:
        with applied():  # the console's speed work, once, here (GEO_TUI_CONSOLE_TUNING turns it off)
            app.run()
    finally:
        if spawned is not None:
            spawned.stop()  # done already on `q`; this covers a console that ended any other way
    if app.crash is not None:
        raise ConsoleCrashed(str(app.crash)) from app.crash
    if app.engine_failure:
        print(f"geo-tui: the engine stopped: {app.engine_failure}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if not app.return_code else EXIT_FAILED


def _run_demo(seed: int, speed: float, *, read_only: bool) -> int:
    from geo_tui.crash import remember_secrets
    from geo_tui.demo import DemoError, demo_lab
    from geo_tui.engine.spawned import SpawnedEngine

    def seeded(count: int) -> None:  # on a terminal only: one line, rewritten
        print(f"geo-tui demo: filling the primary lab registry: {count} pushes", end="\r", file=sys.stderr)

    print("geo-tui demo: starting three lab registries", file=sys.stderr)
    try:
        with demo_lab(seed=seed, speed=speed, on_seeded=seeded if sys.stderr.isatty() else None) as lab:
            if sys.stderr.isatty():
                print("\r\033[K", end="", file=sys.stderr)  # the rewritten line would outlive the console
            remember_secrets(lab.config)
            link = SpawnedEngine(lab.config, mode="demo: the console's engine on three lab registries")
            status = _run_app(lab.config, link, read_only=read_only, watch=lab.end_console_on_failure)
            if lab.failure is not None:
                print(f"geo-tui: {lab.failure}", file=sys.stderr)
                return EXIT_FAILED
            return status
    except DemoError as exc:
        print(f"geo-tui: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("geo_tui")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def _check_sites(config: Config, names: list[str] | None) -> list[str] | None:
    if not names:
        return None
    known = [s.name for s in config.secondaries]
    for name in names:
        if name not in known:
            raise UsageError(
                f"--site {name}: no secondary of that name in {config.path} (have: {', '.join(known)})"
            )
    return names


async def _cmd_sync(config: Config, args: argparse.Namespace, sites: list[str] | None) -> int:
    if args.dry_run:
        from geo_tui.engine.plan import plan_sync

        plan = await plan_sync(config, sites=sites)
        _print_plan(plan, as_json=args.json)
        return EXIT_OK if plan.ok else EXIT_FAILED
    async with Engine(config, command="geo-tui sync --once") as engine:
        await _require_primary(engine)
        with ProgressReporter(engine, sites or engine.secondary_names, sys.stderr):
            summary = await engine.sync_once(sites=sites)
    _print_summary(summary, as_json=args.json)
    return EXIT_OK if summary.ok else EXIT_FAILED


async def _require_primary(engine: Engine) -> None:
    health = (await engine.check_health()).get(engine.config.primary.name)
    if health is not None and not health.healthy:
        raise RegistryError(
            registry=engine.config.primary.name,
            operation="ping",
            repository=None,
            status=None,
            code=None,
            detail=f"the primary is unreachable: {health.error}",
        )


def _summary_dict(summary: SyncSummary) -> dict[str, Any]:
    return {
        "ok": summary.ok,
        "seconds": round(summary.seconds, 3),
        "sites": {
            name: {
                "synced": s.synced,
                "failed": s.failed,
                "tags_pushed": s.stats.tags_pushed,
                "tags_deleted": s.stats.tags_deleted,
                "referrers_deleted": s.stats.referrers_deleted,
                "manifests_pushed": s.stats.manifests_pushed,
                "blobs_copied": s.stats.blobs_copied,
                "blobs_mounted": s.stats.blobs_mounted,
                "blobs_present": s.stats.blobs_present,
                "blobs_foreign": s.stats.blobs_foreign,
                "bytes": s.stats.bytes_copied,
                "failures": dict(sorted(s.failures.items())),
                "warnings": s.warnings,
            }
            for name, s in summary.sites.items()
        },
    }


def _print_summary(summary: SyncSummary, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_summary_dict(summary), indent=2))
        return
    for name, s in summary.sites.items():
        st = s.stats
        print(
            f"{name}: {s.synced} repositories synced, {s.failed} failed; "
            f"blobs {st.blobs_copied} copied, {st.blobs_mounted} mounted, {st.blobs_present} already present"
            + (f", {st.blobs_foreign} foreign skipped" if st.blobs_foreign else "")
            + f"; {st.tags_pushed} tags pushed, {st.tags_deleted} deleted; "
            f"{size(st.bytes_copied)} in {summary.seconds:.1f} s"
        )
        for repository, reason in sorted(s.failures.items()):
            print(f"  failed {repository}: {reason}")
        for warning in s.warnings:
            print(f"  warning: {warning}")


def _repository_plan_dict(plan: RepositoryPlan) -> dict[str, Any]:
    writes = plan.writes
    return {
        "tags": {
            "create": plan.tags_create,
            "move": {t: {"from": a, "to": b} for t, (a, b) in plan.tags_move.items()},
            "delete": plan.tags_delete,
        },
        "manifests": [w.digest for w in writes if w.kind == "manifest" and w.reference == w.digest],
        # untagged referrers gone from the primary (tags deleted are under "tags")
        "manifests_deleted": [w.digest for w in writes if w.kind == "delete" and w.reference == w.digest],
        "blobs": {
            "copy": [{"digest": w.digest, "size": w.size} for w in writes if w.kind == "upload"],
            "mount": [{"digest": w.digest, "from": w.source} for w in writes if w.kind == "mount"],
        },
        "bytes": plan.stats.bytes_copied,
        "requests": dict(sorted(plan.requests.items())),
        "errors": plan.errors,
        "warnings": plan.warnings,
    }


def _plan_dict(plan: SyncPlan) -> dict[str, Any]:
    sites: dict[str, Any] = {}
    for name, site in plan.sites.items():
        changing = {r: p for r, p in sorted(site.repositories.items()) if p.writes or p.errors}
        st = site.stats
        sites[name] = {
            "repositories_to_change": len(changing),
            "repositories_unchanged": len(site.repositories) - len(changing),
            "tags_create": sum(len(p.tags_create) for p in changing.values()),
            "tags_move": sum(len(p.tags_move) for p in changing.values()),
            "tags_delete": sum(len(p.tags_delete) for p in changing.values()),
            "manifests_pushed": st.manifests_pushed,
            "referrers_deleted": st.referrers_deleted,
            "blobs_copied": st.blobs_copied,
            "blobs_mounted": st.blobs_mounted,
            "bytes": st.bytes_copied,
            "requests": {m: site.requests.get(m, 0) for m in ("PUT", "POST", "PATCH", "DELETE")},
            "reads": site.reads,
            "repositories": {r: _repository_plan_dict(p) for r, p in changing.items()},
        }
    return {"dry_run": True, "ok": plan.ok, "primary_reads": plan.primary_reads, "sites": sites}


def _print_plan(plan: SyncPlan, *, as_json: bool) -> None:
    document = _plan_dict(plan)
    if as_json:
        print(json.dumps(document, indent=2))
        return
    print("dry run: nothing was written")
    for name, site in document["sites"].items():
        requests = ", ".join(f"{n} {m}" for m, n in site["requests"].items() if n) or "none"
        print(
            f"{name}: {site['repositories_to_change']} repositories to change, "
            f"{site['repositories_unchanged']} unchanged; tags {site['tags_create']} to create, "
            f"{site['tags_move']} to move, {site['tags_delete']} to delete; "
            f"blobs {site['blobs_copied']} to copy ({size(site['bytes'])}), "
            f"{site['blobs_mounted']} to mount; write requests: {requests} "
            f"(after {site['reads']} reads of the secondary)"
        )
        for repository, r in site["repositories"].items():
            parts = [f"create {t} {d}" for t, d in r["tags"]["create"].items()]
            parts += [f"move {t} {m['from']} -> {m['to']}" for t, m in r["tags"]["move"].items()]
            parts += [f"delete {t}" for t in r["tags"]["delete"]]
            blobs = r["blobs"]
            if blobs["copy"] or blobs["mount"]:
                parts.append(
                    f"{len(blobs['copy'])} blobs to copy ({size(r['bytes'])}), {len(blobs['mount'])} to mount"
                )
            if r["manifests"]:
                parts.append(f"{len(r['manifests'])} manifests by digest")
            if r["manifests_deleted"]:
                parts.append(f"delete {len(r['manifests_deleted'])} referrers gone from the primary")
            print(f"  {repository}: " + "; ".join(parts or ["no writes"]))
            for error in r["errors"]:
                print(f"    cannot plan: {error}")
            for warning in r["warnings"]:
                print(f"    warning: {warning}")


def _repository_status(
    config: Config, args: argparse.Namespace, seen: dict[str, tuple[dict[str, str], float]]
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
    now = time.time()
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


async def _cmd_status(config: Config, args: argparse.Namespace, sites: list[str] | None) -> int:
    from geo_tui.engine import Tracking  # the status reads the database only: no network

    database = config.engine.database
    if not database.exists():  # a mistyped path must not read as "nothing to do", nor create a database
        raise UsageError(
            f"tracking database {database} does not exist: check [engine] database in {config.path}; "
            "`geo-tui sync --once` or `geo-tui serve` creates it"
        )
    tracking = Tracking(database)
    try:
        if args.repository is not None:
            return _repository_status(config, args, tracking.tags_seen(args.repository))
        names = [s.name for s in config.secondaries]
        counts = tracking.counts(names)
        failed = tracking.rows(sites=names, states=[SyncState.FAILED])
        depths = tracking.verification_depths(names)
        wanted = set(args.repositories)
        # one read of each named row (a handful: they are named on the command line)
        named = [r for n in names for name in sorted(wanted) if (r := tracking.row(n, name)) is not None]
        now = tracking.now()
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
                },
                indent=2,
            )
        )
        return EXIT_OK
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


async def _cmd_verify(config: Config, args: argparse.Namespace, sites: list[str] | None) -> int:
    depth = VerificationDepth(args.depth or "checksum")
    if args.sample != 1.0 and depth is not VerificationDepth.CONTENT:
        raise UsageError("verify: --sample goes with --content")
    async with Engine(config, command="geo-tui verify") as engine:
        await _require_primary(engine)
        results = await engine.verify(
            sites=sites, repositories=args.repositories or None, depth=depth, sample=args.sample
        )
        corrupt = _corrupt_blobs(engine, results)
    if args.json:
        print(json.dumps([_verification_json(r) for r in results], indent=2))
    else:
        print(DEPTH_LINES[depth] + (f" ({args.sample:g} of the blobs hashed)" if args.sample < 1 else ""))
        for r in results:
            mark = "ok  " if r.ok else "FAIL"
            print(f"{mark} {r.site}  {r.repository}: {r.detail}")
        for (site, digest), users in sorted(corrupt.items()):
            print(_corrupt_advice(site, digest, users))
        bad = sum(not r.ok for r in results)
        print(f"{len(results) - bad} verified, {bad} failed")
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


DEPTH_LINES = {
    VerificationDepth.CHECKSUM: "depth: checksum (shallow: tags and manifest digests only, no blob checked; "
    "--deep checks every blob)",
    VerificationDepth.DEEP: "depth: deep (every manifest the tags reach read, each blob HEADed for its size)",
    VerificationDepth.CONTENT: "depth: content (every blob downloaded from the secondary and re-hashed)",
}


def _verification_json(r: VerificationResult) -> dict[str, Any]:
    report = r.blobs
    return {
        "site": r.site,
        "repository": r.repository,
        "ok": r.ok,
        "depth": str(r.depth),
        "primary_checksum": r.primary_checksum,
        "secondary_checksum": r.secondary_checksum,
        "detail": r.detail,
        "missing": [m.split(" ", 1)[1] for m in r.missing],
        "corrupt": list(r.corrupt),
        "blobs": None
        if report is None
        else {
            "manifests": report.manifests,
            "checked": report.blobs,
            "bytes": report.bytes,
            "hashed": report.hashed,
            "hashed_bytes": report.hashed_bytes,
            "foreign": report.foreign,
            "errors": report.errors,
        },
    }


def _corrupt_blobs(engine: Engine, results: list[VerificationResult]) -> dict[tuple[str, str], list[str]]:
    """(site, digest) of every corrupt blob -> the repositories there known to use it."""
    found: dict[tuple[str, str], set[str]] = {}
    for r in results:
        for digest in r.corrupt:
            users = found.setdefault((r.site, digest), set())
            users.add(r.repository)
            users.update(engine.tracking.blob_sources(r.site, digest, exclude="", limit=20))
    return {key: sorted(users) for key, users in found.items()}


def _corrupt_advice(site: str, digest: str, users: list[str]) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    return (
        f"CORRUPT on {site}: blob {digest} does not hash to its digest; used by {', '.join(users)}.\n"
        f"  {site} believes it holds this blob, so it will not accept it again. Delete it from {site}'s "
        f"storage (Distribution's filesystem driver: docker/registry/v2/blobs/{algorithm}/{hex_digest[:2]}/"
        f"{hex_digest}/data) or let its garbage collection remove it, then put it back with:\n"
        f"  geo-tui resync --blobs --now --site {site} {' '.join(users)}"
    )


async def _cmd_resync(config: Config, args: argparse.Namespace, sites: list[str] | None) -> int:
    if not (args.all or args.failed or args.repositories):
        raise UsageError("resync: name repositories, or use --all or --failed")
    from geo_tui.engine.lock import read_holder

    holder = read_holder(config.engine.database)
    if holder is not None and holder.api is not None and not args.now:
        return await _resync_through_engine(holder.api, config, args, sites)
    async with Engine(config, command="geo-tui resync") as engine:
        if args.repositories:
            await _require_known(engine, args.repositories)
        count = await engine.resync(
            sites=sites,
            repositories=args.repositories or None,
            failed_only=args.failed,
            recheck_blobs=args.blobs,
        )
        if not args.now:
            print(f"{count} repositories queued for resync")
            return EXIT_OK
        await _require_primary(engine)
        with ProgressReporter(engine, sites or engine.secondary_names, sys.stderr):
            summary = await engine.run_due(sites=sites, repositories=args.repositories or None)
    _print_summary(summary, as_json=args.json)
    return EXIT_OK if summary.ok else EXIT_FAILED


async def _resync_through_engine(
    target: str, config: Config, args: argparse.Namespace, sites: list[str] | None
) -> int:
    """Queue the resync in the engine that holds the database (a `serve`), through its API."""
    from geo_tui.engine.client import EngineApiError, EngineClient
    from geo_tui.engine.wire import Resync

    command = Resync(failed=args.failed, sites=tuple(sites) if sites else None, blobs=args.blobs)
    if args.repositories:
        names = sites or [s.name for s in config.secondaries]
        keys = tuple((s, r) for s in names for r in args.repositories if config.site(s).wants(r))
        command = Resync(keys=keys, blobs=args.blobs)
    token = (
        Secret(os.environ[TOKEN_ENV])
        if os.environ.get(TOKEN_ENV)
        else (config.api.token if config.api else None)
    )
    try:
        async with EngineClient(target, token=token, timeout=None) as client:
            answer = await client.resync(command)
    except EngineApiError as exc:
        print(f"geo-tui: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{answer.count or 0} repositories queued for resync by the running engine at {target}")
    return EXIT_OK


async def _cmd_serve(config: Config, args: argparse.Namespace, sites: list[str] | None) -> int:
    from geo_tui.engine.serve import ListenError, serve

    try:
        if args.console_child:
            from geo_tui.engine.spawned import serve_for_console

            # Its log lines reach the console through the API; stderr keeps only what went wrong.
            logging.getLogger("geo_tui").setLevel(logging.WARNING)
            return await serve_for_console(config, os.getppid())
        return await serve(config)
    except ListenError as exc:
        print(f"geo-tui: {config.path}: {exc}", file=sys.stderr)
        return EXIT_USAGE


async def _cmd_doctor(config: Config, args: argparse.Namespace, sites: list[str] | None) -> int:
    from geo_tui.setup.doctor import format_results, run_doctor

    results = await run_doctor(config)
    print(format_results(results, as_json=args.json))
    return EXIT_OK if all(r.status == "ok" for r in results) else EXIT_FAILED


async def _require_known(engine: Engine, repositories: list[str]) -> None:
    """Refuse names that are neither tracked nor on the primary (a typo must not become a row)."""
    tracked = {r for site in engine.secondary_names for r in engine.tracking.repository_names(site)}
    if all(r in tracked for r in repositories):
        return
    known = tracked | set(await engine.discover())
    for name in repositories:
        if name not in known:
            raise UsageError(f"resync: the primary has no repository named {name!r}")


_COMMANDS = {
    "serve": _cmd_serve,
    "sync": _cmd_sync,
    "status": _cmd_status,
    "verify": _cmd_verify,
    "resync": _cmd_resync,
    "doctor": _cmd_doctor,
}
