"""``serve`` and ``doctor``: replicate for good, or check the config against the live registries."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from geo_tui.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from geo_tui.config import Config


async def cmd_serve(config: Config, args: argparse.Namespace, sites: list[str] | None) -> int:
    from geo_tui.service.serve import ListenError, serve

    try:
        if args.console_child:
            from geo_tui.service.console_child import serve_for_console

            # Its log lines reach the console through the API; stderr keeps only what went wrong.
            logging.getLogger("geo_tui").setLevel(logging.WARNING)
            return await serve_for_console(config, os.getppid())
        return await serve(config)
    except ListenError as exc:
        print(f"geo-tui: {config.path}: {exc}", file=sys.stderr)
        return EXIT_USAGE


async def cmd_doctor(config: Config, args: argparse.Namespace, sites: list[str] | None) -> int:
    from geo_tui.setup.doctor import format_results, run_doctor

    results = await run_doctor(config)
    print(format_results(results, as_json=args.json))
    return EXIT_OK if all(r.status == "ok" for r in results) else EXIT_FAILED
