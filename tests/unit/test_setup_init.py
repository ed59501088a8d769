"""`geo-tui init` as an operator meets it: flags, prompts, refusals, file modes, and a config that loads."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pexpect
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from geo_tui.cli import main
from geo_tui.config import load_config
from geo_tui.setup.init import run_init
from geo_tui.setup.prompts import Asker

ROOT = Path(__file__).resolve().parents[2]
REALM = "https://gitlab.example.com/jwt/auth"


@pytest.fixture(scope="module")
def ec_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An existing key (fast to make), so most tests skip generating RSA 4096."""
    path = tmp_path_factory.mktemp("keys") / "gitlab-registry.key"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    return path


def flags(folder: Path, *extra: str) -> list[str]:
    return [
        "init",
        "--non-interactive",
        "--config",
        str(folder / "config.toml"),
        "--primary",
        "https://registry.example.com",
        "--secondary",
        "eu=https://eu.example.com:5050",
        "--token-realm",
        REALM,
        *extra,
    ]


def run(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_generated_setup_loads_with_modes_0600_and_0644(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "geo"
    code, out, err = run(
        capsys, flags(folder, "--secondary", "us=https://us.example.com", "--listen", "0.0.0.0:6000")
    )
    assert code == 0, err
    config = load_config(folder / "config.toml")
    assert [s.name for s in config.sites] == ["primary", "eu", "us"]
    assert all(s.auth == "jwt" for s in config.sites)
    assert config.auth is not None and config.auth.issuer == "gitlab-issuer"
    assert (
        config.auth.service == "container_registry"
        and config.auth.private_key_path == folder / "registry.key"
    )
    assert config.notifications is not None and config.notifications.listen_port == 6000
    secret = config.notifications.secret.reveal()
    assert len(secret) >= 32 and secret[0].isalpha() and secret.isalnum()
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert modes == {"config.toml": 0o600, "registry.key": 0o600, "registry.crt": 0o644}
    assert f'Authorization: ["{secret}"]' in out  # printed once, to the operator, in the snippet
    assert secret not in err
    assert "doctor" in out and "RSA 4096" in out


def test_an_existing_key_is_used_in_place(
    tmp_path: Path, ec_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = ec_key.read_bytes()
    code, out, err = run(capsys, flags(tmp_path, "--key", str(ec_key)))
    assert code == 0, err
    config = load_config(tmp_path / "config.toml")
    assert config.auth is not None and config.auth.private_key_path == ec_key
    assert ec_key.read_bytes() == before and not (tmp_path / "registry.key").exists()
    assert (tmp_path / "registry.crt").exists() and "using the existing private key" in out


def test_nothing_is_overwritten_without_force(
    tmp_path: Path, ec_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, flags(tmp_path, "--key", str(ec_key)))[0] == 0
    files = {p: p.read_bytes() for p in tmp_path.iterdir()}
    code, out, err = run(capsys, flags(tmp_path, "--key", str(ec_key)))
    assert code == 2 and out == ""
    assert (
        err == f"geo-tui: the config {tmp_path / 'config.toml'} already exists; use --force to replace it\n"
    )
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == files
    # A lone certificate (say, from an earlier setup) is refused the same way, before anything is written.
    (tmp_path / "config.toml").unlink()
    code, _, err = run(capsys, flags(tmp_path, "--key", str(ec_key)))
    assert code == 2 and "the certificate" in err and "registry.crt already exists" in err
    assert not (tmp_path / "config.toml").exists()
    code, _, err = run(capsys, flags(tmp_path, "--key", str(ec_key), "--force"))
    assert code == 0, err
    assert (tmp_path / "config.toml").read_bytes() != files[tmp_path / "config.toml"]  # a new secret


def test_a_generated_key_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "registry.key").write_text("precious\n")
    code, _, err = run(capsys, flags(tmp_path))
    assert code == 2 and err.strip() == (
        f"geo-tui: the private key {tmp_path / 'registry.key'} already exists; use --force to replace it"
    )
    assert (tmp_path / "registry.key").read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry.key"]


def test_every_missing_required_flag_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, ["init", "--non-interactive", "--config", str(tmp_path / "c.toml")])
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["--primary", "--secondary", "--token-realm"]
    assert all(line.startswith("geo-tui: ") and "missing" in line for line in lines)
    code, _, err = run(capsys, flags(tmp_path)[:-2])  # without --token-realm
    assert code == 2 and err.startswith("geo-tui: --token-realm: missing") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--primary", "ftp://registry"], "--primary 'ftp://registry': must be an http:// or https:// URL"),
        (["--primary", "https://u:pw@registry"], "--primary: the URL must not contain credentials"),
        (["--secondary", "eu"], "--secondary 'eu': expected NAME=VALUE"),
        (["--secondary", "eu=https://other.example.com"], "--secondary 'eu': given twice"),
        (["--secondary", "bad name=https://x"], "--secondary 'bad name': not a valid site name"),
        (["--secondary", "us=https://registry.example.com/"], "--secondary 'us': is the primary's registry"),
        (
            ["--secondary", "primary=https://x.example.com"],
            "--secondary 'primary': the site name is used twice",
        ),
        (["--auth", "kerberos"], "--auth 'kerberos': must be one of jwt, token, basic, none"),
        (["--auth", "mars=none"], "--auth mars: no site of that name"),
        (["--auth", "eu=basic"], "--auth eu=basic: needs --username eu=USER and --password-file eu=PATH"),
        (["--listen", "5050"], "--listen '5050': must be host:port"),
        (["--listen", "::1:5050"], "--listen '::1:5050': put an IPv6 address in brackets"),
        (
            ["--token-realm", "gitlab/jwt/auth"],
            "--token-realm 'gitlab/jwt/auth': must be an http:// or https://",
        ),
        (["--gitlab", "asia"], "--gitlab asia: no site of that name"),
        (["--key", "/nonexistent/registry.key"], "--key /nonexistent/registry.key: no such file"),
        (["--issuer", " "], "--issuer: must be printable and not empty"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], expected: str
) -> None:
    code, out, err = run(capsys, [*flags(tmp_path / "geo"), *extra])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"geo-tui: {expected}"), err
    assert "pw" not in err
    assert not (tmp_path / "geo").exists()


def test_token_and_basic_sites_get_their_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = tmp_path / "eu.password"
    password.write_text("hunter2-secret\n")
    args = [
        *flags(tmp_path),
        "--auth",
        "eu=basic",
        "--username",
        "eu=mirror",
        "--password-file",
        f"eu={password}",
    ]
    code, out, err = run(capsys, args)
    assert code == 0, err
    config = load_config(tmp_path / "config.toml")
    eu = config.site("eu")
    assert eu.auth == "basic" and eu.username == "mirror" and eu.password is not None
    assert eu.password.reveal() == "hunter2-secret" and "hunter2" not in out + err
    assert "hunter2" not in (tmp_path / "config.toml").read_text()  # referenced by path, not copied


def test_without_a_terminal_init_asks_for_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, ["init", "--config", str(tmp_path / "c.toml")])
    assert code == 2 and "not a terminal" in err and "--non-interactive" in err and err.count("\n") == 1


def test_prompts_check_each_answer_and_ask_again(tmp_path: Path, ec_key: Path) -> None:
    answers = [
        "ftp://nope",  # primary URL: refused, asked again
        "https://registry.example.com",
        "",  # primary name: default
        "primary",  # secondary name: taken by the primary
        "eu",
        "not a url",
        "https://eu.example.com",
        "maybe",  # add another? -> y or n
        "n",
        "",  # auth: jwt
        str(tmp_path / "missing.key"),
        str(ec_key),
        "",  # issuer
        "",  # service
        "",  # realm: required
        REALM,
        "localhost",  # listen: refused
        "127.0.0.1:7000",
        "",  # notification URL: default from listen
        "asia",  # GitLab sites: unknown
        "",
    ]
    output = io.StringIO()
    parser_args = main_parser_args(["init", "--config", str(tmp_path / "geo" / "config.toml")])
    code = run_init(
        parser_args, stdout=output, stderr=output, asker=Asker(io.StringIO("\n".join(answers) + "\n"), output)
    )
    text = output.getvalue()
    assert code == 0, text
    for complaint in (
        "must be an http:// or https:// URL",
        "name 'primary': already used by another site",
        "answer y or n",
        "missing.key: no such file",
        "realm: an answer is needed",
        "must be host:port",
        "no site named asia",
    ):
        assert complaint in text
    assert "Primary site name [primary]:" in text and "Token issuer [gitlab-issuer]:" in text
    config = load_config(tmp_path / "geo" / "config.toml")
    assert [s.name for s in config.sites] == ["primary", "eu"]
    assert config.notifications is not None and config.notifications.listen_port == 7000
    assert "http://127.0.0.1:7000/api/v4/container_registry_event/events" in text


def main_parser_args(argv: list[str]) -> object:
    from geo_tui.cli import _parser

    return _parser().parse_args(argv)


def test_interactive_init_on_a_real_terminal(tmp_path: Path, ec_key: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    config = tmp_path / "config.toml"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "geo_tui", "init", "--config", str(config), "--key", str(ec_key), "--token-realm", REALM],
        env=env,
        encoding="utf-8",
        timeout=30,
    )
    try:
        child.expect_exact("Primary registry URL: ")
        child.sendline("https://registry.example.com")
        child.expect_exact("Primary site name [primary]: ")
        child.sendline("")
        child.expect_exact("Secondary 1 name [secondary-1]: ")
        child.sendline("")
        child.expect_exact("Secondary 'secondary-1' registry URL: ")
        child.sendline("https://eu.example.com")
        child.expect_exact("Add another secondary? (y/n) [n]: ")
        child.sendline("")
        for _ in range(7):  # auth, key, issuer, service, realm, listen, URL: the defaults (flags) shown
            child.expect(r"\[[^\]]+\]: ")
            child.sendline("")
        child.expect_exact("Sites run by GitLab, comma-separated (empty: none): ")
        child.sendline("")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    loaded = load_config(config)
    assert loaded.secondaries[0].name == "secondary-1" and loaded.auth is not None
    assert loaded.auth.private_key_path == ec_key


def test_an_unwritable_place_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where a folder should be: not writable even for root
    code, out, err = run(capsys, flags(blocker / "geo"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "cannot write" in err and str(blocker / "geo") in err, err


def test_snippets_dir_gets_0600_files_and_stdout_only_names_them(
    tmp_path: Path, ec_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snippets = tmp_path / "snippets"
    args = [
        *flags(tmp_path / "geo", "--key", str(ec_key), "--gitlab", "primary"),
        "--snippets-dir",
        str(snippets),
    ]
    code, out, err = run(capsys, args)
    assert code == 0, err
    files = {p.name: p.stat().st_mode & 0o777 for p in snippets.iterdir()}
    assert files == {"primary.gitlab.rb": 0o600, "eu.registry.yml": 0o600}
    secret = load_config(tmp_path / "geo" / "config.toml").notifications
    assert secret is not None and secret.secret.reveal() not in out
    assert str(snippets / "primary.gitlab.rb") in out and str(snippets / "eu.registry.yml") in out
    # Another run into the same folder is refused before it writes anything, naming the snippet.
    (tmp_path / "geo2").mkdir()
    args = [*flags(tmp_path / "geo2", "--key", str(ec_key)), "--snippets-dir", str(snippets)]
    code, _, err = run(capsys, args)
    assert code == 2 and f"the snippet {snippets / 'primary.gitlab.rb'} already exists" in err
    assert not any((tmp_path / "geo2").iterdir())
