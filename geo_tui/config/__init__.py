"""The geo-tui configuration file: one TOML file naming the primary, its secondaries and how to reach them.

The file's shape is a public contract (other tools write it)::

    [engine]          database, repository_concurrency, blob_concurrency, replicate_deletions,
                      reconcile_interval, reconcile_requests_per_second, sync_attempts,
                      min_transfer_rate, max_job_duration, max_catalog_pages,
                      max_tags_per_repository, lease_seconds      (all optional)
    [auth]            private_key, issuer, service, token_ttl    (needed if a site uses auth = "jwt")
    [notifications]   listen, secret | secret_file               (used by `geo-tui serve`)
    [api]             listen, token | token_file, read_token | read_token_file   (the engine API)
    [verification]    deep_interval                              (optional)
    [primary]         name, registry, auth, username, password | password_file, ca_file, tls_verify,
                      token_realm_hosts
    [[secondaries]]   the keys of [primary], plus include, exclude and max_repositories

`load_config` checks everything before anything touches a registry. Every problem is a `ConfigError` whose
one-line message names the file and the dotted key (`secondaries[1].registry`), and never a secret's value.
Relative paths in the file are relative to the file's folder; `~` expands.

The package: `model` (the dataclasses and `Secret`), `rules` (each value's rule, applied by the loader and
by `geo-tui init` alike), `loader` (the file's shape, section by section) and `files` (finding, writing
and guarding the file). Import from here: these names are the public API.
"""

from __future__ import annotations

from geo_tui._config_document import ConfigError

from .files import APP_NAME, ENV_VAR, resolve_config_path, warn_if_world_readable, write_config
from .loader import default_api_socket, load_config
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
    redactor_for,
)

__all__ = [
    "APP_NAME",
    "DEEP_INTERVAL_DEFAULT",
    "DEEP_INTERVAL_MIN",
    "ENV_VAR",
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
