"""Tokens minted with the shared key, the Docker token flow, and Basic credentials."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from geo_tui.registry import (
    BasicAuth,
    BearerChallengeAuth,
    JwtAuth,
    NoAuth,
    RegistryAuthError,
    RegistryClient,
    Scope,
    TokenSigner,
    libtrust_key_id,
)

KID_SHAPE = re.compile(r"[A-Z2-7]{4}(:[A-Z2-7]{4}){11}")


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_scope_strings() -> None:
    assert str(Scope.repository("group/app", "pull", "push")) == "repository:group/app:pull,push"
    assert str(Scope.CATALOG) == "registry:catalog:*"


def test_libtrust_key_id_shape_and_stability() -> None:
    # A fixed key gives a fixed ID: derived from the DER SubjectPublicKeyInfo, so any encoding agrees.
    key = ec.derive_private_key(12345, ec.SECP256R1())
    kid = libtrust_key_id(key.public_key())
    assert KID_SHAPE.fullmatch(kid)
    assert kid == libtrust_key_id(ec.derive_private_key(12345, ec.SECP256R1()).public_key())
    assert kid != libtrust_key_id(ec.derive_private_key(54321, ec.SECP256R1()).public_key())
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    expected = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    assert kid.replace(":", "") == expected


def test_minted_token_decodes_with_the_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    clock = Clock()
    signer = TokenSigner(pem(rsa_key), issuer="iss", service="svc", ttl=300, clock=clock)
    token, expires_at = signer.mint([Scope.repository("group/app", "pull"), Scope.CATALOG])
    assert expires_at == clock.now + 300
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"] == signer.kid == libtrust_key_id(rsa_key.public_key())
    claims = jwt.decode(
        token,
        rsa_key.public_key(),
        algorithms=["RS256"],
        audience="svc",
        issuer="iss",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["sub"] == "geo-tui"
    assert claims["iat"] == int(clock.now) and claims["nbf"] == claims["iat"] - 5
    assert claims["exp"] == claims["iat"] + 300
    assert re.fullmatch(r"[0-9a-f-]{36}", claims["jti"])
    assert claims["access"] == [
        {"type": "repository", "name": "group/app", "actions": ["pull"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    assert signer.mint([])[0] != token  # fresh jti every time


@pytest.mark.parametrize(("curve", "alg"), [(ec.SECP256R1(), "ES256"), (ec.SECP384R1(), "ES384")])
def test_ec_keys_sign_es(curve: ec.EllipticCurve, alg: str) -> None:
    key = ec.generate_private_key(curve)
    signer = TokenSigner(pem(key), issuer="i", service="s")
    token, _ = signer.mint([])
    assert jwt.get_unverified_header(token)["alg"] == alg
    assert jwt.decode(token, key.public_key(), algorithms=[alg], audience="s")["iss"] == "i"


def test_unloadable_key_raises_value_error_without_key_material(rsa_key: rsa.RSAPrivateKey) -> None:
    broken = pem(rsa_key)[:200] + b"SECRETMATERIAL" + pem(rsa_key)[400:]
    with pytest.raises(ValueError, match="cannot load the token signing key") as info:
        TokenSigner(broken, issuer="i", service="s")
    assert "SECRETMATERIAL" not in str(info.value) and "BEGIN" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def bearer(headers: dict[str, str]) -> dict[str, object]:
    token = headers["Authorization"].removeprefix("Bearer ")
    return jwt.decode(token, options={"verify_signature": False})


async def test_jwt_auth_primary_is_pull_only_even_when_push_is_asked(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = JwtAuth(TokenSigner(pem(rsa_key), issuer="i", service="s"), repository_actions=("pull",))
    claims = bearer(await auth.headers([Scope.repository("a/b", "pull", "push"), Scope.CATALOG]))
    assert claims["access"] == [
        {"type": "repository", "name": "a/b", "actions": ["pull"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    secondary = JwtAuth(
        TokenSigner(pem(rsa_key), issuer="i", service="s"), repository_actions=("pull", "push", "delete")
    )
    claims = bearer(await secondary.headers([Scope.repository("a/b", "delete")]))
    assert claims["access"] == [{"type": "repository", "name": "a/b", "actions": ["pull", "push", "delete"]}]


async def test_jwt_auth_caches_and_re_mints_near_expiry_and_after_401(rsa_key: rsa.RSAPrivateKey) -> None:
    clock = Clock()
    auth = JwtAuth(TokenSigner(pem(rsa_key), issuer="i", service="s", ttl=300, clock=clock))
    scopes = [Scope.repository("a/b", "pull")]
    first = await auth.headers(scopes)
    assert await auth.headers(list(reversed(scopes))) == first
    clock.now += 300 - 61  # 61 s left: more than max(10, 300/5) = 60
    assert await auth.headers(scopes) == first
    clock.now += 2  # 59 s left: re-mint
    second = await auth.headers(scopes)
    assert second != first and bearer(second)["iat"] == int(clock.now)
    assert await auth.on_unauthorized(scopes, httpx.Response(401), httpx.AsyncClient()) is True
    assert await auth.headers(scopes) != second


async def test_basic_and_no_auth() -> None:
    basic = BasicAuth("user", "s3cret")
    expected = "Basic " + base64.b64encode(b"user:s3cret").decode()
    assert await basic.headers([]) == {"Authorization": expected}
    assert "s3cret" not in repr(basic)
    assert await NoAuth().headers([Scope.CATALOG]) == {}


# --- the Docker token flow against a fake realm -----------------------------------------------

REALM = "https://auth.test/token"


class FakeTokenRegistry:
    """A registry answering 401 Bearer challenges and a realm that issues one token per scope set."""

    def __init__(self, *, basic_only: bool = False, realm_status: int = 200) -> None:
        self.basic_only = basic_only
        self.realm_status = realm_status
        self.realm_requests: list[httpx.Request] = []
        self.registry_requests: list[httpx.Request] = []
        self.issued: dict[str, str] = {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            self.realm_requests.append(request)
            if self.realm_status != 200:
                return httpx.Response(self.realm_status, text="denied for s3cret")
            scopes = " ".join(sorted(request.url.params.get_list("scope")))
            token = f"token-{len(self.issued)}"
            self.issued[token] = scopes
            return httpx.Response(200, json={"access_token": token, "expires_in": 300})
        self.registry_requests.append(request)
        auth = request.headers.get("authorization", "")
        if self.basic_only:
            if auth == "Basic " + base64.b64encode(b"user:s3cret").decode():
                return httpx.Response(200, json={"name": "a/b", "tags": ["v1"]})
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        repo = request.url.path.removeprefix("/v2/").removesuffix("/tags/list")
        token = auth.removeprefix("Bearer ")
        if f"repository:{repo}:pull" in self.issued.get(token, ""):
            return httpx.Response(200, json={"name": repo, "tags": ["v1"]})
        challenge = f'Bearer realm="{REALM}",service="reg.test",scope="repository:{repo}:pull"'
        return httpx.Response(
            401, headers={"WWW-Authenticate": challenge}, json={"errors": [{"code": "UNAUTHORIZED"}]}
        )


def client_for(fake: FakeTokenRegistry, auth: object) -> RegistryClient:
    assert isinstance(auth, (BearerChallengeAuth, BasicAuth, NoAuth))
    return RegistryClient("reg", "https://reg.test", auth, transport=httpx.MockTransport(fake.handler))


async def test_bearer_challenge_flow() -> None:
    fake = FakeTokenRegistry()
    async with client_for(fake, BearerChallengeAuth("user", "s3cret", realm_hosts=["auth.test"])) as client:
        assert await client.list_tags("a/b") == ["v1"]
        [realm] = fake.realm_requests
        assert realm.url.params["service"] == "reg.test"
        assert realm.url.params.get_list("scope") == ["repository:a/b:pull"]
        assert realm.headers["authorization"] == "Basic " + base64.b64encode(b"user:s3cret").decode()
        assert len(fake.registry_requests) == 2  # 401, then the retry with the token

        assert await client.list_tags("a/b") == ["v1"]  # cached: no realm request, no 401
        assert len(fake.realm_requests) == 1 and len(fake.registry_requests) == 3

        # The realm is known now: a new scope gets its token before the request, never a 401 first.
        assert await client.list_tags("c/d") == ["v1"]
        assert len(fake.realm_requests) == 2 and len(fake.registry_requests) == 4


async def test_bearer_anonymous_sends_no_credentials_to_the_realm() -> None:
    fake = FakeTokenRegistry()
    async with client_for(fake, BearerChallengeAuth()) as client:
        assert await client.list_tags("a/b") == ["v1"]
    assert "authorization" not in fake.realm_requests[0].headers


async def test_bearer_falls_back_to_basic_on_a_basic_challenge() -> None:
    fake = FakeTokenRegistry(basic_only=True)
    async with client_for(fake, BearerChallengeAuth("user", "s3cret", realm_hosts=["auth.test"])) as client:
        assert await client.list_tags("a/b") == ["v1"]
        assert await client.list_tags("a/b") == ["v1"]
    assert [r.headers.get("authorization", "")[:6] for r in fake.registry_requests] == [
        "",
        "Basic ",
        "Basic ",
    ]


async def test_realm_failure_is_an_auth_error_without_secrets() -> None:
    fake = FakeTokenRegistry(realm_status=401)
    async with client_for(fake, BearerChallengeAuth("user", "s3cret", realm_hosts=["auth.test"])) as client:
        with pytest.raises(RegistryAuthError) as info:
            await client.list_tags("a/b")
    message = str(info.value)
    assert message.startswith("reg: GET tags a/b: 401")
    assert "token realm answered 401" in message
    assert "s3cret" not in message and "dXNlcjpzM2NyZXQ" not in message


async def test_basic_auth_that_is_refused_is_an_auth_error() -> None:
    fake = FakeTokenRegistry(basic_only=True)
    async with client_for(fake, BasicAuth("user", "wrong")) as client:
        with pytest.raises(RegistryAuthError, match="401"):
            await client.list_tags("a/b")
    assert len(fake.registry_requests) == 1  # Basic has nothing new to try
