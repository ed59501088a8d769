"""The flags of `geo-tui init`: argparse only, so that building the command line stays cheap for every
other command. `InitFlag` is a flag as the place a value came from, for the config's rules."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_ISSUER",
    "DEFAULT_LISTEN",
    "DEFAULT_SERVICE",
    "InitFlag",
    "SetupError",
    "add_init_arguments",
]

DEFAULT_ISSUER: Final = "gitlab-issuer"  # GitLab's issuer for an external registry
DEFAULT_SERVICE: Final = "container_registry"
DEFAULT_LISTEN: Final = "127.0.0.1:5050"


class SetupError(Exception):
    """Something `init` cannot do; ``str(e)`` is one line naming the flag or file involved."""


@dataclass(frozen=True, slots=True)
class InitFlag:
    """A flag (or a prompt's answer) of `init` as a `geo_tui.config.rules.Place`: a rule's refusal becomes
    a SetupError naming the flag and showing `shown`, e.g. ``--secondary 'eu': not a valid site name``."""

    flag: str
    shown: str | None = None

    @classmethod
    def quoting(cls, flag: str, value: str) -> InitFlag:
        """The flag, quoting `value` unless it may hold credentials (``https://user:pw@host``)."""
        return cls(flag, None if "@" in value else repr(value))

    def error(self, message: str) -> Exception:
        where = self.flag if self.shown is None else f"{self.flag} {self.shown}"
        return SetupError(f"{where}: {message}")


def add_init_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``geo-tui init``."""
    add = parser.add_argument
    add(
        "--config",
        dest="init_config",
        metavar="PATH",
        help="where to write the config (default: as for every command)",
    )
    add("--non-interactive", action="store_true", help="take every answer from flags; never prompt")
    add("--primary", metavar="URL", help="the primary registry's URL")
    add("--primary-name", metavar="NAME", help="the primary's site name (default: primary)")
    add("--secondary", action="append", metavar="NAME=URL", default=[], help="a secondary (repeatable)")
    add(
        "--auth",
        action="append",
        metavar="METHOD|NAME=METHOD",
        default=[],
        help="jwt (default), token, basic or none; for every site, or NAME=METHOD for one",
    )
    add("--username", action="append", metavar="NAME=USER", default=[], help="token/basic sites")
    add("--password-file", action="append", metavar="NAME=PATH", default=[], help="token/basic sites")
    add("--key", metavar="PATH", help="use this existing RSA/EC private key (e.g. gitlab-registry.key)")
    add("--issuer", metavar="ISSUER", help=f"the token issuer (default {DEFAULT_ISSUER})")
    add("--service", metavar="SERVICE", help=f"the token audience (default {DEFAULT_SERVICE})")
    add(
        "--token-realm",
        metavar="URL",
        help="where registry clients get tokens (GitLab: https://GITLAB/jwt/auth)",
    )
    add(
        "--listen",
        metavar="HOST:PORT",
        help=f"where `geo-tui serve` receives notifications (default {DEFAULT_LISTEN})",
    )
    add("--notification-url", metavar="URL", help="the URL the primary posts to (default: from --listen)")
    add("--database", metavar="PATH", help="the tracking database (default: the user data dir)")
    add(
        "--gitlab",
        action="append",
        metavar="NAME",
        default=[],
        help="this site is run by GitLab: print gitlab.rb",
    )
    add("--snippets-dir", metavar="DIR", help="write the registry snippets to 0600 files here, not to stdout")
    add("--force", action="store_true", help="replace an existing config, key, certificate or snippet")
