"""Reading a TOML configuration document with errors that name the file, the line or the dotted key.

`parse_toml` reads a file (size-capped, UTF-8) and reports syntax errors by line; `Table` checks one table
(unknown keys with a suggestion, typed getters). Every problem is a `ConfigError`, and no message ever
quotes a value that might be a secret.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from geo_tui.figures import size

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_SECRET_BYTES",
    "ConfigError",
    "Table",
    "Unreadable",
    "parse_toml",
    "read_capped",
    "toml_type",
]

_TOML_LOCATION: Final = re.compile(r" \(at (?:line (\d+), column (\d+)|end of document)\)$")
MAX_CONFIG_BYTES: Final = 4 * 1024 * 1024
MAX_SECRET_BYTES: Final = 64 * 1024  # private keys, passwords, notification secrets


class ConfigError(Exception):
    """A configuration file that cannot be used. ``str(e)`` is one line: ``<path>: <key>: <message>``,
    or ``<path>:<line>: <message>`` for TOML syntax errors."""

    def __init__(self, path: Path, key: str | None, message: str, line: int | None = None) -> None:
        self.path = path
        self.key = key
        self.message = " ".join(message.splitlines())
        self.line = line
        if line is not None:
            text = f"{path}:{line}: {self.message}"
        elif key is not None:
            text = f"{path}: {key}: {self.message}"
        else:
            text = f"{path}: {self.message}"
        super().__init__(" ".join(text.splitlines()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.key, self.message, self.line))


class Unreadable(Exception):
    """A file that could not be read; the message says why, without the file's content."""


def read_capped(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise Unreadable("no such file") from None
    except IsADirectoryError:
        raise Unreadable("is a directory, not a file") from None
    except PermissionError:
        raise Unreadable("permission denied") from None
    except OSError as exc:
        raise Unreadable(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    except ValueError:  # a NUL byte in the path
        raise Unreadable("is not a valid path") from None
    if len(data) > limit:
        raise Unreadable(f"is larger than {size(limit)}")
    return data


def parse_toml(path: Path) -> dict[str, Any]:
    try:
        data = read_capped(path, MAX_CONFIG_BYTES)
    except Unreadable as exc:
        raise ConfigError(path, None, str(exc)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, "not UTF-8 text", line=data[: exc.start].count(b"\n") + 1) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message, line = str(exc), max(1, text.count("\n") + (not text.endswith("\n")))  # the last line
        found = _TOML_LOCATION.search(message)
        if found is not None:
            message = message[: found.start()]
            if found.group(1):
                line = int(found.group(1))
                message += f" (column {found.group(2)})"
        raise ConfigError(path, None, f"TOML syntax error: {message}", line=line) from None
    except RecursionError:
        raise ConfigError(path, None, "TOML syntax error: arrays or tables nested too deeply") from None
    except ValueError:  # e.g. an integer literal past Python's 4300-digit limit
        raise ConfigError(path, None, "TOML syntax error: a value is too large") from None


def toml_type(value: object) -> str:
    kinds: tuple[tuple[type, str], ...] = (
        (bool, "boolean"),
        (int, "integer"),
        (float, "float"),
        (str, "string"),
        (list, "array"),
        (dict, "table"),
        (dt.datetime, "datetime"),
        (dt.date, "date"),
        (dt.time, "time"),
    )
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def _show_number(value: float) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 24 else "a huge number"


class Table:
    """One TOML table under check: getters that return typed values or raise ConfigError naming the key."""

    def __init__(self, file: Path, key: str, value: object, allowed: Sequence[str]) -> None:
        self.file, self.key = file, key
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"must be a table, got {toml_type(value)}")
        self.data: dict[str, Any] = value
        unknown = [name for name in value if name not in allowed]
        if len(unknown) == 1:
            raise self.error(unknown[0], f"unknown key {unknown[0]!r}{_suggest(unknown[0], allowed)}")
        if unknown:
            listed = ", ".join(f"{name!r}{_suggest(name, allowed)}" for name in unknown)
            raise ConfigError(file, key or None, f"unknown keys {listed}")

    def dotted(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.file, self.dotted(name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def table(self, name: str, allowed: Sequence[str]) -> Table | None:
        if name not in self.data:
            return None
        return Table(self.file, self.dotted(name), self.data[name], allowed)

    def string(self, name: str, default: str | None = None) -> str | None:
        value = self.data.get(name, default)
        if value is not None and not isinstance(value, str):
            raise self.error(name, f"must be a string, got {toml_type(value)}")
        return value

    def required_string(self, name: str) -> str:
        value = self.string(name)
        if value is None:
            raise self.error(name, "missing required key")
        if not value:
            raise self.error(name, "must not be empty")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be an integer, got {toml_type(value)}")
        if not low <= value <= high:
            raise self.error(name, f"must be between {low} and {high}, got {_show_number(value)}")
        return value

    def number(self, name: str, default: float, low: float, high: float | None = None) -> float:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"must be a number, got {toml_type(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(name, f"must be a finite number, got {value}")
        if high is not None and not low <= value <= high:
            raise self.error(name, f"must be between {low:g} and {high:g}, got {_show_number(value)}")
        if value < low:
            raise self.error(name, f"must be at least {low:g}, got {_show_number(value)}")
        try:
            return float(value)
        except OverflowError:
            raise self.error(name, "is too large") from None

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, got {toml_type(value)}")
        return value

    def path(self, name: str, base: Path) -> Path | None:
        raw = self.string(name)
        if raw is None:
            return None
        if not raw:
            raise self.error(name, "must not be empty")
        if "\0" in raw:
            raise self.error(name, "must not contain a NUL character")
        try:
            path = Path(raw).expanduser()
        except RuntimeError:  # ~someone who does not exist
            raise self.error(name, f"cannot expand '~' in {raw!r}") from None
        return path if path.is_absolute() else base / path

    def read(self, name: str, path: Path, limit: int = MAX_SECRET_BYTES) -> bytes:
        try:
            return read_capped(path, limit)
        except Unreadable as exc:
            raise self.error(name, f"{path}: {exc}") from None

    def string_list(self, name: str) -> tuple[str, ...]:
        value = self.data.get(name, [])
        if not isinstance(value, list):
            raise self.error(name, f"must be an array of strings, got {toml_type(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{name}[{index}]", f"must be a string, got {toml_type(item)}")
            if not item:
                raise self.error(f"{name}[{index}]", "must not be empty")
        return tuple(value)


def _suggest(name: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
