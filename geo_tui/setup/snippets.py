"""The registry configuration each site needs, generated from a geo-tui config.

For a plain CNCF Distribution: YAML to merge into its ``config.yml`` (``auth.token`` trusting geo-tui's
certificate; on the primary, the ``notifications.endpoints`` entry that posts to `geo-tui serve`). For a
site run by GitLab (Linux package): the ``gitlab.rb`` lines that do the same. Strings are written
double-quoted (YAML) or single-quoted (Ruby), so any path or URL pastes as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from geo_tui.config import Config, SiteConfig
from geo_tui.config.rules import host_port

__all__ = [
    "BACKOFF",
    "ENDPOINT_NAME",
    "EVENTS_PATH",
    "THRESHOLD",
    "TIMEOUT",
    "Snippet",
    "SnippetOptions",
    "notification_url_for",
    "site_snippets",
]

EVENTS_PATH: Final = "/api/v4/container_registry_event/events"
# Not GitLab's own "geo_event": a GitLab primary may keep posting to GitLab too, and distinct names keep
# the two endpoints apart in the registry's logs and metrics.
ENDPOINT_NAME: Final = "geo_tui"
# Distribution's notification settings, as GitLab documents them for Geo but the timeout: geo-tui's
# receiver answers once the events are stored, 200 within NOTIFICATION_STORE_TIMEOUT (+ WRITE_MARGIN) or a
# 503. GitLab's 500 ms ran out on a loaded host (issue 17: 4 of a 100-push burst at 20,000 tags), and
# Distribution then sends the same event again at once, with every event behind it waiting meanwhile.
TIMEOUT_SECONDS: Final = 5
TIMEOUT: Final = f"{TIMEOUT_SECONDS}s"
THRESHOLD: Final = 5
BACKOFF: Final = "1s"
# Blob events (Distribution names blobs application/octet-stream): geo-tui acts on none, and Distribution
# delivers an endpoint's events one at a time, so each is a delivery a push's event waits for
# (bench/live_latency.py measured it; issue 17).
IGNORED_MEDIA_TYPE: Final = "application/octet-stream"
# Pull events (one per manifest or blob GET/HEAD, each of the reconcile's HEADs of the primary included):
# geo-tui acts on none. Distribution 2.8 applies ignore.actions only when ignore.mediatypes is set too
# (its newIgnoredSink returns the bare sink otherwise: actions alone drop nothing; checked on 2.8.2).
IGNORED_ACTION: Final = "pull"


@dataclass(frozen=True)
class SnippetOptions:
    """What the snippets need beyond the config file."""

    certificate: Path
    token_realm: str | None
    notification_url: str | None
    gitlab_sites: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Snippet:
    """The configuration text for one site's registry."""

    site: str
    kind: Literal["distribution", "gitlab"]
    text: str
    holds_secret: bool

    @property
    def filename(self) -> str:
        return f"{self.site}.gitlab.rb" if self.kind == "gitlab" else f"{self.site}.registry.yml"


def notification_url_for(host: str, port: int) -> str:
    """The URL a registry posts events to when geo-tui listens on `host`:`port`."""
    return f"http://{host_port(host, port)}{EVENTS_PATH}"


def site_snippets(config: Config, options: SnippetOptions) -> list[Snippet]:
    """One snippet per site, the primary first."""
    snippets = []
    for site in config.sites:
        notify = site.role == "primary" and config.notifications is not None
        if site.name in options.gitlab_sites:
            text = _gitlab_rb(config, site, options, notify)
            snippets.append(Snippet(site.name, "gitlab", text, notify))
        else:
            text = _distribution_yaml(config, site, options, notify)
            snippets.append(Snippet(site.name, "distribution", text, notify))
    return snippets


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is valid YAML)."""
    return json.dumps(value)


def _ruby(value: str) -> str:
    """A Ruby single-quoted string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _distribution_yaml(config: Config, site: SiteConfig, options: SnippetOptions, notify: bool) -> str:
    lines = [
        f"# geo-tui: for the {site.role} {site.name!r} ({site.registry}).",
        "# Merge into the registry's config.yml (replace any auth: section), then restart the registry.",
    ]
    if site.auth == "jwt" and config.auth is not None:
        lines += [
            f"# Copy {options.certificate.name} to the registry host; rootcertbundle is its path there.",
            "auth:",
            "  token:",
            f"    realm: {_q(options.token_realm or '')}",
            f"    service: {_q(config.auth.service)}",
            f"    issuer: {_q(config.auth.issuer)}",
            f"    rootcertbundle: {_q(str(options.certificate))}",
        ]
    else:
        lines.append(
            f'# auth = "{site.auth}": geo-tui signs no tokens for this site; nothing to add for auth.'
        )
    if notify and config.notifications is not None:
        lines += [
            "# The Authorization value is the notification secret: keep this file private.",
            "notifications:",
            "  endpoints:",
            f"    - name: {ENDPOINT_NAME}",
            f"      url: {_q(options.notification_url or '')}",
            "      headers:",
            f"        Authorization: [{_q(config.notifications.secret.reveal())}]",
            f"      timeout: {TIMEOUT}",
            f"      threshold: {THRESHOLD}",
            f"      backoff: {BACKOFF}",
            "      # geo-tui acts on no blob or pull event: each is a delivery ahead of a push's event.",
            "      ignore:",
            f"        mediatypes: [{IGNORED_MEDIA_TYPE}]",
            f"        actions: [{IGNORED_ACTION}]  # Distribution 2.8 applies this only beside mediatypes",
        ]
    if site.role == "secondary" and config.engine.replicate_deletions:
        lines.append("# Deletions replicate: also set storage.delete.enabled: true in its storage section.")
    return "\n".join(lines) + "\n"


def _gitlab_rb(config: Config, site: SiteConfig, options: SnippetOptions, notify: bool) -> str:
    lines = [
        f"# geo-tui: for the {site.role} {site.name!r} ({site.registry}), run by GitLab.",
        "# Add to /etc/gitlab/gitlab.rb, then run: gitlab-ctl reconfigure",
    ]
    if site.auth == "jwt" and config.auth is not None:
        key, cert = config.auth.private_key_path, options.certificate
        lines += [
            "# GitLab signs its registry tokens with the key geo-tui uses, and the registry trusts its",
            f"# certificate. Copy {key.name} (mode 0600) and {cert.name} to this node at these paths first.",
            f"registry['internal_key'] = File.read({_ruby(str(key))})",
            f"registry['internal_certificate'] = File.read({_ruby(str(cert))})",
            f"gitlab_rails['registry_issuer'] = {_ruby(config.auth.issuer)}",
        ]
        if config.auth.service != "container_registry":
            lines.append(
                f"# The registry's service must be {config.auth.service!r} (GitLab: 'container_registry')."
            )
        realm = options.token_realm
        if realm:
            parts = urlsplit(realm)
            lines.append(
                "# Clients get tokens from GitLab's /jwt/auth; the default realm is GitLab's external_url:"
            )
            lines.append(f"# registry['token_realm'] = {_ruby(f'{parts.scheme}://{parts.netloc}')}")
    else:
        lines.append(
            f'# auth = "{site.auth}": geo-tui signs no tokens for this site; nothing to add for auth.'
        )
    if notify and config.notifications is not None:
        secret = config.notifications.secret.reveal()
        lines += [
            "# The Authorization value is the notification secret: keep this file private. If gitlab.rb",
            "# already sets registry['notifications'], add this hash to that list instead.",
            "registry['notifications'] = [",
            "  {",
            f"    'name' => {_ruby(ENDPOINT_NAME)},",
            f"    'url' => {_ruby(options.notification_url or '')},",
            f"    'timeout' => {_ruby(TIMEOUT)},",
            f"    'threshold' => {THRESHOLD},",
            f"    'backoff' => {_ruby(BACKOFF)},",
            "    # geo-tui acts on no blob or pull event: each is a delivery ahead of a push's event.",
            f"    'ignore' => {{ 'mediatypes' => [{_ruby(IGNORED_MEDIA_TYPE)}], "
            f"'actions' => [{_ruby(IGNORED_ACTION)}] }},",
            f"    'headers' => {{ 'Authorization' => [{_ruby(secret)}] }}",
            "  }",
            "]",
        ]
    if site.role == "secondary":
        lines.append(
            "# geo-tui does the replication: keep gitlab_rails['geo_registry_replication_enabled'] off here."
        )
    return "\n".join(lines) + "\n"
