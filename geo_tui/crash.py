"""What a crash leaves behind: one line on stderr, and the full traceback in a file only its user reads.

A bug must not end with status 0, nor with a screenful of traceback (Textual's shows every local
variable, secrets included). `report_crash` writes the traceback, without locals and with anything
credential-shaped removed, to ``crash-<UTC time>-<pid>.log`` (mode 0600) in the user state directory
(``$XDG_STATE_HOME/geo-tui``, by default ``~/.local/state/geo-tui``), and returns the line to print.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

import platformdirs

from geo_tui import __version__
from geo_tui.config import Secret
from geo_tui.registry._errors import redact  # the patterns the registry client scrubs errors with

__all__ = ["crash_dir", "remember_secrets", "report_crash"]

# The secrets of every config this process loaded: a crash log never holds them, whatever the error says.
_SECRETS: set[str] = set()


def crash_dir() -> Path:
    """Where crash logs go: the user state directory's ``geo-tui``."""
    return platformdirs.user_state_path("geo-tui")


def remember_secrets(config: object) -> None:
    """Note the secrets `config` holds, so that a crash log and its one line leave them out."""
    _SECRETS.update(_secrets_of(config))


def _secrets_of(value: object) -> list[str]:
    """Every `Secret` held by a config (dataclasses, lists and tuples walked), revealed: to scrub them."""
    if isinstance(value, Secret):
        return [value.reveal()]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [s for f in dataclasses.fields(value) for s in _secrets_of(getattr(value, f.name))]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _secrets_of(item)]
    return []


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "[redacted]")
    lines = []
    for line in text.splitlines():
        indent = line[: len(line) - len(line.lstrip())]
        lines.append(indent + redact(line) if line.strip() else "")
    return "\n".join(lines) + "\n"


def _write_private(directory: Path, text: str) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = directory / f"crash-{stamp}-{os.getpid()}.log"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as handle:
        handle.write(text)
    return path


def report_crash(error: BaseException, *, what: str) -> str:
    """Write `error`'s traceback to a new crash log; return the one line that names the error and the log."""
    secrets = sorted(_SECRETS)
    summary = " ".join(_scrub(f"{type(error).__name__}: {error}", secrets).split())  # one line
    header = (
        f"geo-tui {__version__}: {what} crashed at {datetime.datetime.now(datetime.UTC).isoformat()}\n"
        f"command: geo-tui {' '.join(sys.argv[1:])}\n"
        f"python {platform.python_version()} on {platform.platform()}\n\n"
    )
    body = "".join(traceback.format_exception(error))
    try:
        path = _write_private(crash_dir(), _scrub(header + body, secrets))
    except OSError as exc:
        return f"geo-tui: {what} crashed: {summary} (no crash log: {crash_dir()}: {exc.strerror})"
    return f"geo-tui: {what} crashed: {summary} (full traceback in {path})"
