"""`load_config`: the configuration file, read and checked section by section before anything touches a
registry. The values' rules live in `rules`; this module knows the file's shape (which keys each table
takes, which are required, their defaults) and how the sections depend on each other."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import platformdirs

from geo_tui._config_document import MAX_CONFIG_BYTES, ConfigError, Table, parse_toml, toml_type

from . import rules
from .files import APP_NAME
from .model import (
    DEEP_INTERVAL_DEFAULT,
    DEEP_INTERVAL_MIN,
    ApiConfig,
    AuthConfig,
    AuthMethod,
    Config,
    EngineConfig,
    NotificationsConfig,
    Secret,
    SiteConfig,
    SiteRole,
    VerificationConfig,
)
from .rules import ConfigKey

__all__ = ["default_api_socket", "load_config"]

_TOP_KEYS: Final = ("engine", "auth", "notifications", "api", "verification", "primary", "secondaries")
_ENGINE_KEYS: Final = (
    "database",
    "database_password_file",
    "repository_concurrency",
    "blob_concurrency",
    "replicate_deletions",
    "reconcile_interval",
    "reconcile_requests_per_second",
    "sync_attempts",
    "min_transfer_rate",
    "max_job_duration",
    "max_catalog_pages",
    "max_tags_per_repository",
    "poll_interval",
    "lease_seconds",
)
_AUTH_KEYS: Final = ("private_key", "issuer", "service", "token_ttl")
_VERIFICATION_KEYS: Final = ("deep_interval",)
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
_SECONDARY_KEYS: Final = (*_PRIMARY_KEYS, "include", "exclude", "max_repositories")

_MIN_NOTIFICATION_SECRET: Final = 16
_MIN_API_TOKEN: Final = 16


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


# --- the sections -------------------------------------------------------------------------------------


def _engine(t: Table, base: Path) -> EngineConfig:
    url, password = _postgres(t, base)
    if url is not None:  # this host's lock record and API socket, one pair per database
        local = f"postgresql-{urlsplit(url).hostname or 'localhost'}-{urlsplit(url).path.strip('/')}"
        database = Path(platformdirs.user_data_dir(APP_NAME)) / local.replace("/", "_")
    else:
        database = t.path("database", base) or Path(platformdirs.user_data_dir(APP_NAME)) / "tracking.db"
    return EngineConfig(
        database=database,
        database_url=url,
        database_password=password,
        repository_concurrency=t.integer("repository_concurrency", 10, 1, 256),
        blob_concurrency=t.integer("blob_concurrency", 4, 1, 64),
        replicate_deletions=t.boolean("replicate_deletions", True),
        reconcile_interval=t.number("reconcile_interval", 600, 10),
        sync_attempts=t.integer("sync_attempts", 3, 1, 20),
        min_transfer_rate=t.number("min_transfer_rate", 64 * 1024, 1),
        max_job_duration=t.number("max_job_duration", 6 * 3600, 1),
        max_catalog_pages=t.integer("max_catalog_pages", 10_000, 1, 10_000_000),
        max_tags_per_repository=t.integer("max_tags_per_repository", 1_000_000, 1, 100_000_000),
        reconcile_requests_per_second=t.number("reconcile_requests_per_second", 200, 0),
        poll_interval=t.number("poll_interval", 1.0, 0.05, 3600),
        lease_seconds=t.number("lease_seconds", 60, 1),
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
    key, pem = rules.signing_key(path, ConfigKey(t, "private_key", str(path)))
    service = rules.token_claim(t.string("service", "container_registry") or "", ConfigKey(t, "service"))
    return AuthConfig(
        private_key_path=path,
        private_key_pem=pem,
        private_key=key,
        issuer=rules.token_claim(t.required_string("issuer"), ConfigKey(t, "issuer")),
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


def _postgres(t: Table, base: Path) -> tuple[str | None, Secret | None]:
    """``[engine] database`` as a PostgreSQL URL (None: a SQLite file) and the password of
    ``database_password_file`` (0600, like every secret file)."""
    raw = t.string("database")
    url = rules.postgres_url(raw, ConfigKey(t, "database")) if raw and "://" in raw else None
    path = t.path("database_password_file", base)
    if path is None:
        return url, None
    if url is None:
        raise t.error("database_password_file", "only for a PostgreSQL database (postgresql://...)")
    rules.owner_only(path, ConfigKey(t, "database_password_file"))
    password, _ = _secret(t, "", "database_password_file", base)
    return url, password


def _listen(t: Table, name: str) -> tuple[str, int]:
    return rules.listen_address(t.required_string(name), ConfigKey(t, name))


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
    name = rules.site_name(t.required_string("name"), ConfigKey(t, "name"))
    registry = rules.registry_url(t.required_string("registry"), ConfigKey(t, "registry"))
    method = rules.auth_method(t.string("auth", "none") or "", ConfigKey(t, "auth"))
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
        max_repositories=t.integer("max_repositories", 0, 1, 100_000) if t.has("max_repositories") else None,
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
            if not rules.host_name(bare):
                raise t.error(
                    f"token_realm_hosts[{index}]",
                    f"{host!r} is not a host name or address (give the host only, no scheme, port or path)",
                ) from None
        checked.append(bare.lower())
    return tuple(checked)


def _credentials(t: Table, auth: AuthMethod, base: Path) -> tuple[str | None, Secret | None]:
    given = [name for name in ("username", "password", "password_file") if t.has(name)]
    problem = rules.credentials_problem(
        auth, username="username" in given, password="password" in given or "password_file" in given
    )
    if problem is rules.CredentialsProblem.NOT_USED:
        raise t.error(given[0], f'is only used with auth = "token" or "basic", not "{auth}"')
    username = t.string("username")
    if username == "":
        raise t.error("username", "must not be empty")
    password, _ = _secret(t, "password", "password_file", base)
    if problem is rules.CredentialsProblem.BASIC_NEEDS_USERNAME:
        raise t.error("username", 'missing required key: auth = "basic" needs username and password')
    if problem is rules.CredentialsProblem.BASIC_NEEDS_PASSWORD:
        raise t.error("password", 'missing required key: auth = "basic" needs password or password_file')
    if problem is rules.CredentialsProblem.HALF_A_PAIR:
        missing = "password" if password is None else "username"
        raise t.error(missing, 'missing: with auth = "token" set username and password, or neither')
    return username, password


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
        if (owner := rules.site_name_owner(site.name, owners)) is not None:
            raise t.error("name", f"duplicate site name {site.name!r} (also used by {owner})")
        rules.distinct_from_primary(site.registry, primary.registry, ConfigKey(t, "registry"))
        owners[site.name] = t.key
        sites.append(site)
    return tuple(sites)
