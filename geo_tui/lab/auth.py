"""Docker registry token verification, as Distribution 2.8's token access controller does it.

A request needs a set of accesses (``repository:NAME:pull`` for reads, ``pull`` and ``push`` for writes,
``delete`` for DELETE, ``registry:catalog:*`` for the catalog). The Bearer token must be a JWT signed by a
trusted key (found by the header ``kid``, the libtrust key id, or through an ``x5c`` chain to a trusted
certificate), with the configured issuer and audience, inside its validity (60 s leeway), and its
``access`` claim must grant every needed access (``*`` grants every action on a resource).
Anything short of that is a challenge: 401 with ``WWW-Authenticate: Bearer realm=..,service=..,scope=..``.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from geo_tui.registry import libtrust_key_id

__all__ = ["Access", "AuthChallenge", "TokenVerifier", "load_trusted_keys"]

LEEWAY_SECONDS = 60  # Distribution 2.8's token.Leeway
_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512"]


@dataclass(frozen=True)
class Access:
    """One action on one resource a request needs, e.g. ``Access("repository", "group/app", "pull")``."""

    type: str
    name: str
    action: str


@dataclass(frozen=True)
class AuthChallenge(Exception):
    """The request is not authorized; `error` is ``""``, ``invalid_token`` or ``insufficient_scope``."""

    needed: tuple[Access, ...]
    error: str = ""

    def scope_param(self) -> str:
        """The challenge's ``scope``: one ``type:name:a,b`` per resource, space separated."""
        resources: dict[tuple[str, str], list[str]] = {}
        for access in self.needed:
            actions = resources.setdefault((access.type, access.name), [])
            if access.action not in actions:
                actions.append(access.action)
        return " ".join(f"{kind}:{name}:{','.join(actions)}" for (kind, name), actions in resources.items())

    def www_authenticate(self, realm: str, service: str) -> str:
        value = f'Bearer realm="{realm}",service="{service}"'
        if scope := self.scope_param():
            value += f',scope="{scope}"'
        if self.error:
            value += f',error="{self.error}"'
        return value

    def detail(self) -> list[dict[str, str]]:
        """The error detail Distribution sends with UNAUTHORIZED: the accesses the request needed."""
        return [{"Type": a.type, "Class": "", "Name": a.name, "Action": a.action} for a in self.needed]


def load_trusted_keys(pem: bytes) -> tuple[dict[str, PublicKeyTypes], list[x509.Certificate]]:
    """The trusted public keys by libtrust key id, and the trusted certificates, from PEM bytes.

    `pem` holds one or more certificates (a rootcertbundle) or a public key. Raises ValueError.
    """
    certificates: list[x509.Certificate] = []
    if b"CERTIFICATE" in pem:
        try:
            certificates = x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise ValueError("trust_pem: the certificate bundle cannot be parsed") from None
        keys: list[Any] = [certificate.public_key() for certificate in certificates]
    else:
        try:
            keys = [serialization.load_pem_public_key(pem)]
        except (ValueError, TypeError):
            raise ValueError("trust_pem: expected PEM certificates or a PEM public key") from None
    return {libtrust_key_id(key): key for key in keys}, certificates


class TokenVerifier:
    """Checks Bearer tokens against trusted keys, an issuer and a service (the audience)."""

    def __init__(self, trust_pem: bytes, *, issuer: str, service: str) -> None:
        self.keys, self.certificates = load_trusted_keys(trust_pem)
        self.issuer = issuer
        self.service = service

    def authorize(self, authorization: str | None, needed: tuple[Access, ...]) -> dict[str, Any]:
        """The token's claims if `authorization` grants every access in `needed`; raises AuthChallenge."""
        prefix, _, raw = (authorization or "").partition(" ")
        if not raw or prefix.lower() != "bearer":
            raise AuthChallenge(needed)
        claims = self._verified_claims(raw.strip(), needed)
        granted = _granted(claims.get("access"))
        for access in needed:
            actions = granted.get((access.type, access.name), set())
            if "*" not in actions and access.action not in actions:
                raise AuthChallenge(needed, "insufficient_scope")
        return claims

    def _verified_claims(self, token: str, needed: tuple[Access, ...]) -> dict[str, Any]:
        invalid = AuthChallenge(needed, "invalid_token")
        try:
            header = jwt.get_unverified_header(token)
            key = self._signing_key(header)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=_ALGORITHMS,
                audience=self.service,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            raise invalid from None
        return claims

    def _signing_key(self, header: dict[str, Any]) -> PublicKeyTypes:
        chain = header.get("x5c")
        if chain:
            return self._key_from_chain(chain)
        kid = header.get("kid")
        if isinstance(kid, str) and kid in self.keys:
            return self.keys[kid]
        raise ValueError("token signed by an untrusted key")

    def _key_from_chain(self, chain: object) -> PublicKeyTypes:
        if not isinstance(chain, list) or not all(isinstance(entry, str) for entry in chain):
            raise ValueError("x5c is not a list of certificates")
        try:
            certificates = [x509.load_der_x509_certificate(base64.b64decode(entry)) for entry in chain]
        except (ValueError, binascii.Error):
            raise ValueError("x5c holds an unreadable certificate") from None
        # Each certificate must be issued by the next; the last by a trusted root (or be one).
        for child, parent in itertools.pairwise(certificates):
            _check_issued(child, parent)
        top = certificates[-1]
        if top not in self.certificates:
            for root in self.certificates:
                try:
                    _check_issued(top, root)
                    break
                except ValueError:
                    continue
            else:
                raise ValueError("x5c chain does not lead to a trusted certificate")
        return certificates[0].public_key()


def _check_issued(child: x509.Certificate, parent: x509.Certificate) -> None:
    try:
        child.verify_directly_issued_by(parent)
    except (InvalidSignature, ValueError, TypeError):
        raise ValueError("certificate not issued by its parent") from None


def _granted(access: object) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    if not isinstance(access, list):
        return granted
    for entry in access:
        if not isinstance(entry, dict):
            continue
        kind, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
        if isinstance(kind, str) and isinstance(name, str) and isinstance(actions, list):
            granted.setdefault((kind, name), set()).update(a for a in actions if isinstance(a, str))
    return granted
