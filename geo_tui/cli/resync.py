"""``resync``: queue repositories for a new sync, in a running engine through its API or here."""

from __future__ import annotations

import argparse
import os
import sys

from geo_tui.cli.common import EXIT_FAILED, EXIT_OK, TOKEN_ENV, UsageError, require_primary
from geo_tui.cli.sync import print_summary
from geo_tui.config import Config, Secret
from geo_tui.engine import Engine
from geo_tui.progress import ProgressReporter


async def cmd_resync(config: Config, args: argparse.Namespace, sites: list[str] | None) -> int:
    if not (args.all or args.failed or args.repositories):
        raise UsageError("resync: name repositories, or use --all or --failed")
    from geo_tui.engine.attach import local_worker_api
    from geo_tui.engine.lock import read_holder

    holder = read_holder(config.engine.database)
    target = holder.api if holder is not None else local_worker_api(config.engine)
    if target is not None and not args.now:
        return await _resync_through_engine(target, config, args, sites)
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
        await require_primary(engine)
        with ProgressReporter(engine, sites or engine.secondary_names, sys.stderr):
            summary = await engine.run_due(sites=sites, repositories=args.repositories or None)
    print_summary(summary, as_json=args.json)
    return EXIT_OK if summary.ok else EXIT_FAILED


async def _resync_through_engine(
    target: str, config: Config, args: argparse.Namespace, sites: list[str] | None
) -> int:
    """Queue the resync in the engine that holds the database (a `serve`), through its API."""
    from geo_tui.engine.wire import Resync
    from geo_tui.link.client import EngineApiError, EngineClient

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


async def _require_known(engine: Engine, repositories: list[str]) -> None:
    """Refuse names that are neither tracked nor on the primary (a typo must not become a row)."""
    tracked = {r for site in engine.secondary_names for r in engine.tracking.repository_names(site)}
    if all(r in tracked for r in repositories):
        return
    known = tracked | set(await engine.discover())
    for name in repositories:
        if name not in known:
            raise UsageError(f"resync: the primary has no repository named {name!r}")
