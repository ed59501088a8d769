"""The command line's arguments: one parser for the console and every command."""

from __future__ import annotations

import argparse
from pathlib import Path

from geo_tui import __version__
from geo_tui.setup.flags import add_init_arguments


def build_parser() -> argparse.ArgumentParser:
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
    # The console's own engine process (geo_tui.link.spawned): a ready line, and stop when stdin closes.
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
    migrate = sub.add_parser("migrate", help="move the SQLite tracking database into an empty PostgreSQL one")
    migrate.add_argument("--to", required=True, metavar="URL", help="postgresql://user@host:5432/name")
    migrate.add_argument(
        "--password-file", type=Path, help="the password of the URL's user (mode 0600); default: PGPASSFILE"
    )
    return parser


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number above 0 and at most 1, got {text!r}")
    return value
