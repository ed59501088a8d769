"""The registry snippets `geo-tui init` prints: valid YAML with the exact keys and values Distribution
needs, and gitlab.rb lines with GitLab's keys."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from geo_tui.config import Config
from geo_tui.engine.intake import NOTIFICATION_STORE_TIMEOUT, WRITE_MARGIN
from geo_tui.setup.plan import SetupPlan, SitePlan, execute_plan
from geo_tui.setup.snippets import (
    TIMEOUT,
    TIMEOUT_SECONDS,
    SnippetOptions,
    notification_url_for,
    site_snippets,
)

REALM = "https://gitlab.example.com/jwt/auth"
NOTIFY_URL = "https://geo.example.com:5050/api/v4/container_registry_event/events"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Config:
    folder = tmp_path_factory.mktemp("snippets")
    key = folder / "it's a key.pem"  # a quote in the path: the snippets must still parse
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    plan = SetupPlan(
        config_path=folder / "geo" / "config.toml",
        primary=SitePlan("primary", "https://registry.example.com"),
        secondaries=(SitePlan("eu", "https://eu.example.com:5050"), SitePlan("us", "https://us.example.com")),
        key=key,
        token_realm=REALM,
        notification_url=NOTIFY_URL,
        gitlab_sites=frozenset({"primary", "us"}),
    )
    return execute_plan(plan).config


def options(config: Config, gitlab: frozenset[str] = frozenset()) -> SnippetOptions:
    return SnippetOptions(config.path.parent / "registry.crt", REALM, NOTIFY_URL, gitlab)


def test_distribution_snippets_are_yaml_with_the_exact_keys(written: Config) -> None:
    snippets = {s.site: s for s in site_snippets(written, options(written))}
    assert list(snippets) == ["primary", "eu", "us"]
    secret = written.notifications.secret.reveal() if written.notifications else ""
    primary = yaml.safe_load(snippets["primary"].text)
    assert primary == {
        "auth": {
            "token": {
                "realm": REALM,
                "service": "container_registry",
                "issuer": "gitlab-issuer",
                "rootcertbundle": str(written.path.parent / "registry.crt"),
            }
        },
        "notifications": {
            "endpoints": [
                {
                    "name": "geo_tui",
                    "url": NOTIFY_URL,
                    "headers": {"Authorization": [secret]},
                    "timeout": "5s",
                    "threshold": 5,
                    "backoff": "1s",
                    "ignore": {"mediatypes": ["application/octet-stream"], "actions": ["pull"]},
                }
            ]
        },
    }
    assert snippets["primary"].holds_secret and snippets["primary"].filename == "primary.registry.yml"
    eu = yaml.safe_load(snippets["eu"].text)
    assert eu == {"auth": primary["auth"]}  # secondaries trust the same key and get no notifications
    assert secret not in snippets["eu"].text and not snippets["eu"].holds_secret
    assert "storage.delete.enabled: true" in snippets["eu"].text


def test_gitlab_snippets_use_gitlab_rb_keys(written: Config) -> None:
    snippets = {s.site: s for s in site_snippets(written, options(written, frozenset({"primary", "us"})))}
    assert [snippets[n].kind for n in ("primary", "eu", "us")] == ["gitlab", "distribution", "gitlab"]
    assert snippets["primary"].filename == "primary.gitlab.rb"
    rb = snippets["primary"].text
    secret = written.notifications.secret.reveal() if written.notifications else ""
    assert written.auth is not None
    key = str(written.auth.private_key_path).replace("'", "\\'")
    assert f"registry['internal_key'] = File.read('{key}')" in rb
    assert "registry['internal_certificate'] = File.read(" in rb
    assert "gitlab_rails['registry_issuer'] = 'gitlab-issuer'" in rb
    assert "# registry['token_realm'] = 'https://gitlab.example.com'" in rb
    block = rb[rb.index("registry['notifications'] = [") :]
    for line in (
        "'name' => 'geo_tui',",
        f"'url' => '{NOTIFY_URL}',",
        "'timeout' => '5s',",
        "'threshold' => 5,",
        "'backoff' => '1s',",
        "'ignore' => { 'mediatypes' => ['application/octet-stream'], 'actions' => ['pull'] },",
        f"'headers' => {{ 'Authorization' => ['{secret}'] }}",
    ):
        assert line in block
    us = snippets["us"].text
    assert "registry['notifications']" not in us and secret not in us
    assert "geo_registry_replication_enabled" in us
    # No private key material is ever printed: the key is read from its file on the GitLab node.
    assert "PRIVATE KEY" not in rb + us


def test_non_jwt_sites_get_no_auth_section(written: Config) -> None:
    from dataclasses import replace

    eu = replace(written.secondaries[0], auth="basic")
    config = replace(written, secondaries=(eu, *written.secondaries[1:]))
    text = site_snippets(config, options(config))[1].text
    assert yaml.safe_load(text) is None  # comments only
    assert 'auth = "basic"' in text


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 5050, "http://127.0.0.1:5050/api/v4/container_registry_event/events"),
        ("::1", 6000, "http://[::1]:6000/api/v4/container_registry_event/events"),
    ],
)
def test_notification_url_from_listen(host: str, port: int, url: str) -> None:
    assert notification_url_for(host, port) == url


def test_listening_everywhere_gives_the_registry_a_host_name(tmp_path: Path) -> None:
    plan = SetupPlan(
        config_path=tmp_path / "c.toml",
        primary=SitePlan("p", "http://a"),
        secondaries=(SitePlan("s", "http://b"),),
        listen=("0.0.0.0", 5050),
    )
    url = plan.effective_notification_url
    assert url == f"http://{socket.getfqdn()}:5050/api/v4/container_registry_event/events"
    assert not re.search(r"//0\.0\.0\.0", url)


def test_the_primary_waits_for_the_receiver_s_answer_longer_than_the_receiver_may_take() -> None:
    # The receiver answers once the events are stored: 200, or 503 after its store deadline. A registry
    # timing out before that sends an event that may be stored already again, every event behind it waiting.
    assert TIMEOUT == f"{TIMEOUT_SECONDS}s"
    assert TIMEOUT_SECONDS > NOTIFICATION_STORE_TIMEOUT + WRITE_MARGIN
