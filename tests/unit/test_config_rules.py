"""Each config rule is written once (geo_tui.config.rules) and applied from two places: a key of the config
file, whose error names the file and the dotted key, and a flag of `geo-tui init`, whose error names the
flag. The same bad value gives the same reason from both."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given
from hypothesis import strategies as st

from geo_tui.cli import _parser
from geo_tui.config import AuthMethod, ConfigError, load_config, rules, write_config
from geo_tui.setup.flags import InitFlag, SetupError
from geo_tui.setup.init import plan_from_flags
from geo_tui.setup.keys import load_signing_key

SECRET = "hunter2-c0ffee"
PRIMARY = "https://p.example.com"


def pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def document(folder: Path) -> dict[str, Any]:
    (folder / "registry.key").write_bytes(pem(ec.generate_private_key(ec.SECP256R1())))
    return {
        "auth": {"private_key": "registry.key", "issuer": "gitlab-issuer"},
        "notifications": {"listen": "127.0.0.1:5050", "secret": "s" * 32},
        "primary": {"name": "primary", "registry": PRIMARY, "auth": "jwt"},
        "secondaries": [{"name": "eu", "registry": "https://eu.example.com", "auth": "jwt"}],
    }


def init_flags(folder: Path, *extra: str) -> list[str]:
    return [
        "init",
        "--non-interactive",
        "--config",
        str(folder / "init.toml"),
        "--primary",
        PRIMARY,
        "--secondary",
        "eu=https://eu.example.com",
        "--token-realm",
        "https://gitlab.example.com/jwt/auth",
        *extra,
    ]


Edit = Callable[[dict[str, Any], Path], None]


def set_key(section: str, *path: Any) -> Edit:
    """``set_key("primary", "name", value)`` or ``set_key("secondaries", 0, "registry", value)``."""

    def edit(doc: dict[str, Any], folder: Path) -> None:
        table = doc[section]
        for step in path[:-2]:
            table = table[step]
        table[path[-2]] = path[-1]

    return edit


def ed25519_key(doc: dict[str, Any], folder: Path) -> None:
    (folder / "registry.key").write_bytes(pem(ed25519.Ed25519PrivateKey.generate()))


def secp256k1_key(doc: dict[str, Any], folder: Path) -> None:
    (folder / "registry.key").write_bytes(pem(ec.generate_private_key(ec.SECP256K1())))


# (rule, config edit, the key it names, init flags, the flag it names, the reason both give)
# fmt: off
P, S0, N = "primary", ("secondaries", 0), "notifications"
CASES: list[tuple[str, Edit, str, list[str], str, str]] = [
    ("site name", set_key(P, "name", "-p"), "primary.name",
     ["--primary-name=-p"], "--primary-name '-p'", "not a valid site name"),
    ("URL scheme", set_key(P, "registry", "ftp://p.example.com"), "primary.registry",
     ["--primary", "ftp://p.example.com"], "--primary 'ftp://p.example.com'",
     "must be an http:// or https:// URL"),
    ("URL spaces", set_key(*S0, "registry", "https://e.example.com/a b"), "secondaries[0].registry",
     ["--secondary", "us=https://e.example.com/a b"], "--secondary us 'https://e.example.com/a b'",
     "must not contain spaces"),
    ("URL query", set_key(P, "registry", "https://p.example.com/?x=1"), "primary.registry",
     ["--token-realm", "https://g.example.com/?x=1"], "--token-realm 'https://g.example.com/?x=1'",
     "must not have a query string"),
    ("URL port", set_key(P, "registry", "https://p.example.com:99999"), "primary.registry",
     ["--notification-url", "https://n.example.com:99999"],
     "--notification-url 'https://n.example.com:99999'", "is not a valid URL (check the host and port)"),
    ("URL credentials", set_key(*S0, "registry", f"https://geo:{SECRET}@e.example.com"),
     "secondaries[0].registry",
     ["--secondary", f"us=https://geo:{SECRET}@e.example.com"], "--secondary us",
     "must not contain credentials"),
    ("loop", set_key(*S0, "registry", "https://P.example.com:443/"), "secondaries[0].registry",
     ["--secondary", "us=https://P.example.com:443/"], "--secondary 'us'", "is the primary's registry"),
    ("auth", set_key(P, "auth", "kerberos"), "primary.auth",
     ["--auth", "kerberos"], "--auth 'kerberos'", "must be one of jwt, token, basic, none"),
    ("listen brackets", set_key(N, "listen", "::1:5050"), "notifications.listen",
     ["--listen", "::1:5050"], "--listen '::1:5050'", "put an IPv6 address in brackets"),
    ("listen port", set_key(N, "listen", "127.0.0.1:70000"), "notifications.listen",
     ["--listen", "127.0.0.1:70000"], "--listen '127.0.0.1:70000'",
     "port must be between 1 and 65535, got 70000"),
    ("listen host", set_key(N, "listen", "a_b!:5050"), "notifications.listen",
     ["--listen", "a_b!:5050"], "--listen 'a_b!:5050'", "'a_b!' is not a host name or address"),
    ("listen v6", set_key(N, "listen", "[::g]:5050"), "notifications.listen",
     ["--listen", "[::g]:5050"], "--listen '[::g]:5050'", "'::g' is not an IPv6 address"),
    ("issuer", set_key("auth", "issuer", "  "), "auth.issuer",
     ["--issuer", "  "], "--issuer", "must be printable and not empty"),
    ("service", set_key("auth", "service", "geo\tregistry"), "auth.service",
     ["--service", "geo\tregistry"], "--service", "must be printable and not empty"),
]
# fmt: on


def config_refusal(folder: Path, edit: Edit) -> ConfigError:
    doc = document(folder)
    edit(doc, folder)
    path = folder / "config.toml"
    write_config(path, doc)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


def init_refusal(folder: Path, argv: list[str]) -> list[str]:
    """The lines of init's refusal (it lists every bad flag at once)."""
    with pytest.raises(SetupError) as caught:
        plan_from_flags(_parser().parse_args(init_flags(folder, *argv)), folder / "init.toml")
    return str(caught.value).splitlines()


@pytest.mark.parametrize(
    ("edit", "key", "argv", "flag", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_rule_names_the_key_in_the_file_and_the_flag_of_init(
    tmp_path: Path, edit: Edit, key: str, argv: list[str], flag: str, reason: str
) -> None:
    error = config_refusal(tmp_path, edit)
    assert error.key == key and error.path == tmp_path / "config.toml"
    assert reason in error.message, error.message
    lines = init_refusal(tmp_path, argv)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{flag}: ") and reason in lines[0], lines[0]
    # One rule: the same words after the place, whichever place it is.
    assert lines[0].removeprefix(f"{flag}: ") == error.message
    assert SECRET not in str(error) + lines[0]
    assert not (tmp_path / "init.toml").exists()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (ed25519_key, "Ed25519 keys are not supported: only RSA and EC keys can sign registry tokens"),
        (
            lambda doc, folder: (folder / "registry.key").write_bytes(
                pem(ec.generate_private_key(ec.SECP256K1()))
            ),
            "EC curve secp256k1 cannot sign JWTs",
        ),
        (lambda doc, folder: (folder / "registry.key").write_text("not a key\n"), "not a PEM private key"),
    ],
)
def test_the_signing_key_rule_names_auth_private_key_or_the_key_flag(
    tmp_path: Path, make: Edit, reason: str
) -> None:
    key = tmp_path / "registry.key"
    error = config_refusal(tmp_path, make)
    assert error.key == "auth.private_key" and error.message.startswith(f"{key}: ")
    assert reason in error.message
    with pytest.raises(SetupError) as caught:
        load_signing_key(key)
    assert str(caught.value) == f"--key {error.message}"


def test_init_writes_what_the_loader_reads_back(tmp_path: Path) -> None:
    """The rules normalise (scheme case, trailing slash) the same way for both places."""
    args = init_flags(tmp_path, "--secondary", "us=HTTP://us.example.com/registry/", "--listen", "[::1]:6000")
    plan = plan_from_flags(_parser().parse_args(args), tmp_path / "init.toml")
    assert plan.secondaries[1].registry == "http://us.example.com/registry"
    assert plan.listen == ("::1", 6000)


@given(
    host=st.sampled_from(["127.0.0.1", "0.0.0.0", "localhost", "geo.example.com", "::1", "::", "fe80::1"]),
    port=st.integers(1, 65535),
)
def test_a_printed_listen_address_reads_back(host: str, port: int) -> None:
    printed = rules.host_port(host, port)
    assert rules.listen_address(printed, InitFlag("--listen")) == (host, port)
    assert ("[" in printed) == (":" in host)


def test_init_flag_hides_a_url_that_may_hold_credentials() -> None:
    assert str(InitFlag.quoting("--primary", f"https://u:{SECRET}@h").error("no")) == "--primary: no"
    assert str(InitFlag.quoting("--primary", "https://h").error("no")) == "--primary 'https://h': no"


@pytest.mark.parametrize(
    ("auth", "username", "password", "expected"),
    [
        ("jwt", False, False, None),
        ("none", True, False, rules.CredentialsProblem.NOT_USED),
        ("jwt", False, True, rules.CredentialsProblem.NOT_USED),
        ("basic", False, True, rules.CredentialsProblem.BASIC_NEEDS_USERNAME),
        ("basic", True, False, rules.CredentialsProblem.BASIC_NEEDS_PASSWORD),
        ("basic", True, True, None),
        ("token", False, False, None),
        ("token", True, False, rules.CredentialsProblem.HALF_A_PAIR),
        ("token", False, True, rules.CredentialsProblem.HALF_A_PAIR),
        ("token", True, True, None),
    ],
)
def test_the_credentials_rule_the_loader_and_init_share(
    auth: AuthMethod, username: bool, password: bool, expected: rules.CredentialsProblem | None
) -> None:
    assert rules.credentials_problem(auth, username=username, password=password) is expected


def test_a_site_name_is_owned_once() -> None:
    owners = {"primary": "primary", "eu": "secondaries[0]"}
    assert rules.site_name_owner("eu", owners) == "secondaries[0]"
    assert rules.site_name_owner("us", owners) is None
