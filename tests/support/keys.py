"""The signing key shared by the test token realm and the Distribution instances it vouches for.

Distribution trusts the key through `auth.token.rootcertbundle` (a self-signed certificate) and finds it
by the token header's `kid`, which must be the libtrust key ID of that certificate's public key.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

DEFAULT_ISSUER = "geo-tui-test"
DEFAULT_SERVICE = "container_registry"

#: The scope `GET /v2/_catalog` needs.
CATALOG_SCOPE: dict[str, Any] = {"type": "registry", "name": "catalog", "actions": ["*"]}


def repository_scope(name: str, *actions: str) -> dict[str, Any]:
    """One `access` entry of a registry token, e.g. `repository_scope("group/app", "pull", "push")`."""
    return {"type": "repository", "name": name, "actions": list(actions or ("pull",))}


def libtrust_key_id(public_key: Any) -> str:
    """The libtrust key ID: SHA-256 of the DER SubjectPublicKeyInfo, 30 bytes, base32, `:` every 4 chars."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


@dataclass(frozen=True)
class TestKeyPair:
    """An RSA 2048 key, its self-signed certificate and libtrust `kid`; mints RS256 registry tokens."""

    __test__ = False  # not a pytest test class, despite the name

    private_key: rsa.RSAPrivateKey
    key_pem: bytes
    cert_pem: bytes
    kid: str

    @classmethod
    def generate(cls) -> TestKeyPair:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "geo-tui test token signer")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(
            private_key=key,
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            kid=libtrust_key_id(key.public_key()),
        )

    def write(self, directory: Path | str) -> tuple[Path, Path]:
        """Write `token.key` (mode 0600) and `token.crt` into `directory`; return both paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = directory / "token.key", directory / "token.crt"
        key_path.touch(mode=0o600, exist_ok=True)
        key_path.chmod(0o600)
        key_path.write_bytes(self.key_pem)
        cert_path.write_bytes(self.cert_pem)
        return key_path, cert_path

    def mint(
        self,
        scopes: list[dict[str, Any]],
        issuer: str = DEFAULT_ISSUER,
        service: str = DEFAULT_SERVICE,
        ttl: int = 300,
        subject: str = "geo-tui-test",
    ) -> str:
        """An RS256 Docker registry token granting `scopes` (the `access` claim) for `ttl` seconds."""
        now = int(time.time())
        claims = {
            "iss": issuer,
            "sub": subject,
            "aud": service,
            "iat": now,
            "nbf": now - 5,
            "exp": now + ttl,
            "jti": str(uuid.uuid4()),
            "access": scopes,
        }
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid})


@functools.cache
def session_key_pair() -> TestKeyPair:
    """The one key pair of this test session (RSA generation costs a noticeable fraction of a second)."""
    return TestKeyPair.generate()
