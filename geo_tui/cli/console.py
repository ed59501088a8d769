"""The console's commands (the default, ``tui`` and ``demo``): find or start an engine, then run the app."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from geo_tui.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    TOKEN_ENV,
    ConsoleCrashed,
    UsageError,
    load_checked_config,
)
from geo_tui.config import Config, Secret, resolve_config_path
from geo_tui.engine.lock import DatabaseInUse

if TYPE_CHECKING:
    from geo_tui.console.app import GeoTuiApp
    from geo_tui.link.link import EngineLink


def _console_link(config: Config | None, attach: str | None) -> tuple[EngineLink, bool]:
    """Attach to a running engine (``--attach``, whoever holds the tracking database, or a live worker on
    this host sharing its PostgreSQL database), or else start the console's own in a child process.
    Returns the link and whether it may only read (it has a read token alone)."""
    from geo_tui.engine.attach import local_worker_api
    from geo_tui.engine.lock import read_holder
    from geo_tui.link.client import is_unix_target
    from geo_tui.link.remote import RemoteLink
    from geo_tui.link.spawned import SpawnedEngine

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
            target = local_worker_api(config.engine)  # PostgreSQL: a live `serve` worker on this host
            if target is None:
                return SpawnedEngine(config), False
        elif holder.api is None:
            raise DatabaseInUse(config.engine.database_name, holder)
        else:
            target = holder.api
    elif is_unix_target(target):
        path = Path(target).expanduser().absolute()
        if not path.is_socket():
            raise UsageError(f"--attach {target}: not an http(s):// URL or a unix socket")
        target = str(path)
    return RemoteLink(target, token=token or read_token), token is None and read_token is not None


def run_console(config_arg: str | None, *, read_only: bool, attach: str | None) -> int:
    path = resolve_config_path(config_arg)
    # Attaching by URL works without a config file (the token then comes from $GEO_TUI_API_TOKEN).
    config = load_checked_config(path) if attach is None or path.exists() else None
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
    from geo_tui.link.spawned import EngineStartError, SpawnedEngine

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


def run_demo(seed: int, speed: float, *, read_only: bool) -> int:
    from geo_tui.crash import remember_secrets
    from geo_tui.demo import DemoError, demo_lab
    from geo_tui.link.spawned import SpawnedEngine

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
