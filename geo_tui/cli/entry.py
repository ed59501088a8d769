"""``geo-tui``'s entry point: parse, pick the command, and turn each kind of failure into an exit status."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from geo_tui.cli.arguments import build_parser
from geo_tui.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    ConsoleCrashed,
    UsageError,
    check_sites,
    load_checked_config,
    setup_logging,
)
from geo_tui.cli.console import run_console, run_demo
from geo_tui.cli.migrate import cmd_migrate
from geo_tui.cli.resync import cmd_resync
from geo_tui.cli.service import cmd_doctor, cmd_serve
from geo_tui.cli.status import cmd_status
from geo_tui.cli.sync import cmd_sync
from geo_tui.cli.verify import cmd_verify
from geo_tui.config import ConfigError, resolve_config_path
from geo_tui.engine import DatabaseUnusable
from geo_tui.engine.lock import DatabaseInUse
from geo_tui.registry import RegistryError


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


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
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
        setup_logging(args.verbose)
    if args.command == "demo":
        return run_demo(args.seed, args.speed, read_only=args.read_only_console)
    if args.command == "init":
        from geo_tui.setup.init import run_init

        return run_init(args)
    try:
        if console:
            read_only = args.read_only_console or getattr(args, "read_only", False)
            return run_console(args.config, read_only=read_only, attach=args.attach)
        config = load_checked_config(resolve_config_path(args.config))
        sites = check_sites(config, getattr(args, "site", None))
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


_COMMANDS = {
    "serve": cmd_serve,
    "sync": cmd_sync,
    "status": cmd_status,
    "verify": cmd_verify,
    "resync": cmd_resync,
    "doctor": cmd_doctor,
    "migrate": cmd_migrate,
}
