"""What every command shares: exit statuses, usage errors, the config, logging, the primary's health."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from geo_tui.config import Config, load_config, warn_if_world_readable
from geo_tui.engine import Engine
from geo_tui.registry import RegistryError

TOKEN_ENV = "GEO_TUI_API_TOKEN"

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ConsoleCrashed(Exception):
    """The console stopped on an error of its own (Textual caught it); the error is the cause."""


class UsageError(Exception):
    """A command line that names something that does not exist (a site, a repository)."""


def load_checked_config(path: Path) -> Config:
    """The checked config at `path`, with a one-line warning on stderr if others may read its secrets."""
    from geo_tui.crash import remember_secrets

    config = load_config(path)
    remember_secrets(config)  # a crash log never holds them
    warning = warn_if_world_readable(path)
    if warning is not None:
        print(f"geo-tui: {warning}", file=sys.stderr)
    return config


def check_sites(config: Config, names: list[str] | None) -> list[str] | None:
    if not names:
        return None
    known = [s.name for s in config.secondaries]
    for name in names:
        if name not in known:
            raise UsageError(
                f"--site {name}: no secondary of that name in {config.path} (have: {', '.join(known)})"
            )
    return names


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("geo_tui")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


async def require_primary(engine: Engine) -> None:
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
