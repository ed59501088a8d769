"""What a crash leaves behind: one line on stderr, and the full traceback in a file only its user reads.

A bug must not end with status 0, nor with a screenful of traceback (Textual's shows every local
variable, secrets included). `report_crash` writes the traceback, without locals and with anything
credential-shaped removed, to ``crash-<UTC time>-<pid>.log`` (mode 0600) in the user state directory
(``$XDG_STATE_HOME/geo-tui``, by default ``~/.local/state/geo-tui``), and returns the line to print.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import traceback
from pathlib import Path

import platformdirs

from geo_tui import __version__
from geo_tui.config import Config, redactor_for
from geo_tui.registry import Redactor

__all__ = ["crash_dir", "remember_secrets", "report_crash"]

# One Redactor per config this process loaded: a crash log never holds their secrets, whatever the error
# says, in any encoding (geo_tui.config.redactor_for).
_REDACTORS: list[Redactor] = []
SUMMARY_LENGTH = 300  # the error on the one line; the log has all of it


def crash_dir() -> Path:
    """Where crash logs go: the user state directory's ``geo-tui``."""
    return platformdirs.user_state_path("geo-tui")


def remember_secrets(config: Config) -> None:
    """Note the secrets `config` holds, so that a crash log and its one line leave them out."""
    _REDACTORS.append(redactor_for(config))


def _scrub(text: str) -> str:
    for redactor in _REDACTORS:
        text = redactor.redact(text)
    return Redactor().redact(text)  # and the run-time tokens no config names


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
    summary = " ".join(_scrub(f"{type(error).__name__}: {error}").split())  # one line
    if len(summary) > SUMMARY_LENGTH:
        summary = summary[: SUMMARY_LENGTH - 3] + "..."
    header = (
        f"geo-tui {__version__}: {what} crashed at {datetime.datetime.now(datetime.UTC).isoformat()}\n"
        f"command: geo-tui {' '.join(sys.argv[1:])}\n"
        f"python {platform.python_version()} on {platform.platform()}\n\n"
    )
    body = "".join(traceback.format_exception(error))
    try:
        path = _write_private(crash_dir(), _scrub(header + body))
    except OSError as exc:
        return f"geo-tui: {what} crashed: {summary} (no crash log: {crash_dir()}: {exc.strerror})"
    return f"geo-tui: {what} crashed: {summary} (full traceback in {path})"
