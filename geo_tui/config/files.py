"""The configuration file on disk: which file to use, writing one safely, and warning when a file that
holds a secret is readable by others."""

from __future__ import annotations

import contextlib
import os
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import platformdirs
import tomli_w

from geo_tui._config_document import MAX_CONFIG_BYTES, Unreadable, read_capped

__all__ = ["APP_NAME", "ENV_VAR", "resolve_config_path", "warn_if_world_readable", "write_config"]

ENV_VAR: Final = "GEO_TUI_CONFIG"
APP_NAME: Final = "geo-tui"


def resolve_config_path(cli_value: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """The config file to use: ``--config``, then ``$GEO_TUI_CONFIG``, then the user config dir's
    ``geo-tui/config.toml``. Empty values count as unset; ``~`` expands."""
    for value in (cli_value, environ.get(ENV_VAR)):
        if value:
            return Path(value).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def write_config(path: Path, data: Mapping[str, Any]) -> None:
    """Write `data` as TOML to `path`, creating its folders. The file is owner-only (0600) from the moment
    it exists, and replaces any old file atomically."""
    text = tomli_w.dumps(data)  # a value TOML cannot hold fails here, before the disk is touched
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if os.name == "posix":  # make the rename itself durable
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def warn_if_world_readable(path: Path) -> str | None:
    """A one-line warning if the file at `path` holds an inline secret (``password``, ``secret``) and its
    group or others may read it; None otherwise, including when the file cannot be read."""
    if os.name != "posix":
        return None
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o777
        if not mode & 0o044:
            return None
        document = tomllib.loads(read_capped(path, MAX_CONFIG_BYTES).decode("utf-8-sig"))
    except (OSError, ValueError, RecursionError, Unreadable):
        return None
    keys = _inline_secret_keys(document)
    if not keys:
        return None
    who = {0o040: "its group", 0o004: "others"}.get(mode & 0o044, "its group and others")
    return (
        f"warning: {path} holds {', '.join(keys)} and is readable by {who} (mode {mode:04o}); "
        f"run: chmod 600 {path}"
    )


def _inline_secret_keys(document: Mapping[str, Any]) -> list[str]:
    keys: list[str] = []
    notifications = document.get("notifications")
    if isinstance(notifications, dict) and isinstance(notifications.get("secret"), str):
        keys.append("notifications.secret")
    api = document.get("api")
    for name in ("token", "read_token"):
        if isinstance(api, dict) and isinstance(api.get(name), str):
            keys.append(f"api.{name}")
    primary = document.get("primary")
    if isinstance(primary, dict) and isinstance(primary.get("password"), str):
        keys.append("primary.password")
    secondaries = document.get("secondaries")
    for index, site in enumerate(secondaries if isinstance(secondaries, list) else []):
        if isinstance(site, dict) and isinstance(site.get("password"), str):
            keys.append(f"secondaries[{index}].password")
    return keys
