"""Credentials for registry requests: no auth, Basic, self-minted JWTs, and the Docker token flow.

The client asks an Authenticator for headers before every request, and tells it about a 401 once
before giving up. Secrets never appear in a repr, a log line or an exception message.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from geo_tui.figures import size

from ._headers import Challenge, parse_www_authenticate

# A token answer is a few KiB; a realm that sends more is refused, not read into memory (issue 12).
MAX_REALM_ANSWER = 1024 * 1024

__all__ = [
    "Authenticator",
    "BasicAuth",
    "BearerChallengeAuth",
    "JwtAuth",
    "NoAuth",
    "Scope",
    "TokenFetchError",
    "TokenSigner",
    "libtrust_key_id",
]


@dataclass(frozen=True)
class Scope:
    """An access scope of the Docker token protocol, e.g. ``repository:group/app:pull,push``."""

    type: str
    name: str
    actions: tuple[str, ...]

    CATALOG: ClassVar[Scope]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    @classmethod
    def repository(cls, name: str, *actions: str) -> Scope:
        """The scope of `actions` (``"pull"``, ``"push"``, ``"delete"``) on repository `name`."""
        return cls("repository", name, tuple(actions))


Scope.CATALOG = Scope("registry", "catalog", ("*",))


def _scope_key(scopes: Sequence[Scope]) -> str:
    """A cache key that does not depend on the order of scopes or actions."""
    return " ".join(sorted(f"{s.type}:{s.name}:{','.join(sorted(set(s.actions)))}" for s in scopes))


def libtrust_key_id(public_key: PublicKeyTypes) -> str:
    """The libtrust key ID Distribution expects in a token's ``kid``: 12 groups of 4 base32 characters.

    SHA-256 of the DER SubjectPublicKeyInfo, first 30 bytes, base32 without padding, ``:`` every 4.
    """
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


class TokenSigner:
    """Mints short-lived registry tokens with the key whose certificate the registries trust.

    RSA keys sign RS256, EC P-256 ES256, P-384 ES384 and P-521 ES512, as GitLab's tokens are signed.
    """

    def __init__(
        self,
        private_key: bytes | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
        *,
        issuer: str,
        service: str,
        ttl: float = 300,
        subject: str = "geo-tui",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`private_key`: a loaded key, or its unencrypted PEM."""
        key: object = private_key
        if isinstance(private_key, bytes):
            try:
                key = serialization.load_pem_private_key(private_key, password=None)
            except Exception:
                # Chained errors could quote the input; say what is wrong without it.
                raise ValueError(
                    "cannot load the token signing key: expected an unencrypted PEM private key (RSA or EC)"
                ) from None
        if isinstance(key, rsa.RSAPrivateKey):
            algorithm = "RS256"
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            algorithms = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
            if key.curve.name not in algorithms:
                raise ValueError(f"unsupported EC curve {key.curve.name} for the token signing key")
            algorithm = algorithms[key.curve.name]
        else:
            raise ValueError("unsupported token signing key type: use RSA or EC (P-256, P-384, P-521)")
        if ttl <= 0:
            raise ValueError("token ttl must be positive")
        self._key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = key
        self.algorithm = algorithm
        self.kid = libtrust_key_id(key.public_key())
        self.issuer = issuer
        self.service = service
        self.ttl = float(ttl)
        self.subject = subject
        self.clock = clock

    def __repr__(self) -> str:
        return f"TokenSigner(kid={self.kid!r}, issuer={self.issuer!r}, service={self.service!r})"

    def mint(self, scopes: Sequence[Scope]) -> tuple[str, float]:
        """A signed token granting `scopes`, and the Unix time it expires."""
        iat = int(self.clock())
        expires_at = iat + self.ttl
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": self.service,
            "iat": iat,
            "nbf": iat - 5,
            "exp": int(expires_at),
            "jti": str(uuid.uuid4()),
            "access": [{"type": s.type, "name": s.name, "actions": list(s.actions)} for s in scopes],
        }
        token = jwt.encode(claims, self._key, algorithm=self.algorithm, headers={"kid": self.kid})
        return token, float(int(expires_at))


class TokenFetchError(Exception):
    """The token realm could not give a token; the message is safe to show (the client wraps it)."""


class Authenticator(ABC):
    """Supplies the credentials for a request, given the scopes the request needs."""

    @abstractmethod
    async def headers(self, scopes: Sequence[Scope]) -> dict[str, str]:
        """Headers (usually ``Authorization``) for a request needing `scopes`."""

    async def on_unauthorized(
        self, scopes: Sequence[Scope], response: httpx.Response, http: httpx.AsyncClient
    ) -> bool:
        """React to a 401 `response`; True if the request is worth retrying once."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoAuth(Authenticator):
    """Anonymous access."""

    async def headers(self, scopes: Sequence[Scope]) -> dict[str, str]:
        return {}


def _basic_value(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class BasicAuth(Authenticator):
    """HTTP Basic credentials on every request."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._value = _basic_value(username, password)

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r})"

    async def headers(self, scopes: Sequence[Scope]) -> dict[str, str]:
        return {"Authorization": self._value}


def _refresh_margin(lifetime: float) -> float:
    """How long before expiry a token is replaced: max(10 s, a fifth of its life), at most half of it."""
    return min(max(10.0, lifetime / 5), lifetime / 2)


class JwtAuth(Authenticator):
    """Tokens minted locally with the key the registry trusts (GitLab's shared-key setup).

    Repository scopes always get this site's `repository_actions`, whatever the request asked: a
    primary configured pull-only can never be written through, even by mistake.
    """

    def __init__(self, signer: TokenSigner, *, repository_actions: tuple[str, ...] = ("pull",)) -> None:
        self.signer = signer
        self.repository_actions = tuple(repository_actions)
        self._tokens: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return f"JwtAuth({self.signer!r}, repository_actions={self.repository_actions!r})"

    def _effective(self, scopes: Sequence[Scope]) -> list[Scope]:
        return [
            Scope(s.type, s.name, self.repository_actions) if s.type == "repository" else s for s in scopes
        ]

    async def headers(self, scopes: Sequence[Scope]) -> dict[str, str]:
        effective = self._effective(scopes)
        key = _scope_key(effective)
        now = self.signer.clock()
        cached = self._tokens.get(key)
        if cached is None or cached[1] - now < _refresh_margin(self.signer.ttl):
            if len(self._tokens) > 4096:
                self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
            cached = self.signer.mint(effective)
            self._tokens[key] = cached
        return {"Authorization": f"Bearer {cached[0]}"}

    async def on_unauthorized(
        self, scopes: Sequence[Scope], response: httpx.Response, http: httpx.AsyncClient
    ) -> bool:
        self._tokens.pop(_scope_key(self._effective(scopes)), None)
        return True


class BearerChallengeAuth(Authenticator):
    """The Docker token flow: on a 401 Bearer challenge, get a token from its realm, then retry.

    Once the realm is known, tokens for new scopes are fetched before the request, so a streamed
    upload is never sent unauthenticated. A Basic challenge falls back to Basic credentials.

    The username and password go to a realm only on the registry's own host (`registry`, its base URL)
    or on one of `realm_hosts`, and never over http when the registry is https: a challenge is the
    registry's word, and a hostile or mistaken one must not collect the password. The realm's answer is
    read up to MAX_REALM_ANSWER bytes.
    """

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        registry: str | None = None,
        realm_hosts: Sequence[str] = (),
    ) -> None:
        self.username = username
        self._basic = _basic_value(username, password or "") if username is not None else None
        self._registry = registry
        self._realm_hosts = frozenset(h.lower() for h in realm_hosts)
        self._use_basic = False
        self._challenge: Challenge | None = None
        self._http: httpx.AsyncClient | None = None
        self._tokens: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.clock: Callable[[], float] = time.time

    def __repr__(self) -> str:
        return f"BearerChallengeAuth(username={self.username!r})"

    async def headers(self, scopes: Sequence[Scope]) -> dict[str, str]:
        if self._use_basic and self._basic is not None:
            return {"Authorization": self._basic}
        key = _scope_key(scopes)
        token = self._fresh(key)
        if token is None and self._challenge is not None and self._http is not None:
            async with self._locks.setdefault(key, asyncio.Lock()):
                token = self._fresh(key) or await self._fetch(self._http, self._challenge, scopes, key)
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def on_unauthorized(
        self, scopes: Sequence[Scope], response: httpx.Response, http: httpx.AsyncClient
    ) -> bool:
        challenges = parse_www_authenticate(response.headers.get("www-authenticate", ""))
        key = _scope_key(scopes)
        self._tokens.pop(key, None)
        for challenge in challenges:
            if challenge.scheme == "bearer" and challenge.realm:
                self._challenge, self._http, self._use_basic = challenge, http, False
                if self._registry is None:
                    self._registry = str(response.request.url)
                wanted = [*challenge.scopes, *(str(s) for s in scopes)]
                await self._fetch(http, challenge, wanted, key)
                return True
        if self._basic is not None and not self._use_basic:
            if any(c.scheme == "basic" for c in challenges):
                self._use_basic = True
                return True
        return False

    def _fresh(self, key: str) -> str | None:
        cached = self._tokens.get(key)
        if cached is None or cached[1] <= self.clock():
            return None
        return cached[0]

    async def _fetch(
        self, http: httpx.AsyncClient, challenge: Challenge, scopes: Sequence[Scope | str], key: str
    ) -> str:
        realm = challenge.realm or ""
        if urlsplit(realm).scheme not in ("http", "https"):
            raise TokenFetchError("token realm is not an http(s) URL")
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        for scope in dict.fromkeys(str(s) for s in scopes):
            params.append(("scope", scope))
        headers = {"Authorization": self._basic} if self._basic is not None else {}
        if headers:
            self._check_realm(realm)
        issued = self.clock()
        try:
            async with http.stream(
                "GET", realm, params=params, headers=headers, follow_redirects=True
            ) as answer:
                if answer.status_code != 200:
                    raise TokenFetchError(f"token realm answered {answer.status_code}")
                content = await _read_realm_answer(answer)
        except httpx.HTTPError as exc:
            raise TokenFetchError(f"token realm unreachable ({type(exc).__name__})") from None
        try:
            body = json.loads(content)
            token = body.get("token") or body.get("access_token")
            expires_in = body.get("expires_in", 60)
        except (ValueError, AttributeError, RecursionError):
            raise TokenFetchError("token realm answered something other than a JSON object") from None
        if not isinstance(token, str) or not token:
            raise TokenFetchError("token realm answered without a token")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = 60
        lifetime = float(min(expires_in, 86400))
        self._tokens[key] = (token, issued + lifetime - _refresh_margin(lifetime))
        return token

    def _check_realm(self, realm: str) -> None:
        """Refuse to send the username and password to `realm` unless it is the registry's own host or a
        host the configuration names, over https when the registry is https."""
        target = urlsplit(realm)
        home = urlsplit(self._registry or "")
        host = (target.hostname or "").lower()
        if host != (home.hostname or "").lower() and host not in self._realm_hosts:
            raise TokenFetchError(
                f"the token realm is on {host or 'no host'}, not the registry's host: credentials are not "
                "sent there (if that realm is trusted, list its host in token_realm_hosts)"
            )
        if home.scheme == "https" and target.scheme != "https":
            raise TokenFetchError(
                f"the token realm on {host} is plain http while the registry is https: "
                "credentials are not sent over http"
            )


async def _read_realm_answer(answer: httpx.Response) -> bytes:
    """The realm's answer, refused past MAX_REALM_ANSWER bytes."""
    too_big = TokenFetchError(f"token realm answer is larger than {size(MAX_REALM_ANSWER)}")
    declared = answer.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REALM_ANSWER:
        raise too_big
    content = bytearray()
    async for chunk in answer.aiter_bytes():
        content += chunk
        if len(content) > MAX_REALM_ANSWER:
            raise too_big
    return bytes(content)
