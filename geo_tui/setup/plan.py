"""What `geo-tui init` will write, checked before anything is written, and the writing itself.

A `SetupPlan` comes from flags or from prompts; each field is checked on the way in by the config's own
rules (`geo_tui.config.rules`, the ones `load_config` applies to the same keys), with errors that name the
flag (`--secondary 'eu'`), so the flags, the prompts and the loader all say the same thing.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import tomli_w

from geo_tui.config import AuthMethod, Config, ConfigError, load_config, rules

from .flags import DEFAULT_ISSUER, DEFAULT_LISTEN, DEFAULT_SERVICE, InitFlag
from .keys import (
    SetupError,
    generate_notification_secret,
    generate_signing_key,
    load_signing_key,
    private_key_pem,
    self_signed_certificate,
    write_new_file,
)
from .snippets import notification_url_for

__all__ = [
    "DEFAULT_ISSUER",
    "DEFAULT_LISTEN",
    "DEFAULT_SERVICE",
    "SetupPlan",
    "SitePlan",
    "WrittenSetup",
    "check_auth",
    "check_listen",
    "check_registry_url",
    "check_site_name",
    "check_sites",
    "config_document",
    "config_text",
    "execute_plan",
    "name_used_twice",
]

KEY_NAME: Final = "registry.key"
CERT_NAME: Final = "registry.crt"


@dataclass(frozen=True)
class SitePlan:
    """One registry as `init` will write it."""

    name: str
    registry: str
    auth: AuthMethod = "jwt"
    username: str | None = None
    password_file: Path | None = None


@dataclass(frozen=True)
class SetupPlan:
    """Everything `init` needs, already checked."""

    config_path: Path
    primary: SitePlan
    secondaries: tuple[SitePlan, ...]
    key: Path | None = None  # an existing key to use; None generates one beside the config
    issuer: str = DEFAULT_ISSUER
    service: str = DEFAULT_SERVICE
    token_realm: str | None = None
    listen: tuple[str, int] = ("127.0.0.1", 5050)
    notification_url: str | None = None
    database: Path | None = None
    gitlab_sites: frozenset[str] = field(default_factory=frozenset)
    force: bool = False

    @property
    def sites(self) -> tuple[SitePlan, ...]:
        return (self.primary, *self.secondaries)

    @property
    def uses_jwt(self) -> bool:
        return any(s.auth == "jwt" for s in self.sites)

    @property
    def key_path(self) -> Path:
        return self.key if self.key is not None else self.config_path.absolute().parent / KEY_NAME

    @property
    def certificate_path(self) -> Path:
        return self.config_path.absolute().parent / CERT_NAME

    @property
    def effective_notification_url(self) -> str:
        if self.notification_url:
            return self.notification_url
        host, port = self.listen
        if host in ("0.0.0.0", "::", ""):  # listening everywhere: the registry needs a name to call
            host = socket.getfqdn()
        return notification_url_for(host, port)


@dataclass(frozen=True)
class WrittenSetup:
    """What `execute_plan` wrote, and the config as geo-tui reads it back."""

    config: Config
    key_path: Path
    key_generated: bool
    certificate_path: Path


# --- validators: the config's rules, each returning the clean value or raising SetupError naming `flag` ---


def check_site_name(value: str, flag: str) -> str:
    return rules.site_name(value, InitFlag.quoting(flag, value))


def check_registry_url(value: str, flag: str) -> str:
    """An http(s) registry URL without credentials, query or fragment; no trailing slash."""
    return rules.registry_url(value, InitFlag.quoting(flag, value))


def check_listen(value: str, flag: str = "--listen") -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) for the notification receiver."""
    return rules.listen_address(value, InitFlag.quoting(flag, value))


def check_auth(value: str, flag: str = "--auth") -> AuthMethod:
    return rules.auth_method(value, InitFlag.quoting(flag, value))


def check_sites(primary: SitePlan, secondaries: tuple[SitePlan, ...]) -> None:
    """At least one secondary, unique names, no secondary that is the primary."""
    if not secondaries:
        raise SetupError("--secondary: at least one secondary is needed (--secondary NAME=URL)")
    owners = {primary.name: "primary"}
    for site in secondaries:
        if (error := name_used_twice(site.name, owners)) is not None:
            raise SetupError(error)
        owners[site.name] = "--secondary"
        where = InitFlag.quoting("--secondary", site.name)
        rules.distinct_from_primary(site.registry, primary.registry, where)
    for site in (primary, *secondaries):
        _check_credentials(site)


def name_used_twice(name: str, owners: Mapping[str, object]) -> str | None:
    """The config's one-name-one-site rule (`rules.site_name_owner`) in init's words, for a secondary
    named `name` after the sites in `owners`."""
    if rules.site_name_owner(name, owners) is None:
        return None
    return f"--secondary {name!r}: the site name is used twice"


def _check_credentials(site: SitePlan) -> None:
    """The config's credentials rule (`rules.credentials_problem`), said in terms of init's flags."""
    given = site.username is not None, site.password_file is not None
    problem = rules.credentials_problem(site.auth, username=given[0], password=given[1])
    name = site.name
    if problem in (
        rules.CredentialsProblem.BASIC_NEEDS_USERNAME,
        rules.CredentialsProblem.BASIC_NEEDS_PASSWORD,
    ):
        raise SetupError(f"--auth {name}=basic: needs --username {name}=USER and --password-file {name}=PATH")
    if problem is rules.CredentialsProblem.HALF_A_PAIR:
        raise SetupError(f"--username/--password-file {name}: give both, or neither")
    if problem is rules.CredentialsProblem.NOT_USED:
        flag = "--username" if given[0] else "--password-file"
        raise SetupError(f"{flag} {name}: only used with --auth {name}=token or basic")


# --- writing -------------------------------------------------------------------------------------------


def _refuse_existing(plan: SetupPlan) -> None:
    """Say which file exists before anything is written, so a refusal leaves no half-done setup."""
    if plan.force:
        return
    targets = [("the config", plan.config_path)]
    if plan.uses_jwt:
        if plan.key is None:
            targets.append(("the private key", plan.key_path))
        targets.append(("the certificate", plan.certificate_path))
    for what, path in targets:
        if path.exists() or path.is_symlink():
            raise SetupError(f"{what} {path} already exists; use --force to replace it")


def config_document(plan: SetupPlan, secret: str) -> dict[str, Any]:
    """The TOML document `init` writes (the shape README "Configuration" describes)."""

    def site(s: SitePlan) -> dict[str, Any]:
        data: dict[str, Any] = {"name": s.name, "registry": s.registry, "auth": s.auth}
        if s.username is not None and s.password_file is not None:
            data["username"] = s.username
            data["password_file"] = str(s.password_file.absolute())
        return data

    document: dict[str, Any] = {}
    if plan.database is not None:
        document["engine"] = {"database": str(plan.database.absolute())}
    if plan.uses_jwt:
        document["auth"] = {
            "private_key": str(plan.key_path),
            "issuer": plan.issuer,
            "service": plan.service,
        }
    # Inline: the config is 0600 already, and one file is one thing to back up and to protect.
    document["notifications"] = {"listen": rules.host_port(*plan.listen), "secret": secret}
    document["primary"] = site(plan.primary)
    document["secondaries"] = [site(s) for s in plan.secondaries]
    return document


def config_text(document: dict[str, Any]) -> str:
    """The document as TOML a person can read: one table per section, ``[[secondaries]]`` each."""
    parts = [
        '# Written by `geo-tui init`. The keys are described in geo-tui\'s README, "Configuration".\n'
        "# This file holds the notification secret: keep it mode 0600.\n"
    ]
    for section, value in document.items():
        if section == "secondaries":
            parts += [f"[[secondaries]]\n{tomli_w.dumps(site)}" for site in value]
        else:
            parts.append(tomli_w.dumps({section: value}))
    return "\n".join(parts)


def execute_plan(plan: SetupPlan) -> WrittenSetup:
    """Write the key (unless an existing one is used), its certificate and the config, then read the
    config back as every other command will. Nothing is replaced without ``plan.force``."""
    _refuse_existing(plan)
    generated = False
    if plan.uses_jwt:
        if plan.key is not None:
            key, _ = load_signing_key(plan.key)
        else:
            key = generate_signing_key()
            write_new_file(
                plan.key_path, private_key_pem(key), 0o600, force=plan.force, what="the private key"
            )
            generated = True
        certificate = self_signed_certificate(key, common_name=f"geo-tui token signer ({plan.issuer})")
        write_new_file(plan.certificate_path, certificate, 0o644, force=plan.force, what="the certificate")
    text = config_text(config_document(plan, generate_notification_secret()))
    write_new_file(plan.config_path, text.encode(), 0o600, force=plan.force, what="the config")
    try:
        config = load_config(plan.config_path)
    except ConfigError as exc:  # a check here missed something the loader refuses: say exactly what
        raise SetupError(f"the written config does not load: {exc}") from None
    return WrittenSetup(config, plan.key_path, generated, plan.certificate_path)
