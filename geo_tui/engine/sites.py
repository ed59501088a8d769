"""Registry clients for the configured sites, with the right credentials and scopes for each role."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from geo_tui.config import AuthConfig, Config, SiteConfig, redactor_for
from geo_tui.registry import (
    Authenticator,
    BasicAuth,
    BearerChallengeAuth,
    JwtAuth,
    NoAuth,
    Redactor,
    RegistryClient,
    TokenSigner,
)

__all__ = ["PRIMARY_ACTIONS", "SECONDARY_ACTIONS", "build_authenticator", "build_client", "build_signer"]

# The primary is only ever read: its tokens grant pull and nothing else.
PRIMARY_ACTIONS = ("pull",)
SECONDARY_ACTIONS = ("pull", "push", "delete")


def build_signer(auth: AuthConfig) -> TokenSigner:
    return TokenSigner(auth.private_key, issuer=auth.issuer, service=auth.service, ttl=auth.token_ttl)


def _authenticator(site: SiteConfig, signer: TokenSigner | None) -> Authenticator:
    password = site.password.reveal() if site.password is not None else None
    if site.auth == "jwt":
        if signer is None:
            raise ValueError(f'site {site.name} uses auth = "jwt" but there is no [auth] section')
        actions = PRIMARY_ACTIONS if site.role == "primary" else SECONDARY_ACTIONS
        return JwtAuth(signer, repository_actions=actions)
    if site.auth == "token":
        return BearerChallengeAuth(
            site.username, password, registry=site.registry, realm_hosts=site.token_realm_hosts
        )
    if site.auth == "basic":
        return BasicAuth(site.username or "", password or "")
    return NoAuth()


def build_authenticator(site: SiteConfig, config: Config) -> Authenticator:
    """The credentials the engine uses for `site` (pull-only tokens for the primary), for `geo-tui doctor`."""
    return _authenticator(site, build_signer(config.auth) if config.auth is not None else None)


def build_client(
    site: SiteConfig,
    config: Config,
    *,
    signer: TokenSigner | None = None,
    blob_connections: int = 4,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: float = 30.0,
    redactor: Redactor | None = None,
    on_request: Callable[[httpx.Request], Awaitable[None]] | None = None,
) -> RegistryClient:
    verify: bool | str = str(site.ca_file) if site.ca_file is not None else site.tls_verify
    if signer is None and config.auth is not None:
        signer = build_signer(config.auth)
    return RegistryClient(
        site.name,
        site.registry,
        _authenticator(site, signer),
        verify=verify,
        max_connections=16,
        blob_connections=blob_connections,
        transport=transport,
        timeout=timeout,
        min_transfer_rate=config.engine.min_transfer_rate,
        redactor=redactor or redactor_for(config),
        max_catalog_pages=config.engine.max_catalog_pages,
        max_tags=config.engine.max_tags_per_repository,
        on_request=on_request,
    )
