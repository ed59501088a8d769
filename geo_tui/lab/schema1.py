"""Signature check of Docker schema 1 manifests (libtrust "pretty JWS"), as Distribution does on a PUT.

Every signature must verify with the key it carries (``header.jwk``, or the leaf of ``header.x5c``) over
``protected + "." + base64url(payload)``, the payload being the document's first ``formatLength`` bytes
plus ``formatTail``. Nobody vouches for the key: this proves integrity, not origin, exactly as in
Distribution. The lab never re-signs; it serves the bytes as pushed.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = ["Unverified", "verify_schema1"]

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}


class Unverified(ValueError):
    """A signed schema 1 manifest whose signatures are missing, malformed or do not verify."""


def _b64(text: object) -> bytes:
    if not isinstance(text, str):
        raise Unverified("a signature field is not a string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        raise Unverified("a signature field is not base64url") from None


def _number(text: object) -> int:
    return int.from_bytes(_b64(text), "big")


def _public_key(header: dict[str, Any]) -> Any:
    chain = header.get("x5c")
    if isinstance(chain, list) and chain and isinstance(chain[0], str):
        try:
            return x509.load_der_x509_certificate(base64.b64decode(chain[0])).public_key()
        except (ValueError, binascii.Error):
            raise Unverified("the x5c certificate cannot be read") from None
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise Unverified("a signature names no key")
    if jwk.get("kty") == "EC" and jwk.get("crv") in _CURVES:
        curve = _CURVES[jwk["crv"]]
        try:
            return ec.EllipticCurvePublicNumbers(
                _number(jwk.get("x")), _number(jwk.get("y")), curve
            ).public_key()
        except ValueError:
            raise Unverified("the EC key is not on its curve") from None
    if jwk.get("kty") == "RSA":
        return rsa.RSAPublicNumbers(_number(jwk.get("e")), _number(jwk.get("n"))).public_key()
    raise Unverified("unsupported signing key type")


def _verify_one(key: Any, algorithm: str, signature: bytes, signed: bytes) -> None:
    family, bits = algorithm[:2], algorithm[2:]
    if bits not in _HASHES:
        raise Unverified(f"unsupported signature algorithm {algorithm!r}")
    digest = _HASHES[bits]()
    if family == "ES" and isinstance(key, ec.EllipticCurvePublicKey):
        half = len(signature) // 2
        der = encode_dss_signature(int.from_bytes(signature[:half]), int.from_bytes(signature[half:]))
        key.verify(der, signed, ec.ECDSA(digest))
    elif family == "RS" and isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, signed, padding.PKCS1v15(), digest)
    else:
        raise Unverified(f"algorithm {algorithm!r} does not fit the key")


def verify_schema1(content: bytes) -> None:
    """Raise Unverified unless every signature of the signed schema 1 manifest `content` verifies."""
    try:
        document = json.loads(content)
        signatures = document["signatures"]
    except (ValueError, TypeError, KeyError, RecursionError):
        raise Unverified("no signatures") from None
    if not isinstance(signatures, list) or not signatures:
        raise Unverified("no signatures")
    for entry in signatures:
        if not isinstance(entry, dict) or not isinstance(entry.get("header"), dict):
            raise Unverified("a signature is not an object with a header")
        try:
            protected = json.loads(_b64(entry.get("protected")))
            payload = content[: int(protected["formatLength"])] + _b64(protected["formatTail"])
        except (ValueError, TypeError, KeyError, RecursionError):
            raise Unverified("a protected header is malformed") from None
        signed = f"{entry['protected']}.{base64.urlsafe_b64encode(payload).decode().rstrip('=')}".encode()
        try:
            _verify_one(
                _public_key(entry["header"]),
                str(entry["header"].get("alg", "")),
                _b64(entry.get("signature")),
                signed,
            )
        except InvalidSignature:
            raise Unverified("a signature does not verify") from None
