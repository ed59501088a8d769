"""``migrate --to postgresql://...``: move the SQLite tracking database into an empty PostgreSQL one."""

from __future__ import annotations

import argparse

from geo_tui.cli.common import UsageError
from geo_tui.config import Config


async def cmd_migrate(config: Config, args: argparse.Namespace, sites: list[str] | None) -> int:
    from geo_tui.engine.tracking.migrate import MigrateRefused, migrate_command

    try:
        return migrate_command(config, args.to, args.password_file)
    except MigrateRefused as exc:
        raise UsageError(str(exc)) from None
