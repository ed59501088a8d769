"""The shared key pair and the notification secret that `geo-tui init` makes or takes."""

from __future__ import annotations

import os
import string
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from geo_tui.registry import Scope, TokenSigner, libtrust_key_id
from geo_tui.setup.keys import (
    SetupError,
    generate_notification_secret,
    generate_signing_key,
    load_signing_key,
    private_key_pem,
    self_signed_certificate,
    write_new_file,
)


@given(st.integers(min_value=32, max_value=256))
def test_notification_secret_is_alphanumeric_starts_with_a_letter_and_is_long(length: int) -> None:
    secret = generate_notification_secret(length)
    assert len(secret) == length >= 32
    assert secret[0] in string.ascii_letters
    assert all(c in string.ascii_letters + string.digits for c in secret)


def test_default_secret_is_long_and_never_repeats() -> None:
    secrets = {generate_notification_secret() for _ in range(50)}
    assert len(secrets) == 50 and all(len(s) >= 32 for s in secrets)
    with pytest.raises(ValueError):
        generate_notification_secret(31)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


def test_generated_key_is_rsa_4096_its_certificate_matches_and_geo_tui_signs_with_it(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    assert rsa_key.key_size == 4096
    cert = x509.load_pem_x509_certificate(self_signed_certificate(rsa_key, common_name="geo-tui test"))
    assert cert.public_key() == rsa_key.public_key()
    assert cert.subject == cert.issuer
    assert cert.subject.rfc4514_string() == "CN=geo-tui test"
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert days == 3650
    signer = TokenSigner(private_key_pem(rsa_key), issuer="gitlab-issuer", service="container_registry")
    token, _ = signer.mint([Scope.repository("group/app", "pull")])
    # What Distribution does with the rootcertbundle: find the key by kid, verify with the certificate's key.
    assert jwt.get_unverified_header(token)["kid"] == libtrust_key_id(cert.public_key())
    claims = jwt.decode(token, cert.public_key(), algorithms=["RS256"], audience="container_registry")  # type: ignore[arg-type]
    assert claims["iss"] == "gitlab-issuer"


@pytest.mark.parametrize(
    "make",
    [
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        lambda: ec.generate_private_key(ec.SECP256R1()),
        lambda: ec.generate_private_key(ec.SECP384R1()),
    ],
    ids=["rsa-2048", "ec-p256", "ec-p384"],
)
def test_existing_rsa_and_ec_keys_load_and_get_a_matching_certificate(tmp_path: Path, make: object) -> None:
    key = make()  # type: ignore[operator]
    path = tmp_path / "gitlab-registry.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    loaded, pem = load_signing_key(path)
    assert pem == path.read_bytes()
    cert = x509.load_pem_x509_certificate(self_signed_certificate(loaded, common_name="x"))
    assert cert.public_key() == key.public_key()
    TokenSigner(pem, issuer="i", service="s").mint([Scope.CATALOG])


def test_unusable_keys_are_one_line_naming_the_flag_and_file(tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    edwards = tmp_path / "ed25519.key"
    edwards.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    k1 = tmp_path / "secp256k1.key"
    k1.write_bytes(
        ec.generate_private_key(ec.SECP256K1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    cases = {
        encrypted: "encrypted",
        edwards: "only RSA and EC",
        k1: "cannot sign JWTs",
        garbage: "not a PEM private key",
        tmp_path / "missing.key": "no such file",
        tmp_path: "is a directory",
    }
    for path, expected in cases.items():
        with pytest.raises(SetupError) as caught:
            load_signing_key(path)
        message = str(caught.value)
        assert message.startswith(f"--key {path}:") and expected in message and "\n" not in message


def test_write_new_file_sets_the_mode_and_never_overwrites_without_force(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)  # the mode must not depend on the umask
    try:
        target = tmp_path / "sub" / "registry.crt"
        write_new_file(target, b"one", 0o644, force=False, what="the certificate")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"one" and target.stat().st_mode & 0o777 == 0o644
    with pytest.raises(SetupError, match=r"^the certificate .*registry\.crt already exists; use --force"):
        write_new_file(target, b"two", 0o644, force=False, what="the certificate")
    assert target.read_bytes() == b"one"
    write_new_file(target, b"two", 0o600, force=True, what="the certificate")
    assert target.read_bytes() == b"two" and target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["registry.crt"]  # no temp files left
