"""libtrust "pretty JWS" signing: the envelope of Docker schema 1 manifests (ES256, as docker made them).

The signature covers `base64url(protected) + "." + base64url(payload)`. The protected header says how to
rebuild the payload from the signed document: its first `formatLength` bytes plus `formatTail`
(the closing `\\n}`).
Distribution 2.8 verifies this on a schema 1 PUT when `compatibility.schema1.enabled` is on.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_key_from_seed(seed: int | str) -> ec.EllipticCurvePrivateKey:
    """A P-256 key derived from `seed`, so signed manifests are reproducible."""
    scalar = int.from_bytes(hashlib.sha256(f"geo-tui-schema1-{seed}".encode()).digest()) % (_P256_ORDER - 1)
    return ec.derive_private_key(scalar + 1, ec.SECP256R1())


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }


def _es256(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    try:  # RFC 6979 signatures keep the manifest bytes (and digest) stable per seed
        der = key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    except UnsupportedAlgorithm:
        der = key.sign(data, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def sign_pretty(
    payload: bytes,
    key: ec.EllipticCurvePrivateKey,
    *,
    signed_at: str = "2024-01-01T00:00:00Z",
    indent: str = "   ",
) -> bytes:
    """Embed an ES256 signature in `payload` (pretty JSON ending in `}`) as libtrust PrettySignature does."""
    close = len(payload.rstrip()) - 1
    if payload[close : close + 1] != b"}":
        raise ValueError("payload must be a JSON object")
    format_length = len(payload[:close].rstrip())
    format_tail = payload[format_length:]
    protected = b64url(
        json.dumps(
            {"formatLength": format_length, "formatTail": b64url(format_tail), "time": signed_at},
            separators=(",", ":"),
        ).encode()
    )
    signature = _es256(key, f"{protected}.{b64url(payload)}".encode())
    signatures: list[dict[str, Any]] = [
        {
            "header": {"jwk": public_jwk(key), "alg": "ES256"},
            "signature": b64url(signature),
            "protected": protected,
        }
    ]
    # Go's json.MarshalIndent(v, indent, indent): the prefix goes on every line but the first.
    block = json.dumps(signatures, indent=len(indent)).replace("\n", "\n" + indent)
    return payload[:format_length] + f',\n{indent}"signatures": {block}'.encode() + format_tail


def verify_pretty(document: bytes) -> bytes:
    """Check every signature of a pretty JWS and return the signed payload (raises InvalidSignature)."""
    signatures = json.loads(document)["signatures"]
    payload = b""
    for entry in signatures:
        protected = json.loads(b64url_decode(entry["protected"]))
        payload = document[: protected["formatLength"]] + b64url_decode(protected["formatTail"])
        jwk = entry["header"]["jwk"]
        public = ec.EllipticCurvePublicNumbers(
            int.from_bytes(b64url_decode(jwk["x"])), int.from_bytes(b64url_decode(jwk["y"])), ec.SECP256R1()
        ).public_key()
        raw = b64url_decode(entry["signature"])
        der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
        public.verify(der, f"{entry['protected']}.{b64url(payload)}".encode(), ec.ECDSA(hashes.SHA256()))
    return payload
