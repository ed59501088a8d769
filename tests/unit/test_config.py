"""The config file: a valid one round-trips; each mistake is one clear ConfigError; no secret leaks."""

from __future__ import annotations

import base64
import copy
import os
import pickle
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import platformdirs
import pytest
import tomli_w
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geo_tui._config_document as config_document
from geo_tui.config import (
    Config,
    ConfigError,
    Secret,
    SiteConfig,
    load_config,
    redactor_for,
    resolve_config_path,
    warn_if_world_readable,
    write_config,
)

# Every secret in the test files carries MARKER, so one check proves none of them leaked.
MARKER = "MARKER-9c1e"
NOTIFY_SECRET = f"notify-{MARKER}-0123456789"
PASSWORD = f"basic-{MARKER}-pw"
FILE_SECRET = f"file-{MARKER}-abcdefghijkl"

Document = dict[str, Any]


@pytest.fixture(scope="module")
def key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def config_dir(tmp_path: Path, key_pem: bytes) -> Path:
    """A folder with the files a valid config refers to, by relative path."""
    folder = tmp_path / "conf"
    (folder / "keys").mkdir(parents=True)
    (folder / "keys" / "registry.key").write_bytes(key_pem)
    (folder / "notify.secret").write_text(FILE_SECRET + "\n")
    (folder / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    return folder


@pytest.fixture
def config_path(config_dir: Path) -> Path:
    return config_dir / "config.toml"


def valid_document() -> Document:
    return {
        "engine": {
            "database": "state/tracking.db",
            "repository_concurrency": 8,
            "blob_concurrency": 2,
            "replicate_deletions": False,
            "reconcile_interval": 120,
            "sync_attempts": 5,
            "min_transfer_rate": 1024,
            "max_job_duration": 900,
        },
        "auth": {
            "private_key": "keys/registry.key",
            "issuer": "gitlab-issuer",
            "service": "container_registry",
            "token_ttl": 600,
        },
        "notifications": {"listen": "127.0.0.1:5051", "secret": NOTIFY_SECRET},
        "primary": {"name": "primary", "registry": "https://primary.example.com:5050/", "auth": "jwt"},
        "secondaries": [
            {
                "name": "secondary-eu",
                "registry": "https://eu.example.com:5050",
                "auth": "jwt",
                "include": ["group/*"],
                "exclude": ["*/tmp-*"],
            },
            {
                "name": "secondary-us",
                "registry": "http://us.example.com/registry/",
                "auth": "basic",
                "username": "geo",
                "password": PASSWORD,
                "ca_file": "ca.pem",
            },
        ],
    }


def assert_no_secret(text: str) -> None:
    assert MARKER not in text
    assert "PRIVATE KEY" not in text


def load_error(path: Path, document: Document) -> ConfigError:
    write_config(path, document)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert_no_secret(str(error))
    assert_no_secret(repr(error))
    assert "\n" not in str(error)
    return error


# --- a valid file -----------------------------------------------------------------------------------------


def test_full_config_round_trips_with_mode_0600(config_path: Path, config_dir: Path, key_pem: bytes) -> None:
    write_config(config_path, valid_document())
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600

    config = load_config(config_path)

    assert config.path == config_path
    assert config.engine.database == config_dir / "state" / "tracking.db"
    assert (config.engine.repository_concurrency, config.engine.blob_concurrency) == (8, 2)
    assert config.engine.replicate_deletions is False
    assert config.engine.reconcile_interval == 120.0
    assert config.engine.sync_attempts == 5
    assert (config.engine.min_transfer_rate, config.engine.max_job_duration) == (1024.0, 900.0)
    assert config.auth is not None
    assert config.auth.private_key_path == config_dir / "keys" / "registry.key"
    assert config.auth.private_key_pem == key_pem
    assert (config.auth.issuer, config.auth.service, config.auth.token_ttl) == (
        "gitlab-issuer",
        "container_registry",
        600.0,
    )
    assert config.notifications is not None
    assert (config.notifications.listen_host, config.notifications.listen_port) == ("127.0.0.1", 5051)
    assert config.notifications.secret.reveal() == NOTIFY_SECRET
    assert config.primary.registry == "https://primary.example.com:5050"
    assert config.primary.role == "primary"
    eu, us = config.secondaries
    assert (eu.role, eu.auth, eu.include, eu.exclude) == ("secondary", "jwt", ("group/*",), ("*/tmp-*",))
    assert us.registry == "http://us.example.com/registry"
    assert us.username == "geo"
    assert us.password == Secret(PASSWORD)
    assert us.ca_file == config_dir / "ca.pem"
    assert us.tls_verify is True
    assert [s.name for s in config.sites] == ["primary", "secondary-eu", "secondary-us"]
    assert config.site("secondary-us") is us
    with pytest.raises(KeyError):
        config.site("nowhere")
    assert_no_secret(repr(config))
    assert_no_secret(str(config))


def test_minimal_config_takes_the_documented_defaults(config_path: Path) -> None:
    write_config(
        config_path,
        {
            "primary": {"name": "primary", "registry": "http://localhost:5000"},
            "secondaries": [{"name": "copy", "registry": "http://localhost:5001"}],
        },
    )
    config = load_config(config_path)
    assert config.engine.database == Path(platformdirs.user_data_dir("geo-tui")) / "tracking.db"
    assert config.engine.repository_concurrency == 10
    assert config.engine.blob_concurrency == 4
    assert config.engine.replicate_deletions is True
    assert config.engine.reconcile_interval == 600.0
    assert config.engine.sync_attempts == 3
    assert config.engine.min_transfer_rate == 64 * 1024 and config.engine.max_job_duration == 6 * 3600
    assert config.engine.max_catalog_pages == 10_000
    assert config.engine.max_tags_per_repository == 1_000_000
    assert config.engine.reconcile_requests_per_second == 200.0
    assert config.engine.lease_seconds == 60.0 and config.secondaries[0].max_repositories is None
    assert config.auth is None and config.notifications is None
    assert config.primary.auth == "none" and config.primary.password is None
    assert config.secondaries[0].include == () and config.secondaries[0].wants("any/thing")


def test_secrets_and_ipv6_listen_come_from_files(config_path: Path, config_dir: Path) -> None:
    document = valid_document()
    document["notifications"] = {"listen": "[::1]:9000", "secret_file": "notify.secret"}
    (config_dir / "pw").write_text(PASSWORD + "\r\n")
    del document["secondaries"][1]["password"]
    document["secondaries"][1]["password_file"] = str(config_dir / "pw")
    write_config(config_path, document)
    config = load_config(config_path)
    assert config.notifications is not None
    assert (config.notifications.listen_host, config.notifications.listen_port) == ("::1", 9000)
    assert config.notifications.secret.reveal() == FILE_SECRET
    assert config.secondaries[1].password == Secret(PASSWORD)


def test_home_in_paths_expands(config_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    document = valid_document()
    document["engine"]["database"] = "~/geo/tracking.db"
    write_config(config_path, document)
    assert load_config(config_path).engine.database == tmp_path / "geo" / "tracking.db"


def test_rsa_key_is_accepted(config_path: Path, config_dir: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # small: speed, not security
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    (config_dir / "keys" / "registry.key").write_bytes(pem)
    write_config(config_path, valid_document())
    config = load_config(config_path)
    assert config.auth is not None and config.auth.private_key_pem == pem


# --- mistakes: each names the file and the dotted key ------------------------------------------------------

Edit = Callable[[Document, Path], None]


def set_at(*path_and_value: Any) -> Edit:
    *keys, value = path_and_value

    def edit(document: Document, _: Path) -> None:
        target: Any = document
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


def delete_at(*keys: Any) -> Edit:
    def edit(document: Document, _: Path) -> None:
        target: Any = document
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return edit


def both(*edits: Edit) -> Edit:
    def edit(document: Document, folder: Path) -> None:
        for one in edits:
            one(document, folder)

    return edit


def write_file(name: str, content: bytes) -> Edit:
    def edit(_: Document, folder: Path) -> None:
        (folder / name).write_bytes(content)

    return edit


def secret_in_file(name: str, content: bytes) -> Edit:
    return both(
        delete_at("notifications", "secret"),
        set_at("notifications", "secret_file", name),
        write_file(name, content),
    )


def encrypted_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


def ed25519_key() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def secp256k1_key() -> bytes:
    return ec.generate_private_key(ec.SECP256K1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key() -> bytes:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


S1 = ("secondaries", 1)  # the basic-auth secondary
# fmt: off
MISTAKES: list[tuple[str, Edit, str | None, str]] = [
    # unknown keys, with a suggestion when one is close
    ("unknown top", set_at("secondary", [{}]),
     "secondary", "unknown key 'secondary' (did you mean 'secondaries'?)"),
    ("unknown engine", set_at("engine", "reconcile_intervall", 5),
     "engine.reconcile_intervall", "'reconcile_interval'"),
    ("unknown site", set_at(*S1, "passwd", "x"), "secondaries[1].passwd", "did you mean 'password'"),
    ("unknown nested", set_at("auth", "extra", {"a": 1}), "auth.extra", "unknown key 'extra'"),
    ("unknown many", both(set_at("engine", "foo", 1), set_at("engine", "bar", 2)),
     "engine", "unknown keys 'foo', 'bar'"),
    ("primary filters", set_at("primary", "include", ["a"]), "primary.include", "secondaries only"),
    ("lease too short", set_at("engine", "lease_seconds", 0), "engine.lease_seconds", "at least 1, got 0"),
    ("cap of none", set_at(*S1, "max_repositories", 0), "secondaries[1].max_repositories", "between 1 and"),
    ("cap on primary", set_at("primary", "max_repositories", 2), "primary.max_repositories", "unknown key"),
    # missing keys and sections
    ("no primary", delete_at("primary"), "primary", "missing"),
    ("no primary registry", delete_at("primary", "registry"), "primary.registry", "missing"),
    ("no primary name", delete_at("primary", "name"), "primary.name", "missing"),
    ("no secondaries", delete_at("secondaries"), "secondaries", "missing"),
    ("empty secondaries", set_at("secondaries", []), "secondaries", "at least one"),
    ("secondaries table", set_at("secondaries", {"name": "x"}), "secondaries", "array of tables"),
    ("secondary not table", set_at("secondaries", [1]), "secondaries[0]", "must be a table, got integer"),
    ("no site name", delete_at(*S1, "name"), "secondaries[1].name", "missing"),
    ("no site registry", delete_at("secondaries", 0, "registry"), "secondaries[0].registry", "missing"),
    ("jwt without auth", delete_at("auth"), "auth", 'uses auth = "jwt"'),
    ("no private key", delete_at("auth", "private_key"), "auth.private_key", "missing"),
    ("no issuer", delete_at("auth", "issuer"), "auth.issuer", "missing"),
    ("basic no username", delete_at(*S1, "username"), "secondaries[1].username", "missing"),
    ("basic no password", delete_at(*S1, "password"), "secondaries[1].password", "missing"),
    ("token half", both(set_at(*S1, "auth", "token"), delete_at(*S1, "username")),
     "secondaries[1].username", "missing"),
    ("password twice", set_at(*S1, "password_file", "pw"), "secondaries[1].password_file", "not both"),
    ("password on jwt", set_at("primary", "password", PASSWORD), "primary.password", "only used with"),
    ("no listen", delete_at("notifications", "listen"), "notifications.listen", "missing"),
    ("no secret", delete_at("notifications", "secret"), "notifications.secret", "missing"),
    ("secret twice", set_at("notifications", "secret_file", "notify.secret"),
     "notifications.secret_file", "not both"),
    # wrong types
    ("int as string", set_at("engine", "repository_concurrency", "10"),
     "engine.repository_concurrency", "must be an integer, got string"),
    ("bool is no int", set_at("engine", "sync_attempts", True),
     "engine.sync_attempts", "must be an integer, got boolean"),
    ("float is no int", set_at("engine", "blob_concurrency", 2.5), "engine.blob_concurrency", "got float"),
    ("bool as string", set_at("engine", "replicate_deletions", "yes"),
     "engine.replicate_deletions", "true or false"),
    ("interval type", set_at("engine", "reconcile_interval", "10m"),
     "engine.reconcile_interval", "must be a number"),
    ("section type", set_at("engine", 5), "engine", "must be a table, got integer"),
    ("primary array", set_at("primary", [{"name": "p"}]), "primary", "must be a table, got array"),
    ("secret type", set_at("notifications", "secret", 1234),
     "notifications.secret", "must be a string, got integer"),
    ("tls_verify type", set_at(*S1, "tls_verify", "false"), "secondaries[1].tls_verify", "true or false"),
    ("auth value", set_at("primary", "auth", "oauth"), "primary.auth", "must be one of"),
    ("include string", set_at("secondaries", 0, "include", "group/*"),
     "secondaries[0].include", "array of strings"),
    ("include item", set_at("secondaries", 0, "exclude", ["a", 1]),
     "secondaries[0].exclude[1]", "must be a string"),
    # out of range
    ("repos 0", set_at("engine", "repository_concurrency", 0),
     "engine.repository_concurrency", "between 1 and 256"),
    ("repos 257", set_at("engine", "repository_concurrency", 257),
     "engine.repository_concurrency", "got 257"),
    ("blobs 65", set_at("engine", "blob_concurrency", 65), "engine.blob_concurrency", "between 1 and 64"),
    ("interval 9", set_at("engine", "reconcile_interval", 9.5), "engine.reconcile_interval", "at least 10"),
    ("budget negative", set_at("engine", "reconcile_requests_per_second", -1),
     "engine.reconcile_requests_per_second", "at least 0"),
    ("budget type", set_at("engine", "reconcile_requests_per_second", "fast"),
     "engine.reconcile_requests_per_second", "must be a number"),
    ("interval inf", set_at("engine", "reconcile_interval", float("inf")),
     "engine.reconcile_interval", "finite"),
    ("attempts 21", set_at("engine", "sync_attempts", 21), "engine.sync_attempts", "between 1 and 20"),
    ("rate 0", set_at("engine", "min_transfer_rate", 0), "engine.min_transfer_rate", "at least 1"),
    ("rate text", set_at("engine", "min_transfer_rate", "64k"), "engine.min_transfer_rate", "a number"),
    ("job 0", set_at("engine", "max_job_duration", 0), "engine.max_job_duration", "at least 1"),
    ("job inf", set_at("engine", "max_job_duration", float("inf")), "engine.max_job_duration", "finite"),
    ("catalog pages 0", set_at("engine", "max_catalog_pages", 0),
     "engine.max_catalog_pages", "between 1 and 10000000"),
    ("catalog pages text", set_at("engine", "max_catalog_pages", "lots"),
     "engine.max_catalog_pages", "must be an integer"),
    ("tags 0", set_at("engine", "max_tags_per_repository", 0),
     "engine.max_tags_per_repository", "between 1 and 100000000"),
    ("tags float", set_at("engine", "max_tags_per_repository", 1.5),
     "engine.max_tags_per_repository", "must be an integer"),
    ("ttl 29", set_at("auth", "token_ttl", 29), "auth.token_ttl", "between 30 and 3600"),
    ("ttl 3601", set_at("auth", "token_ttl", 3601), "auth.token_ttl", "between 30 and 3600"),
    # registry URLs
    ("ftp url", set_at("primary", "registry", "ftp://primary.example.com"),
     "primary.registry", "http:// or https://"),
    ("bare host", set_at("primary", "registry", "primary.example.com:5050"), "primary.registry", "http://"),
    ("no host", set_at("primary", "registry", "https://"), "primary.registry", "no host"),
    ("no host port", set_at("primary", "registry", "https://:5050"), "primary.registry", "no host"),
    ("credentials", set_at(*S1, "registry", f"https://geo:{PASSWORD}@us.example.com"),
     "secondaries[1].registry", "credentials"),
    ("query", set_at("primary", "registry", "https://p.example.com/?x=1"), "primary.registry", "query"),
    ("fragment", set_at("primary", "registry", "https://p.example.com/#x"), "primary.registry", "fragment"),
    ("bad port", set_at("primary", "registry", "https://p.example.com:99999"), "primary.registry", "port"),
    ("space", set_at("primary", "registry", "https://p.example.com/a b"), "primary.registry", "spaces"),
    ("loop", set_at("secondaries", 0, "registry", "https://PRIMARY.example.com:5050/"),
     "secondaries[0].registry", "primary's registry"),
    ("loop default port",
     both(set_at("primary", "registry", "https://p.example.com"), set_at("secondaries", 0, "registry", "https://p.example.com:443")),
     "secondaries[0].registry", "primary's registry"),
    # key file
    ("key missing", set_at("auth", "private_key", "keys/nope.key"), "auth.private_key", "no such file"),
    ("key is dir", set_at("auth", "private_key", "keys"), "auth.private_key", "directory"),
    ("key not pem", write_file("keys/registry.key", b"not a key\n"),
     "auth.private_key", "not a PEM private key"),
    ("key public", write_file("keys/registry.key", public_key()),
     "auth.private_key", "not a PEM private key"),
    ("key encrypted", write_file("keys/registry.key", encrypted_key()), "auth.private_key", "encrypted"),
    ("key curve", write_file("keys/registry.key", secp256k1_key()), "auth.private_key", "cannot sign JWTs"),
    ("key ed25519", write_file("keys/registry.key", ed25519_key()),
     "auth.private_key", "Ed25519 keys are not supported"),
    # secret files
    ("secret file missing",
     both(delete_at("notifications", "secret"), set_at("notifications", "secret_file", "x")),
     "notifications.secret_file", "no such file"),
    ("secret file empty",
     secret_in_file("empty", b"\n"),
     "notifications.secret_file", "is empty"),
    ("secret file short",
     secret_in_file("short", f"{MARKER}\n".encode()),
     "notifications.secret_file", "too short"),
    ("secret short", set_at("notifications", "secret", MARKER), "notifications.secret", "too short"),
    ("password file missing", both(delete_at(*S1, "password"), set_at(*S1, "password_file", "nope")),
     "secondaries[1].password_file", "no such file"),
    ("password file empty",
     both(delete_at(*S1, "password"), set_at(*S1, "password_file", "empty"), write_file("empty", b"")),
     "secondaries[1].password_file", "is empty"),
    ("password empty", set_at(*S1, "password", ""), "secondaries[1].password", "empty"),
    # names
    ("dup primary name", set_at("secondaries", 0, "name", "primary"),
     "secondaries[0].name", "duplicate site name"),
    ("dup secondary name", set_at(*S1, "name", "secondary-eu"),
     "secondaries[1].name", "also used by secondaries[0]"),
    ("name leading dash", set_at("primary", "name", "-primary"), "primary.name", "not a valid site name"),
    ("name space", set_at(*S1, "name", "us east"), "secondaries[1].name", "not a valid site name"),
    ("name too long", set_at(*S1, "name", "a" * 64), "secondaries[1].name", "not a valid site name"),
    ("name slash", set_at(*S1, "name", "a/b"), "secondaries[1].name", "not a valid site name"),
    # listen
    ("listen no port", set_at("notifications", "listen", "localhost"), "notifications.listen", "host:port"),
    ("listen no host", set_at("notifications", "listen", ":5050"), "notifications.listen", "host:port"),
    ("listen port 0", set_at("notifications", "listen", "127.0.0.1:0"),
     "notifications.listen", "1 and 65535"),
    ("listen port big", set_at("notifications", "listen", "127.0.0.1:70000"),
     "notifications.listen", "1 and 65535"),
    ("listen ipv6", set_at("notifications", "listen", "::1:5050"), "notifications.listen", "brackets"),
    ("listen bad host", set_at("notifications", "listen", "a_b!:5050"),
     "notifications.listen", "not a host name"),
    # TLS
    ("ca missing", set_at(*S1, "ca_file", "nope.pem"), "secondaries[1].ca_file", "no such file"),
    ("ca and no verify", set_at(*S1, "tls_verify", False), "secondaries[1].ca_file", "tls_verify = false"),
    # token realms
    ("realm hosts on basic", set_at(*S1, "token_realm_hosts", ["auth.example.com"]),
     "secondaries[1].token_realm_hosts", 'only used with auth = "token"'),
    ("realm hosts a URL", both(set_at(*S1, "auth", "token"),
                               set_at(*S1, "token_realm_hosts", ["https://auth.example.com/token"])),
     "secondaries[1].token_realm_hosts[0]", "not a host name"),
    ("realm hosts a string", both(set_at(*S1, "auth", "token"), set_at(*S1, "token_realm_hosts", "auth")),
     "secondaries[1].token_realm_hosts", "array of strings"),
]
# fmt: on


@pytest.mark.parametrize(("edit", "key", "fragment"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_each_mistake_names_file_and_key_and_hides_secrets(
    config_path: Path, config_dir: Path, edit: Edit, key: str, fragment: str
) -> None:
    document = copy.deepcopy(valid_document())
    edit(document, config_dir)
    error = load_error(config_path, document)
    assert error.path == config_path
    assert error.key == key
    assert str(error).startswith(f"{config_path}: {key}: "), str(error)
    assert fragment in error.message, error.message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="no such file") as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: no such file"
    assert caught.value.key is None


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory") as caught:
        load_config(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path}: ")


def deny_reading(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 000, or, for root (whom modes do not stop), an open() that says permission denied."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    real_open = open

    def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(config_document, "open", guarded_open, raising=False)


def test_unreadable_config_file(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(config_path, valid_document())
    deny_reading(config_path, monkeypatch)
    with pytest.raises(ConfigError) as caught:
        load_config(config_path)
    assert str(caught.value) == f"{config_path}: permission denied"


def test_unreadable_key_file(config_path: Path, config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deny_reading(config_dir / "keys" / "registry.key", monkeypatch)
    error = load_error(config_path, valid_document())
    assert error.key == "auth.private_key"
    assert "permission denied" in error.message


def test_toml_syntax_error_gives_the_line(config_path: Path) -> None:
    config_path.write_text(f'[notifications]\nsecret = "{NOTIFY_SECRET}"\nlisten = \n')
    with pytest.raises(ConfigError) as caught:
        load_config(config_path)
    error = caught.value
    assert error.line == 3
    assert str(error).startswith(f"{config_path}:3: TOML syntax error: Invalid value")
    assert_no_secret(str(error))


def test_unterminated_string_points_at_the_end(config_path: Path) -> None:
    config_path.write_text('[primary]\nname = """p\n\n')
    with pytest.raises(ConfigError, match="Unterminated string") as caught:
        load_config(config_path)
    assert caught.value.line == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'a = "caf\xe9"\n', "not UTF-8"),
        (b"a = " + b"[" * 5000, "nested too deeply"),
        (b"a = " + b"1" * 5000, "too large"),
    ],
    ids=["latin-1", "deep", "huge-int"],
)
def test_hostile_documents_are_config_errors(config_path: Path, content: bytes, message: str) -> None:
    config_path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(config_path)


def test_relative_config_path_resolves_files_against_its_folder(
    config_path: Path, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(config_path, valid_document())
    monkeypatch.chdir(config_dir.parent)
    config = load_config(Path("conf/config.toml"))
    assert config.engine.database == config_dir / "state" / "tracking.db"


def test_config_error_pickles() -> None:
    error = ConfigError(Path("/x.toml"), "primary.registry", "has no host")
    again = pickle.loads(pickle.dumps(error))
    assert (again.path, again.key, again.message, str(again)) == (
        error.path,
        error.key,
        error.message,
        "/x.toml: primary.registry: has no host",
    )


# --- Secret ----------------------------------------------------------------------------------------------


def test_secret_never_shows_itself() -> None:
    secret = Secret(NOTIFY_SECRET)
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret])):
        assert text.endswith("Secret('********')]") or text == "Secret('********')"
        assert_no_secret(text)
    assert secret.reveal() == NOTIFY_SECRET
    assert secret == Secret(NOTIFY_SECRET) and secret != Secret("other") and secret != NOTIFY_SECRET
    assert len({secret, Secret(NOTIFY_SECRET)}) == 1


# --- the config path -------------------------------------------------------------------------------------


def test_cli_value_wins_over_environment() -> None:
    assert resolve_config_path("/cli.toml", {"GEO_TUI_CONFIG": "/env.toml"}) == Path("/cli.toml")


def test_environment_wins_over_default() -> None:
    assert resolve_config_path(None, {"GEO_TUI_CONFIG": "/env.toml"}) == Path("/env.toml")


def test_default_is_the_user_config_dir() -> None:
    expected = Path(platformdirs.user_config_dir("geo-tui")) / "config.toml"
    assert resolve_config_path(None, {}) == expected
    assert resolve_config_path("", {"GEO_TUI_CONFIG": ""}) == expected


def test_config_path_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_config_path("~/geo.toml", {}) == tmp_path / "geo.toml"


# --- include / exclude -----------------------------------------------------------------------------------


def site(include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> SiteConfig:
    return SiteConfig("s", "http://s", "none", "secondary", None, None, None, True, include, exclude)


@pytest.mark.parametrize(
    ("include", "exclude", "repository", "wanted"),
    [
        ((), (), "group/app", True),
        (("group/*",), (), "group/app", True),
        (("group/*",), (), "group/sub/app", True),  # "*" crosses "/"
        (("group/*",), (), "other/app", False),
        (("group/*",), (), "Group/app", False),  # case-sensitive, like repository names
        ((), ("*/tmp-*",), "group/tmp-build", False),
        ((), ("*/tmp-*",), "group/app", True),
        (("group/*",), ("group/*",), "group/app", False),  # exclude wins
        (("a", "b/?"), (), "b/1", True),
        (("a", "b/?"), (), "b/12", False),
    ],
)
def test_wants(include: tuple[str, ...], exclude: tuple[str, ...], repository: str, wanted: bool) -> None:
    assert site(include, exclude).wants(repository) is wanted


# --- writing ---------------------------------------------------------------------------------------------


def test_write_config_replaces_a_loose_file_with_a_0600_one(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text("old = 1\n")
    path.chmod(0o644)
    write_config(path, {"new": {"value": 2}})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "[new]\nvalue = 2\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]  # no temporary file left


def test_write_config_leaves_nothing_behind_when_toml_cannot_hold_the_data(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.toml"
    with pytest.raises(TypeError):
        write_config(path, {"bad": object()})
    assert not path.parent.exists()


# --- file permissions ------------------------------------------------------------------------------------


def test_warns_when_inline_secrets_are_readable_by_others(config_path: Path) -> None:
    write_config(config_path, valid_document())
    assert warn_if_world_readable(config_path) is None
    config_path.chmod(0o644)
    warning = warn_if_world_readable(config_path)
    assert warning is not None
    assert str(config_path) in warning and "chmod 600" in warning
    assert "notifications.secret" in warning and "secondaries[1].password" in warning
    assert "\n" not in warning
    assert_no_secret(warning)


def test_no_warning_when_secrets_live_in_files(config_path: Path) -> None:
    document = valid_document()
    document["notifications"] = {"listen": "127.0.0.1:5051", "secret_file": "notify.secret"}
    del document["secondaries"][1]
    write_config(config_path, document)
    config_path.chmod(0o644)
    assert warn_if_world_readable(config_path) is None
    assert warn_if_world_readable(config_path.parent / "missing.toml") is None


# --- nothing but ConfigError, whatever the file holds ------------------------------------------------------

KNOWN_KEYS = sorted(
    {"engine", "auth", "notifications", "primary", "secondaries", "name", "registry", "include", "exclude"}
    | {"database", "repository_concurrency", "blob_concurrency", "replicate_deletions", "reconcile_interval"}
    | {"reconcile_requests_per_second"}
    | {"sync_attempts", "private_key", "issuer", "service", "token_ttl", "listen", "secret", "secret_file"}
    | {"min_transfer_rate", "max_job_duration"}
    | {"username", "password", "password_file", "ca_file", "tls_verify"}
)
SAMPLE_STRINGS = [
    "jwt",
    "basic",
    "token",
    "none",
    "http://h",
    "https://h:1/p",
    "127.0.0.1:1",
    "~",
    ".",
    "",
    "/",
]
scalars = (
    st.text(max_size=12)
    | st.sampled_from(SAMPLE_STRINGS)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.booleans()
    | st.floats()
)
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=8)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
LENIENT = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def load_or_config_error(path: Path) -> None:
    try:
        load_config(path)
    except ConfigError as error:
        assert "\n" not in str(error)
        assert_no_secret(str(error))


@LENIENT
@given(document=st.dictionaries(keys, values, max_size=6))
def test_random_documents_raise_only_config_error(config_path: Path, document: Document) -> None:
    config_path.write_text(tomli_w.dumps(document))
    load_or_config_error(config_path)


_PRIMARY_KEYS = ("name", "registry", "auth", "username", "password", "password_file", "ca_file")
EDIT_PATHS = [
    ("engine",), ("auth",), ("notifications",), ("primary",), ("secondaries",),
    ("secondaries", 0), ("secondaries", 1),
    *[("engine", k) for k in ("database", "repository_concurrency", "reconcile_interval")],
    ("engine", "replicate_deletions"),
    *[("auth", k) for k in ("private_key", "issuer", "token_ttl")],
    *[("notifications", k) for k in ("listen", "secret", "secret_file")],
    *[(*site, k) for site in [("primary",), ("secondaries", 0), ("secondaries", 1)] for k in _PRIMARY_KEYS],
    *[("secondaries", 0, k) for k in ("include", "exclude")],
]  # fmt: skip


def walk(node: Any, step: str | int) -> Any:
    """One step down a document, or None where an earlier edit removed the way."""
    if isinstance(node, dict) and isinstance(step, str):
        return node.get(step)
    if isinstance(node, list) and isinstance(step, int) and step < len(node):
        return node[step]
    return None


@LENIENT
@given(edits=st.lists(st.tuples(st.sampled_from(EDIT_PATHS), st.none() | values), max_size=4))
def test_mangled_valid_documents_raise_only_config_error(
    config_path: Path, edits: list[tuple[tuple[Any, ...], Any]]
) -> None:
    document = valid_document()
    for path, value in edits:
        *parents, last = path
        target: Any = document
        for step in parents:
            target = walk(target, step)
        if isinstance(target, dict) and isinstance(last, str):
            target.pop(last, None) if value is None else target.__setitem__(last, value)
        elif isinstance(target, list) and isinstance(last, int) and last < len(target):
            target.pop(last) if value is None else target.__setitem__(last, value)
    config_path.write_text(tomli_w.dumps(document))
    load_or_config_error(config_path)


@LENIENT
@given(text=st.text() | st.binary().map(lambda b: b.decode("latin-1")))
def test_arbitrary_text_raises_only_config_error(config_path: Path, text: str) -> None:
    config_path.write_bytes(text.encode("utf-8", "surrogatepass"))
    load_or_config_error(config_path)


@LENIENT
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_config_error(config_path: Path, data: bytes) -> None:
    config_path.write_bytes(data)
    load_or_config_error(config_path)


def test_config_is_frozen(config_path: Path) -> None:
    write_config(config_path, valid_document())
    config: Config = load_config(config_path)
    with pytest.raises(AttributeError):
        config.primary.name = "other"  # type: ignore[misc]


def test_token_realm_hosts_are_read_in_lower_case(config_path: Path) -> None:
    document = valid_document()
    document["secondaries"][1]["auth"] = "token"
    document["secondaries"][1]["token_realm_hosts"] = ["Auth.Example.com", "10.0.0.7", "[::1]"]
    write_config(config_path, document)
    config = load_config(config_path)
    assert config.secondaries[1].token_realm_hosts == ("auth.example.com", "10.0.0.7", "::1")
    assert config.secondaries[0].token_realm_hosts == ()


def test_the_redactor_knows_every_secret_of_the_config(config_path: Path, config_dir: Path) -> None:
    document = valid_document()
    document["notifications"] = {"listen": "127.0.0.1:5051", "secret_file": "notify.secret"}
    document["api"] = {
        "listen": "127.0.0.1:5052",
        "token": f"full-{MARKER}-0123456789",
        "read_token_file": "rt",
    }
    (config_dir / "rt").write_text(f"read-{MARKER}-0123456789\n")
    write_config(config_path, document)
    config = load_config(config_path)
    assert config.auth is not None
    pem = config.auth.private_key_pem.decode()
    body = [line for line in pem.splitlines() if "-----" not in line]
    redact = redactor_for(config).redact
    for value in (FILE_SECRET, f"full-{MARKER}-0123456789", f"read-{MARKER}-0123456789", PASSWORD):
        assert redact(f"echo {value} .") == "echo [redacted] ."
    basic = base64.b64encode(f"geo:{PASSWORD}".encode()).decode()
    assert redact(f"got {basic}") == "got [redacted]"
    assert "PRIVATE KEY" not in redact(pem) and body[1] not in redact(pem)
    assert redact(f"line {body[1]} of the key") == "line [redacted] of the key"
