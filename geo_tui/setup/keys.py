"""The key pair every site shares, and the notification secret.

geo-tui signs registry tokens with a private key; each registry trusts the key through a self-signed
certificate named by its ``auth.token.rootcertbundle``. `init` either generates an RSA 4096 key or uses
an existing RSA/EC key (GitLab's ``gitlab-registry.key``), and writes a certificate for it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import string
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from geo_tui.config.rules import SigningKey, signing_key

from .flags import InitFlag, SetupError

__all__ = [
    "CERTIFICATE_DAYS",
    "RSA_BITS",
    "SECRET_LENGTH",
    "SetupError",
    "SigningKey",
    "generate_notification_secret",
    "generate_signing_key",
    "load_signing_key",
    "private_key_pem",
    "self_signed_certificate",
    "write_new_file",
]

RSA_BITS: Final = 4096
CERTIFICATE_DAYS: Final = 3650
SECRET_LENGTH: Final = 48
_ALPHANUMERIC: Final = string.ascii_letters + string.digits


def generate_notification_secret(length: int = SECRET_LENGTH) -> str:
    """A secret for the primary's notification ``Authorization`` header: alphanumeric, starting with a
    letter (GitLab's rule for ``registry_notification_secret``), `length` >= 32 characters."""
    if length < 32:
        raise ValueError("a notification secret has at least 32 characters")
    first = secrets.choice(string.ascii_letters)
    return first + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length - 1))


def generate_signing_key() -> rsa.RSAPrivateKey:
    """A new RSA 4096 key, as GitLab generates for its registry."""
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def load_signing_key(path: Path) -> tuple[SigningKey, bytes]:
    """The unencrypted PEM RSA or EC (P-256/384/521) key at `path`, and its PEM bytes: the config's rule
    for ``auth.private_key``, naming ``--key``."""
    return signing_key(path, InitFlag("--key", str(path)))


def private_key_pem(key: SigningKey) -> bytes:
    """`key` as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def self_signed_certificate(
    key: SigningKey, *, common_name: str, days: int = CERTIFICATE_DAYS, now: dt.datetime | None = None
) -> bytes:
    """A self-signed PEM certificate for `key`, for a registry's ``rootcertbundle``.

    Distribution finds the key by the token's ``kid`` (derived from the public key) and does not check
    the chain, so a self-signed certificate is what GitLab uses too."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)  # allow for clock skew
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def write_new_file(path: Path, data: bytes, mode: int, *, force: bool, what: str) -> None:
    """Write `data` to `path` with `mode` from the moment it exists. An existing file is replaced only
    with `force` (atomically, so the old one stays whole if anything fails)."""
    if not force and (path.exists() or path.is_symlink()):
        raise SetupError(f"{what} {path} already exists; use --force to replace it")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # the umask must not widen or narrow it
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if another process created `path` meanwhile: never overwrite
            tmp.unlink()
    except FileExistsError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SetupError(f"{what} {path} already exists; use --force to replace it") from None
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SetupError(f"{what} {path}: cannot write ({exc.strerror or type(exc).__name__})") from None
