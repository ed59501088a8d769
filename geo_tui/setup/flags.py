"""The flags of `geo-tui init`: argparse only, so that building the command line stays cheap for every
other command."""

from __future__ import annotations

import argparse
from typing import Final

__all__ = ["DEFAULT_ISSUER", "DEFAULT_LISTEN", "DEFAULT_SERVICE", "add_init_arguments"]

DEFAULT_ISSUER: Final = "gitlab-issuer"  # GitLab's issuer for an external registry
DEFAULT_SERVICE: Final = "container_registry"
DEFAULT_LISTEN: Final = "127.0.0.1:5050"


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
