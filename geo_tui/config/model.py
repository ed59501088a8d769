"""What a checked configuration file holds: one frozen dataclass per section, and `Secret`, which never
shows itself. `redactor_for` gathers every secret of a `Config` for the logs and screens."""

from __future__ import annotations

import fnmatch
import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from geo_tui.registry import Redactor

__all__ = [
    "DEEP_INTERVAL_DEFAULT",
    "DEEP_INTERVAL_MIN",
    "ApiConfig",
    "AuthConfig",
    "AuthMethod",
    "Config",
    "EngineConfig",
    "NotificationsConfig",
    "Secret",
    "SiteConfig",
    "SiteRole",
    "VerificationConfig",
    "redactor_for",
]

AuthMethod = Literal["jwt", "token", "basic", "none"]
SiteRole = Literal["primary", "secondary"]

DEEP_INTERVAL_DEFAULT: Final = 7 * 86400  # seconds: GitLab Geo re-verifies every 7 days
DEEP_INTERVAL_MIN: Final = 60


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
    # Bytes a second below which a registry request fails: its deadline is its size at this rate.
    min_transfer_rate: float = 64 * 1024
    max_job_duration: float = 6 * 3600  # seconds one repository's copy may take, to every secondary
    # Listings end: a registry whose catalog or tag list links to a next page forever is refused.
    max_catalog_pages: int = 10_000
    max_tags_per_repository: int = 1_000_000
    # Requests per second per site that whole-repository work of `serve` (reconcile, deletion
    # events, verification) may send; 0: no bound. Pushes' own copies never wait on it.
    reconcile_requests_per_second: float = 200.0
    # A PostgreSQL tracking database (a libpq URL without password) instead of the SQLite file; then
    # `database` is only where this host keeps the engine's lock record and API socket.
    database_url: str | None = None
    database_password: Secret | None = None  # [engine] database_password_file; None: libpq's PGPASSFILE
    # Seconds the scheduler and the push copier wait for a wake before they look for due work anyway:
    # the backstop for a NOTIFY lost with a dropped connection (PostgreSQL), and the tick on which
    # retries fall due.
    poll_interval: float = 1.0
    # On PostgreSQL (many workers): how long a claimed row stays a worker's without its heartbeat.
    lease_seconds: float = 60.0

    @property
    def database_name(self) -> str:
        """The tracking database as messages name it: the SQLite file, or the URL (no password in it)."""
        return self.database_url or str(self.database)


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
    # A secondary's cap on repositories copied at once, across every worker (None: no cap of its own).
    max_repositories: int | None = None

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


def redactor_for(config: Config) -> Redactor:
    """The one Redactor of everything secret in `config`: the notification secret, the API tokens, each
    site's password (and its ``username:password`` as a Basic header carries it) and the signing key's PEM
    (whole, its base64 body, and each line of it)."""
    values: list[str] = []
    basic: list[tuple[str, str]] = []
    if config.engine.database_password is not None:
        values.append(config.engine.database_password.reveal())
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
