"""The rules a configuration value must follow, each written once and applied wherever the value is given.

A value comes from a key of the config file (`load_config`) or from a flag or an answer of `geo-tui init`.
Each rule takes the value and a `Place`; a value it refuses becomes ``place.error(why)``, so the loader's
error names the file and dotted key (``secondaries[0].registry``) and init's names the flag
(``--secondary 'eu'``), and both give the same reason::

    ConfigKey(table, "registry")   ConfigError "<file>: primary.registry: must be an http:// or https:// URL"
    InitFlag("--primary", ...)     SetupError  "--primary 'ftp://x': must be an http:// or https:// URL"

The reasons never quote a value that might hold a secret (a URL may carry ``user:password@``); the place
decides what of the value it shows. `host_port` is the listen rule the other way round: the one way a
listen address is printed (an IPv6 address in brackets).

Two rules are about a whole site or the set of sites rather than one value: `credentials_problem` and
`site_name_owner`. They return what is wrong as data, and the loader and `init` each say it in their own
terms (config keys, or flags).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final, Protocol, TypeVar, cast, get_args
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from geo_tui._config_document import MAX_SECRET_BYTES, Table, Unreadable, read_capped

from .model import AuthMethod

__all__ = [
    "AUTH_METHODS",
    "JWT_CURVES",
    "ConfigKey",
    "CredentialsProblem",
    "Place",
    "SigningKey",
    "auth_method",
    "credentials_problem",
    "distinct_from_primary",
    "host_name",
    "host_port",
    "listen_address",
    "owner_only",
    "postgres_url",
    "registry_url",
    "signing_key",
    "site_name",
    "site_name_owner",
    "token_claim",
]

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

AUTH_METHODS: Final[tuple[str, ...]] = get_args(AuthMethod)
# JWT signs with ES256/ES384/ES512 only, i.e. the NIST curves P-256, P-384 and P-521.
JWT_CURVES: Final = ("secp256r1", "secp384r1", "secp521r1")

# Site names end up in log lines and tracking-DB rows, so keep them plain.
_SITE_NAME: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_PORT: Final = re.compile(r"[0-9]{1,5}")
_Owner = TypeVar("_Owner")


class Place(Protocol):
    """Where a value was given. `error` turns a rule's reason into the exception that names the place."""

    def error(self, message: str) -> Exception: ...


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """A key of the config file: errors are ConfigErrors naming the file and the dotted key, and show
    `shown` (a path, never a secret) before the reason."""

    table: Table
    name: str
    shown: str | None = None

    def error(self, message: str) -> Exception:
        return self.table.error(self.name, message if self.shown is None else f"{self.shown}: {message}")


def site_name(value: str, at: Place) -> str:
    """A site's name: 1-63 letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit."""
    if not _SITE_NAME.fullmatch(value):
        raise at.error(
            "not a valid site name: 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return value


def registry_url(value: str, at: Place) -> str:
    """An http(s) base URL without credentials, query or fragment: the scheme lower case, no trailing
    slash. Also the rule for the token realm and the notification URL `init` writes into snippets."""
    if any(c.isspace() or not c.isprintable() for c in value):
        raise at.error("must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0..65535
    except ValueError:
        raise at.error("is not a valid URL (check the host and port)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not value.lower().startswith(scheme + "://"):
        raise at.error("must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise at.error("the URL must not contain credentials (user:password@); give them separately")
    if not parts.hostname:
        raise at.error("has no host")
    if "?" in value:
        raise at.error("must not have a query string")
    if "#" in value:
        raise at.error("must not have a fragment")
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def distinct_from_primary(url: str, primary: str, at: Place) -> None:
    """A secondary's registry must not be the primary's (host case and default ports aside): replicating
    a registry into itself could delete what it copies. Both URLs have passed `registry_url`."""

    def where(checked: str) -> tuple[str, int, str]:
        parts = urlsplit(checked)
        default = 443 if parts.scheme == "https" else 80
        return (parts.hostname or "", parts.port or default, parts.path.rstrip("/"))

    if where(url) == where(primary):
        raise at.error(
            "is the primary's registry: replicating a registry into itself could delete what it copies"
        )


def auth_method(value: str, at: Place) -> AuthMethod:
    """How geo-tui authenticates to a site: jwt, token, basic or none."""
    if value not in AUTH_METHODS:
        raise at.error(f"must be one of {', '.join(AUTH_METHODS)}")
    return cast(AuthMethod, value)


def site_name_owner(name: str, owners: Mapping[str, _Owner]) -> _Owner | None:
    """Who already uses `name` among the sites read so far (`owners`: name -> who), or None: a site name is
    used once in a config, primary included (it keys tracking rows, metrics and log lines)."""
    return owners.get(name)


class CredentialsProblem(Enum):
    """What is wrong with a site's username and password for its auth method."""

    NOT_USED = "jwt and none send no username or password"
    BASIC_NEEDS_USERNAME = "basic needs a username"
    BASIC_NEEDS_PASSWORD = "basic needs a password"
    HALF_A_PAIR = "token takes a username and a password, or neither"


def credentials_problem(auth: AuthMethod, *, username: bool, password: bool) -> CredentialsProblem | None:
    """The one rule for a site's credentials, given whether a username and a password were given: jwt and
    none send none, basic needs both, token takes both or neither (anonymous token requests)."""
    if auth in ("jwt", "none"):
        return CredentialsProblem.NOT_USED if username or password else None
    if auth == "basic" and not username:
        return CredentialsProblem.BASIC_NEEDS_USERNAME
    if auth == "basic" and not password:
        return CredentialsProblem.BASIC_NEEDS_PASSWORD
    if username != password:
        return CredentialsProblem.HALF_A_PAIR
    return None


def token_claim(value: str, at: Place) -> str:
    """The issuer or the service (audience) written into every token geo-tui signs: printable, not blank
    (a registry compares them with its own config's strings)."""
    if not value.strip() or not value.isprintable():
        raise at.error("must be printable and not empty")
    return value


def host_name(value: str) -> bool:
    """Whether `value` is a host name or an IPv4 address as a listen address or realm host may give it."""
    return _HOSTNAME.fullmatch(value) is not None


def listen_address(value: str, at: Place) -> tuple[str, int]:
    """``host:port`` or ``[IPv6]:port``: the host (without brackets) and the port, 1-65535."""
    host, _, port = value.rpartition(":")
    if not host or not _PORT.fullmatch(port):
        raise at.error("must be host:port, e.g. 127.0.0.1:5050")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise at.error(f"{host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise at.error("put an IPv6 address in brackets, e.g. [::1]:5050")
    elif not host_name(host):
        raise at.error(f"{host!r} is not a host name or address")
    if not 1 <= int(port) <= 65535:
        raise at.error(f"port must be between 1 and 65535, got {int(port)}")
    return host, int(port)


def host_port(host: str, port: int) -> str:
    """A listen address as `listen_address` reads it back: ``127.0.0.1:5050``, ``[::1]:5050``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def postgres_url(value: str, at: Place) -> str:
    """A PostgreSQL tracking database as a libpq URL, ``postgresql://user@host:5432/name``, without a
    password: one in the URL would end up wherever the URL is shown (logs, status, errors)."""
    try:
        parts = urlsplit(value)
        password = parts.password
        port = parts.port
        query = parse_qs(parts.query)
    except ValueError:
        raise at.error("not a libpq URL, e.g. postgresql://geo@db.example:5432/geo") from None
    if password is not None or "password" in query:
        raise at.error(
            "must not hold a password (it would end up in logs): put it in [engine] database_password_file "
            "(mode 0600) or in libpq's PGPASSFILE"
        )
    if parts.scheme not in ("postgresql", "postgres"):
        raise at.error("must be a file path or a postgresql:// URL")
    if port == 0 or not parts.path.strip("/"):
        raise at.error("must name the database, e.g. postgresql://geo@db.example:5432/geo")
    return value


def owner_only(path: Path, at: Place) -> None:
    """A file holding a secret must be readable by its owner only (mode 0600 or narrower)."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        raise at.error(f"{path}: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise at.error(f"{path} is readable by others (mode {mode:04o}): run chmod 600 {path}")


def signing_key(path: Path, at: Place) -> tuple[SigningKey, bytes]:
    """The unencrypted PEM RSA or EC (P-256/384/521) private key in the file at `path`, and its PEM."""
    try:
        pem = read_capped(path, MAX_SECRET_BYTES)
    except Unreadable as exc:
        raise at.error(str(exc)) from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # cryptography's way of saying the key needs a password
        raise at.error(
            "the key is encrypted (password-protected), which is not supported; write an unencrypted "
            "copy with `openssl pkey -in KEY -out KEY.plain` and keep it 0600"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise at.error("not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        kind = type(key).__name__.lstrip("_").replace("PrivateKey", "") or "these"
        raise at.error(f"{kind} keys are not supported: only RSA and EC keys can sign registry tokens")
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name not in JWT_CURVES:
        raise at.error(f"EC curve {key.curve.name} cannot sign JWTs; use P-256, P-384 or P-521")
    return key, pem
