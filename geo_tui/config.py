"""The geo-tui configuration file: one TOML file naming the primary, its secondaries and how to reach them.

The file's shape is a public contract (other tools write it)::

    [engine]          database, repository_concurrency, blob_concurrency, replicate_deletions,
                      reconcile_interval, reconcile_requests_per_second,
                      sync_attempts                               (all optional)
    [auth]            private_key, issuer, service, token_ttl    (needed if a site uses auth = "jwt")
    [notifications]   listen, secret | secret_file               (used by `geo-tui serve`)
    [api]             listen, token | token_file, read_token | read_token_file   (the engine API)
    [verification]    deep_interval                              (optional)
    [primary]         name, registry, auth, username, password | password_file, ca_file, tls_verify,
                      token_realm_hosts
    [[secondaries]]   the keys of [primary], plus include and exclude

`load_config` checks everything before anything touches a registry. Every problem is a `ConfigError` whose
one-line message names the file and the dotted key (`secondaries[1].registry`), and never a secret's value.
Relative paths in the file are relative to the file's folder; `~` expands.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hmac
import ipaddress
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args
from urllib.parse import urlsplit

import platformdirs
import tomli_w
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ._config_document import (
    MAX_CONFIG_BYTES,
    ConfigError,
    Table,
    Unreadable,
    parse_toml,
    read_capped,
    toml_type,
)
from .registry import Redactor

__all__ = [
    "ApiConfig",
    "AuthConfig",
    "AuthMethod",
    "Config",
    "ConfigError",
    "EngineConfig",
    "NotificationsConfig",
    "Secret",
    "SiteConfig",
    "SiteRole",
    "VerificationConfig",
    "default_api_socket",
    "load_config",
    "redactor_for",
    "resolve_config_path",
    "warn_if_world_readable",
    "write_config",
]

AuthMethod = Literal["jwt", "token", "basic", "none"]
SiteRole = Literal["primary", "secondary"]

ENV_VAR: Final = "GEO_TUI_CONFIG"
APP_NAME: Final = "geo-tui"

_TOP_KEYS: Final = ("engine", "auth", "notifications", "api", "verification", "primary", "secondaries")
_ENGINE_KEYS: Final = (
    "database",
    "repository_concurrency",
    "blob_concurrency",
    "replicate_deletions",
    "reconcile_interval",
    "reconcile_requests_per_second",
    "sync_attempts",
)
_AUTH_KEYS: Final = ("private_key", "issuer", "service", "token_ttl")
_VERIFICATION_KEYS: Final = ("deep_interval",)
DEEP_INTERVAL_DEFAULT: Final = 7 * 86400  # seconds: GitLab Geo re-verifies every 7 days
DEEP_INTERVAL_MIN: Final = 60
_NOTIFICATIONS_KEYS: Final = ("listen", "secret", "secret_file")
_API_KEYS: Final = ("listen", "token", "token_file", "read_token", "read_token_file")
_PRIMARY_KEYS: Final = (
    "name",
    "registry",
    "auth",
    "username",
    "password",
    "password_file",
    "ca_file",
    "tls_verify",
    "token_realm_hosts",
)
_SECONDARY_KEYS: Final = (*_PRIMARY_KEYS, "include", "exclude")
_AUTH_METHODS: Final = get_args(AuthMethod)

# Site names end up in log lines and tracking-DB rows, so keep them plain.
_SITE_NAME: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_PORT: Final = re.compile(r"[0-9]{1,5}")

_MIN_NOTIFICATION_SECRET: Final = 16
_MIN_API_TOKEN: Final = 16
_JWT_CURVES: Final = ("secp256r1", "secp384r1", "secp521r1")


class Secret:
    """A secret string that never shows itself: repr, str and f-strings all give ``Secret('********')``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(
            self._value.encode("utf-8", "surrogatepass"), other._value.encode("utf-8", "surrogatepass")
        )

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How the sync engine runs: ``[engine]``."""

    database: Path
    repository_concurrency: int
    blob_concurrency: int
    replicate_deletions: bool
    reconcile_interval: float
    sync_attempts: int
    # Requests per second per site that whole-repository work of `serve` (reconcile, deletion
    # events, verification) may send; 0: no bound. Pushes' own copies never wait on it.
    reconcile_requests_per_second: float = 200.0


@dataclass(frozen=True, slots=True)
class VerificationConfig:
    """How `geo-tui serve` re-verifies: ``[verification]``.

    ``deep_interval``: seconds between two deep verifications (every blob HEADed) of each repository, spread
    evenly over the interval; 0 turns the schedule off."""

    deep_interval: float = float(DEEP_INTERVAL_DEFAULT)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """The key pair that signs registry tokens for every ``auth = "jwt"`` site: ``[auth]``."""

    private_key_path: Path
    private_key_pem: bytes = field(repr=False)
    # Loaded once, here: loading checks an RSA key's math, ~40 ms for each load.
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = field(repr=False, compare=False)
    issuer: str
    service: str
    token_ttl: float


@dataclass(frozen=True, slots=True)
class NotificationsConfig:
    """Where `geo-tui serve` listens for registry notifications: ``[notifications]``."""

    listen_host: str
    listen_port: int
    secret: Secret


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """Where the engine API of `geo-tui serve` listens and who may use it: ``[api]``.

    Exactly one of ``socket`` (a unix socket path) and ``listen_host``/``listen_port`` is set, or neither,
    which means the API shares the notification receiver's address. ``token`` may read and command,
    ``read_token`` may only read; without tokens only a unix socket is allowed (its mode limits access)."""

    socket: Path | None = None
    listen_host: str | None = None
    listen_port: int | None = None
    token: Secret | None = None
    read_token: Secret | None = None

    @property
    def shared(self) -> bool:
        """Whether the API is served on the notification receiver's address."""
        return self.socket is None and self.listen_host is None


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """One registry: the primary or a secondary."""

    name: str
    registry: str
    auth: AuthMethod
    role: SiteRole
    username: str | None
    password: Secret | None
    ca_file: Path | None
    tls_verify: bool
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    # auth = "token": hosts besides the registry's own that may receive its username and password
    token_realm_hosts: tuple[str, ...] = ()

    def wants(self, repository: str) -> bool:
        """Whether this site replicates `repository`: no include means all; exclude wins over include."""
        if self.include and not any(fnmatch.fnmatchcase(repository, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(repository, p) for p in self.exclude)


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, checked configuration file."""

    path: Path
    engine: EngineConfig
    auth: AuthConfig | None
    notifications: NotificationsConfig | None
    primary: SiteConfig
    secondaries: tuple[SiteConfig, ...]
    api: ApiConfig | None = None  # None: the default, a unix socket beside the tracking database
    verification: VerificationConfig = VerificationConfig()

    @property
    def sites(self) -> tuple[SiteConfig, ...]:
        """The primary, then the secondaries in file order."""
        return (self.primary, *self.secondaries)

    def site(self, name: str) -> SiteConfig:
        """The site called `name`; KeyError if there is none."""
        for site in self.sites:
            if site.name == name:
                return site
        raise KeyError(f"no site named {name!r} in {self.path}")


def resolve_config_path(cli_value: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """The config file to use: ``--config``, then ``$GEO_TUI_CONFIG``, then the user config dir's
    ``geo-tui/config.toml``. Empty values count as unset; ``~`` expands."""
    for value in (cli_value, environ.get(ENV_VAR)):
        if value:
            return Path(value).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def load_config(path: Path) -> Config:
    """Read and check the configuration file at `path`. Raises ConfigError for anything wrong with it."""
    path = Path(path)
    top = Table(path, "", parse_toml(path), _TOP_KEYS)
    base = path.absolute().parent
    engine = _engine(top.table("engine", _ENGINE_KEYS) or Table(path, "engine", {}, ()), base)
    auth_table = top.table("auth", _AUTH_KEYS)
    auth = _auth(auth_table, base) if auth_table is not None else None
    notifications_table = top.table("notifications", _NOTIFICATIONS_KEYS)
    notifications = _notifications(notifications_table, base) if notifications_table is not None else None
    if not top.has("primary"):
        raise top.error("primary", "missing required table [primary]")
    primary = _site(_site_table(path, "primary", top.data["primary"], "primary"), base, "primary")
    secondaries = _secondaries(top, base, primary)
    if auth is None:
        for site in (primary, *secondaries):
            if site.auth == "jwt":
                user = "primary" if site.role == "primary" else f"secondary {site.name!r}"
                raise top.error("auth", f'missing [auth] section: the {user} uses auth = "jwt"')
    api_table = top.table("api", _API_KEYS)
    api = _api(api_table or Table(path, "api", {}, ()), base, engine, notifications)
    verification = _verification(top.table("verification", _VERIFICATION_KEYS))
    return Config(path, engine, auth, notifications, primary, secondaries, api, verification)


def redactor_for(config: Config) -> Redactor:
    """The one Redactor of everything secret in `config`: the notification secret, the API tokens, each
    site's password (and its ``username:password`` as a Basic header carries it) and the signing key's PEM
    (whole, its base64 body, and each line of it)."""
    values: list[str] = []
    basic: list[tuple[str, str]] = []
    if config.notifications is not None:
        values.append(config.notifications.secret.reveal())
    if config.api is not None:
        values += [t.reveal() for t in (config.api.token, config.api.read_token) if t is not None]
    for site in config.sites:
        if site.password is not None:
            values.append(site.password.reveal())
            basic.append((site.username or "", site.password.reveal()))
    if config.auth is not None:
        pem = config.auth.private_key_pem.decode("ascii", "replace")
        lines = [line.strip() for line in pem.splitlines() if line.strip() and "-----" not in line]
        values += [pem.strip(), "".join(lines), *(line for line in lines if len(line) >= 16)]
    return Redactor(values, basic=basic)


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


# --- the sections -------------------------------------------------------------------------------------


def _engine(t: Table, base: Path) -> EngineConfig:
    database = t.path("database", base) or Path(platformdirs.user_data_dir(APP_NAME)) / "tracking.db"
    return EngineConfig(
        database=database,
        repository_concurrency=t.integer("repository_concurrency", 10, 1, 256),
        blob_concurrency=t.integer("blob_concurrency", 4, 1, 64),
        replicate_deletions=t.boolean("replicate_deletions", True),
        reconcile_interval=t.number("reconcile_interval", 600, 10),
        sync_attempts=t.integer("sync_attempts", 3, 1, 20),
        reconcile_requests_per_second=t.number("reconcile_requests_per_second", 200, 0),
    )


def _verification(t: Table | None) -> VerificationConfig:
    if t is None:
        return VerificationConfig()
    interval = t.number("deep_interval", DEEP_INTERVAL_DEFAULT, 0, 366 * 86400)
    if 0 < interval < DEEP_INTERVAL_MIN:
        raise t.error(
            "deep_interval", f"must be 0 (off) or at least {DEEP_INTERVAL_MIN} seconds, got {interval:g}"
        )
    return VerificationConfig(interval)


def _auth(t: Table, base: Path) -> AuthConfig:
    path = t.path("private_key", base)
    if path is None:
        raise t.error("private_key", "missing required key")
    pem = t.read("private_key", path)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # cryptography's way of saying the key needs a password
        raise t.error(
            "private_key",
            f"{path}: the key is encrypted (password-protected), which is not supported; "
            "write an unencrypted copy with `openssl pkey -in KEY -out KEY.plain` and keep it 0600",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise t.error("private_key", f"{path}: not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        kind = type(key).__name__.lstrip("_").replace("PrivateKey", "") or "this kind of"
        raise t.error("private_key", f"{path}: {kind} keys are not supported; use an RSA or EC key")
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name not in _JWT_CURVES:
        # JWT signs with ES256/ES384/ES512 only, i.e. the NIST curves P-256, P-384 and P-521.
        raise t.error(
            "private_key", f"{path}: EC curve {key.curve.name} cannot sign JWTs; use P-256, P-384 or P-521"
        )
    service = t.string("service", "container_registry")
    if not service:
        raise t.error("service", "must not be empty")
    return AuthConfig(
        private_key_path=path,
        private_key_pem=pem,
        private_key=key,
        issuer=t.required_string("issuer"),
        service=service,
        token_ttl=t.number("token_ttl", 300, 30, 3600),
    )


def _notifications(t: Table, base: Path) -> NotificationsConfig:
    host, port = _listen(t, "listen")
    secret, key = _secret(t, "secret", "secret_file", base)
    if secret is None:
        raise t.error("secret", "missing required key (set secret or secret_file)")
    if len(secret.reveal()) < _MIN_NOTIFICATION_SECRET:
        raise t.error(key, f"too short: use at least {_MIN_NOTIFICATION_SECRET} characters")
    return NotificationsConfig(listen_host=host, listen_port=port, secret=secret)


def default_api_socket(database: Path) -> Path:
    """The API's unix socket when ``[api] listen`` is not set: beside the tracking database."""
    return database.with_name(database.name + ".sock")


def _api(t: Table, base: Path, engine: EngineConfig, notifications: NotificationsConfig | None) -> ApiConfig:
    token, token_key = _secret(t, "token", "token_file", base)
    read_token, read_key = _secret(t, "read_token", "read_token_file", base)
    for secret, key in ((token, token_key), (read_token, read_key)):
        if secret is not None and len(secret.reveal()) < _MIN_API_TOKEN:
            raise t.error(key, f"too short: use at least {_MIN_API_TOKEN} characters")
    if token is not None and read_token is not None and token == read_token:
        raise t.error(read_key, "must differ from the full token")
    raw = t.string("listen")
    if raw is None:
        if token is not None and notifications is not None:
            return ApiConfig(token=token, read_token=read_token)  # beside the notification receiver
        return ApiConfig(socket=default_api_socket(engine.database), token=token, read_token=read_token)
    if raw.startswith(("/", "./", "../", "~", "unix:")):
        socket = Path(raw.removeprefix("unix:")).expanduser()
        if not socket.name or "\0" in raw:
            raise t.error("listen", f"{raw!r} is not a unix socket path")
        socket = socket if socket.is_absolute() else base / socket
        if len(os.fsencode(str(socket))) > 100:  # sun_path holds 108 bytes on Linux, 104 elsewhere
            raise t.error("listen", f"unix socket path {socket} is too long (over 100 bytes)")
        return ApiConfig(socket=socket, token=token, read_token=read_token)
    host, port = _listen(t, "listen")
    if token is None:
        raise t.error(
            "listen",
            "a TCP address needs [api] token or token_file; without a token use a unix socket path",
        )
    if notifications is not None and (host, port) == (notifications.listen_host, notifications.listen_port):
        return ApiConfig(token=token, read_token=read_token)
    return ApiConfig(listen_host=host, listen_port=port, token=token, read_token=read_token)


def _listen(t: Table, name: str) -> tuple[str, int]:
    raw = t.required_string(name)
    host, _, port = raw.rpartition(":")
    if not host or not _PORT.fullmatch(port):
        raise t.error(name, f"must be host:port, e.g. 127.0.0.1:5050, got {raw!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise t.error(name, f"{host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise t.error(name, "put an IPv6 address in brackets, e.g. [::1]:5050")
    elif not _HOSTNAME.fullmatch(host):
        raise t.error(name, f"{host!r} is not a host name or address")
    if not 1 <= int(port) <= 65535:
        raise t.error(name, f"port must be between 1 and 65535, got {int(port)}")
    return host, int(port)


def _secret(t: Table, inline: str, file_key: str, base: Path) -> tuple[Secret | None, str]:
    """The secret given inline or in a file (trailing newline stripped), and which key gave it."""
    value = t.string(inline)
    path = t.path(file_key, base)
    if value is not None and path is not None:
        raise t.error(file_key, f"set {inline} or {file_key}, not both")
    if value is not None:
        if not value:
            raise t.error(inline, "must not be empty")
        return Secret(value), inline
    if path is None:
        return None, inline
    try:
        text = t.read(file_key, path).decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise t.error(file_key, f"{path}: not UTF-8 text") from None
    if not text:
        raise t.error(file_key, f"{path}: is empty")
    return Secret(text), file_key


def _site_table(file: Path, key: str, value: object, role: SiteRole) -> Table:
    if role == "primary" and isinstance(value, dict):
        for name in ("include", "exclude"):
            if name in value:
                raise ConfigError(
                    file,
                    f"{key}.{name}",
                    "filters apply to secondaries only: set include/exclude on each [[secondaries]] table",
                )
    return Table(file, key, value, _PRIMARY_KEYS if role == "primary" else _SECONDARY_KEYS)


def _site(t: Table, base: Path, role: SiteRole) -> SiteConfig:
    name = t.required_string("name")
    if not _SITE_NAME.fullmatch(name):
        raise t.error(
            "name",
            f"{name!r} is not a valid site name: 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
        )
    registry = _registry_url(t, "registry")
    auth = t.string("auth", "none")
    if auth not in _AUTH_METHODS:
        raise t.error("auth", f"must be one of {', '.join(map(repr, _AUTH_METHODS))}, got {auth!r}")
    method = cast(AuthMethod, auth)
    username, password = _credentials(t, method, base)
    ca_file = t.path("ca_file", base)
    tls_verify = t.boolean("tls_verify", True)
    if ca_file is not None:
        t.read("ca_file", ca_file, MAX_CONFIG_BYTES)
        if not tls_verify:
            raise t.error("ca_file", "is set but tls_verify = false: choose one")
    return SiteConfig(
        name=name,
        registry=registry,
        auth=method,
        role=role,
        username=username,
        password=password,
        ca_file=ca_file,
        tls_verify=tls_verify,
        include=t.string_list("include"),
        exclude=t.string_list("exclude"),
        token_realm_hosts=_token_realm_hosts(t, method),
    )


def _token_realm_hosts(t: Table, auth: AuthMethod) -> tuple[str, ...]:
    """Host names (lower case) that may receive the Basic credentials of a token realm."""
    hosts = t.string_list("token_realm_hosts")
    if hosts and auth != "token":
        raise t.error("token_realm_hosts", f'is only used with auth = "token", not "{auth}"')
    checked: list[str] = []
    for index, host in enumerate(hosts):
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            if not _HOSTNAME.fullmatch(bare):
                raise t.error(
                    f"token_realm_hosts[{index}]",
                    f"{host!r} is not a host name or address (give the host only, no scheme, port or path)",
                ) from None
        checked.append(bare.lower())
    return tuple(checked)


def _credentials(t: Table, auth: AuthMethod, base: Path) -> tuple[str | None, Secret | None]:
    if auth in ("jwt", "none"):
        for name in ("username", "password", "password_file"):
            if t.has(name):
                raise t.error(name, f'is only used with auth = "token" or "basic", not "{auth}"')
        return None, None
    username = t.string("username")
    if username == "":
        raise t.error("username", "must not be empty")
    password, _ = _secret(t, "password", "password_file", base)
    if auth == "basic" and username is None:
        raise t.error("username", 'missing required key: auth = "basic" needs username and password')
    if auth == "basic" and password is None:
        raise t.error("password", 'missing required key: auth = "basic" needs password or password_file')
    if (username is None) != (password is None):
        missing = "password" if password is None else "username"
        raise t.error(missing, 'missing: with auth = "token" set username and password, or neither')
    return username, password


def _registry_url(t: Table, name: str) -> str:
    """The registry's base URL without a trailing slash. The URL itself is never echoed: it might hold a
    password (https://user:pass@host)."""
    raw = t.required_string(name)
    if any(c.isspace() or not c.isprintable() for c in raw):
        raise t.error(name, "must not contain spaces or control characters")
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0..65535
    except ValueError:
        raise t.error(name, "is not a valid URL (check the host and port)") from None
    if parts.scheme.lower() not in ("http", "https") or not raw.lower().startswith(
        parts.scheme.lower() + "://"
    ):
        raise t.error(name, "must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise t.error(name, "must not contain credentials (user:password@); use username and password")
    if not parts.hostname:
        raise t.error(name, "has no host")
    if "?" in raw:
        raise t.error(name, "must not have a query string")
    if "#" in raw:
        raise t.error(name, "must not have a fragment")
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path.rstrip('/')}"


def _same_registry(a: str, b: str) -> bool:
    """Whether two checked registry URLs reach the same place (host case and default ports aside)."""

    def where(url: str) -> tuple[str, int, str]:
        parts = urlsplit(url)
        default = 443 if parts.scheme == "https" else 80
        return (parts.hostname or "", parts.port or default, parts.path)

    return where(a) == where(b)


def _secondaries(top: Table, base: Path, primary: SiteConfig) -> tuple[SiteConfig, ...]:
    if not top.has("secondaries"):
        raise top.error("secondaries", "missing: add at least one [[secondaries]] table")
    value = top.data["secondaries"]
    if not isinstance(value, list):
        kind = toml_type(value)
        raise top.error("secondaries", f"must be an array of tables ([[secondaries]]), got {kind}")
    if not value:
        raise top.error("secondaries", "is empty: add at least one [[secondaries]] table")
    owners = {primary.name: "primary"}
    sites: list[SiteConfig] = []
    for index, item in enumerate(value):
        t = _site_table(top.file, f"secondaries[{index}]", item, "secondary")
        site = _site(t, base, "secondary")
        if site.name in owners:
            raise t.error("name", f"duplicate site name {site.name!r} (also used by {owners[site.name]})")
        if _same_registry(site.registry, primary.registry):
            raise t.error(
                "registry",
                "is the primary's registry: replicating a registry into itself could delete what it copies",
            )
        owners[site.name] = t.key
        sites.append(site)
    return tuple(sites)
