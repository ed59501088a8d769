"""RegistryClient against httpx.MockTransport: paging, retries, errors, streaming, uploads, mounts."""

from __future__ import annotations

import json
import pickle
from collections.abc import AsyncIterator, Callable, Sequence

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from geo_tui.registry import (
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    Authenticator,
    DigestMismatch,
    JwtAuth,
    NoAuth,
    NotFound,
    RateLimited,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryRejected,
    RegistryUnavailable,
    Scope,
    TokenSigner,
    compute_digest,
)

BASE = "https://reg.test"
Handler = Callable[[httpx.Request], httpx.Response]


class RecordingAuth(Authenticator):
    """Bearer "secret-token-N"; records the scopes of every request and counts 401s."""

    def __init__(self) -> None:
        self.scopes: list[list[str]] = []
        self.unauthorized = 0

    async def headers(self, scopes: Sequence[Scope]) -> dict[str, str]:
        self.scopes.append([str(s) for s in scopes])
        return {"Authorization": f"Bearer secret-token-{self.unauthorized}"}

    async def on_unauthorized(
        self, scopes: Sequence[Scope], response: httpx.Response, http: httpx.AsyncClient
    ) -> bool:
        self.unauthorized += 1
        return True


class Recorder:
    """Wraps a handler and keeps every request it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


def make_client(
    handler: Handler, auth: Authenticator | None = None, *, retries: int = 3
) -> tuple[RegistryClient, Recorder, list[float]]:
    recorder = Recorder(handler)
    client = RegistryClient(
        "eu",
        BASE,
        auth or NoAuth(),
        transport=httpx.MockTransport(recorder),
        retries=retries,
        retry_base_delay=0.001,
    )
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    client._session.sleep = fake_sleep
    return client, recorder, sleeps


def oci_error(
    status: int, code: str, message: str = "", headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, json={"errors": [{"code": code, "message": message}]}, headers=headers)


async def chunks_of(data: bytes, size: int = 3) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


# --- paging -----------------------------------------------------------------------------------


async def test_catalog_follows_relative_and_absolute_next_links() -> None:
    pages = {
        "n=2": (["a/one", "a/two"], '</v2/_catalog?last=a%2Ftwo&n=2>; rel="next"'),
        "last=a%2Ftwo&n=2": (["b/x", "c"], f'<{BASE}/v2/_catalog?last=c&n=2>; rel="next"'),
        "last=c&n=2": (["d"], None),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        repos, link = pages[request.url.query.decode()]
        return httpx.Response(200, json={"repositories": repos}, headers={"Link": link} if link else {})

    auth = RecordingAuth()
    client, recorder, _ = make_client(handler, auth)
    async with client:
        assert await client.catalog(page_size=2) == ["a/one", "a/two", "b/x", "c", "d"]
    assert len(recorder.requests) == 3
    assert auth.scopes == [["registry:catalog:*"]] * 3


async def test_tags_follow_links_and_null_tags_is_empty() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        last = request.url.params.get("last")
        if request.url.path == "/v2/empty/tags/list":
            return httpx.Response(200, json={"name": "empty", "tags": None})
        if last is None:
            return httpx.Response(
                200, json={"tags": ["v1", "v2"]}, headers={"Link": '<?n=2&last=v2>; rel="next"'}
            )
        if last == "v2":
            link = f'<{BASE}/v2/g/app/tags/list?n=2&last=v4>; rel="next"'
            return httpx.Response(200, json={"tags": ["v3", "v4"]}, headers={"Link": link})
        return httpx.Response(200, json={"tags": ["v5"]})

    auth = RecordingAuth()
    client, recorder, _ = make_client(handler, auth)
    async with client:
        assert await client.list_tags("g/app", page_size=2) == ["v1", "v2", "v3", "v4", "v5"]
        assert await client.list_tags("empty") == []
    assert [str(r.url) for r in recorder.requests[:3]] == [
        f"{BASE}/v2/g/app/tags/list?n=2",
        f"{BASE}/v2/g/app/tags/list?n=2&last=v2",
        f"{BASE}/v2/g/app/tags/list?n=2&last=v4",
    ]
    assert auth.scopes[0] == ["repository:g/app:pull"]


async def test_unknown_repository_tags_is_not_found() -> None:
    client, _, _ = make_client(
        lambda r: oci_error(404, "NAME_UNKNOWN", "repository name not known to registry")
    )
    async with client:
        with pytest.raises(NotFound) as info:
            await client.list_tags("nope/x")
    assert (info.value.status, info.value.code) == (404, "NAME_UNKNOWN")
    assert str(info.value) == "eu: GET tags nope/x: 404 NAME_UNKNOWN: repository name not known to registry"


async def test_a_next_link_to_another_origin_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"repositories": ["a"]}, headers={"Link": '<https://evil.test/x>; rel="next"'}
        )

    client, recorder, _ = make_client(handler, RecordingAuth())
    async with client:
        with pytest.raises(RegistryError, match="leaves the registry"):
            await client.catalog()
    assert all(r.url.host == "reg.test" for r in recorder.requests)


async def test_a_link_loop_ends() -> None:
    link = {"Link": '</v2/_catalog?n=100>; rel="next"'}
    client, recorder, _ = make_client(
        lambda r: httpx.Response(200, json={"repositories": ["a"]}, headers=link)
    )
    async with client:
        assert await client.catalog() == ["a"]
    assert len(recorder.requests) == 1


# --- retries and errors -----------------------------------------------------------------------


def sequence(*responses: httpx.Response | Exception) -> Handler:
    remaining = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        item = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler


async def test_500_then_success_is_retried() -> None:
    client, recorder, sleeps = make_client(
        sequence(oci_error(500, "UNKNOWN"), httpx.Response(200, json={"tags": ["v1"]}))
    )
    async with client:
        assert await client.list_tags("a") == ["v1"]
    assert len(recorder.requests) == 2 and len(sleeps) == 1


async def test_429_honours_retry_after() -> None:
    client, recorder, sleeps = make_client(
        sequence(
            oci_error(429, "TOOMANYREQUESTS", headers={"Retry-After": "1"}),
            oci_error(429, "TOOMANYREQUESTS", headers={"Retry-After": "3600"}),
            httpx.Response(200, json={"tags": []}),
        )
    )
    async with client:
        assert await client.list_tags("a") == []
    assert sleeps == [1.0, 30.0]  # capped at 30 s
    assert len(recorder.requests) == 3


async def test_backoff_grows_exponentially_with_jitter() -> None:
    client, _, sleeps = make_client(sequence(httpx.Response(503)), retries=4)
    client._session.retry_base_delay = 1.0
    async with client:
        with pytest.raises(RegistryUnavailable):
            await client.ping()
    assert len(sleeps) == 4
    for attempt, delay in enumerate(sleeps):
        assert 0.5 * 2**attempt <= delay <= 1.5 * 2**attempt


async def test_429_forever_is_rate_limited() -> None:
    client, recorder, _ = make_client(sequence(oci_error(429, "TOOMANYREQUESTS", "slow down")), retries=2)
    async with client:
        with pytest.raises(RateLimited, match="eu: GET tags a: 429 TOOMANYREQUESTS: slow down"):
            await client.list_tags("a")
    assert len(recorder.requests) == 3


async def test_5xx_forever_is_unavailable_and_names_everything_but_the_token() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    auth = JwtAuth(TokenSigner(pem, issuer="i", service="s"), repository_actions=("pull",))
    # The body echoes the credentials back, as some broken proxies do.
    client, recorder, _ = make_client(
        lambda r: httpx.Response(
            503, json={"errors": [{"code": "UNAVAILABLE", "message": f"echo {r.headers['authorization']}"}]}
        ),
        auth,
    )
    async with client:
        with pytest.raises(RegistryUnavailable) as info:
            await client.get_manifest("group/app", "v1")
    token = recorder.requests[0].headers["authorization"].removeprefix("Bearer ")
    error = info.value
    text = str(error)
    assert text.startswith("eu: GET manifest group/app@v1: 503 UNAVAILABLE: echo Bearer [redacted]")
    assert "\n" not in text
    assert token not in text and token not in repr(error) and token not in error.detail
    assert (error.registry, error.operation, error.repository, error.reference) == (
        "eu",
        "GET manifest",
        "group/app",
        "v1",
    )
    assert len(recorder.requests) == 4
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is RegistryUnavailable and str(clone) == text and clone.status == 503


async def test_transport_errors_are_retried_then_unavailable() -> None:
    client, recorder, _ = make_client(sequence(httpx.ConnectError("connection refused"), httpx.Response(200)))
    async with client:
        assert await client.ping() >= 0
    assert len(recorder.requests) == 2
    client, recorder, _ = make_client(sequence(httpx.ReadTimeout("timed out")), retries=1)
    async with client:
        with pytest.raises(RegistryUnavailable, match="eu: ping: ReadTimeout: timed out"):
            await client.ping()
    assert len(recorder.requests) == 2


async def test_401_re_authenticates_once() -> None:
    auth = RecordingAuth()
    client, recorder, _ = make_client(
        sequence(oci_error(401, "UNAUTHORIZED"), httpx.Response(200, json={"tags": []})), auth
    )
    async with client:
        assert await client.list_tags("a") == []
    assert auth.unauthorized == 1
    assert [r.headers["authorization"] for r in recorder.requests] == [
        "Bearer secret-token-0",
        "Bearer secret-token-1",
    ]

    auth = RecordingAuth()
    client, recorder, _ = make_client(
        sequence(oci_error(401, "UNAUTHORIZED", "authentication required")), auth
    )
    async with client:
        with pytest.raises(RegistryAuthError, match="401 UNAUTHORIZED") as info:
            await client.list_tags("a")
    assert auth.unauthorized == 1 and len(recorder.requests) == 2
    assert "secret-token" not in str(info.value)


async def test_403_is_an_auth_error_without_retry() -> None:
    client, recorder, _ = make_client(
        sequence(oci_error(403, "DENIED", "requested access to the resource is denied"))
    )
    async with client:
        with pytest.raises(RegistryAuthError, match="403 DENIED"):
            await client.get_manifest("a", "v1")
    assert len(recorder.requests) == 1


async def test_pull_only_token_cannot_push() -> None:
    """A fake Distribution that checks the token's actions, as the real one does."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    def handler(request: httpx.Request) -> httpx.Response:
        claims = jwt.decode(
            request.headers["authorization"][7:], key.public_key(), algorithms=["ES256"], audience="s"
        )
        if request.method == "POST" and "push" not in claims["access"][0]["actions"]:
            return oci_error(401, "UNAUTHORIZED", "authentication required")
        return httpx.Response(202, headers={"Location": "/v2/a/blobs/uploads/1"})

    client, recorder, _ = make_client(handler, JwtAuth(TokenSigner(pem, issuer="i", service="s")))
    async with client:
        with pytest.raises(RegistryAuthError):
            await client.upload_blob("a", compute_digest(b"x"), 1, chunks_of(b"x"))
    assert [r.method for r in recorder.requests] == ["POST", "POST"]  # re-minted once, still pull-only


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        ("list_tags", "../x"),
        ("list_tags", "a/../../v2/_catalog"),
        ("head_manifest", "UPPER"),
        ("get_manifest", "a%2F..%2Fb"),
    ],
)
async def test_invalid_names_never_reach_a_url(call: str, arg: str) -> None:
    client, recorder, _ = make_client(lambda r: httpx.Response(200))
    async with client:
        with pytest.raises(ValueError, match="invalid repository name"):
            if call == "list_tags":
                await client.list_tags(arg)
            else:
                await getattr(client, call)(arg, "v1")
        with pytest.raises(ValueError, match="invalid tag or digest"):
            await client.get_manifest("a", "../../x")
        with pytest.raises(ValueError, match="invalid digest"):
            await client.head_blob("a", "sha256:../x")
        with pytest.raises(ValueError, match="invalid repository name"):
            await client.mount_blob("a", compute_digest(b""), "../b")
    assert recorder.requests == []


def test_base_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="registry URL"):
        RegistryClient("x", "ftp://reg.test", NoAuth())


# --- manifests --------------------------------------------------------------------------------

CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": compute_digest(b"{}"), "size": 2}
MANIFEST = json.dumps(
    {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": CONFIG, "layers": []}
).encode()
MANIFEST_DIGEST = compute_digest(MANIFEST)


async def test_head_manifest() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept"] == MANIFEST_ACCEPT
        if request.url.path.endswith("/gone"):
            return httpx.Response(404)
        headers = {
            "Docker-Content-Digest": MANIFEST_DIGEST,
            "Content-Type": OCI_INDEX,
            "Content-Length": "123",
        }
        return httpx.Response(200, headers=headers)

    client, recorder, _ = make_client(handler)
    async with client:
        info = await client.head_manifest("a/b", "v1")
        assert (info and (info.digest, info.media_type, info.size)) == (MANIFEST_DIGEST, OCI_INDEX, 123)
        assert await client.head_manifest("a/b", "gone") is None
    assert recorder.requests[0].method == "HEAD"


async def test_get_manifest_by_digest_verifies_the_bytes() -> None:
    tampered = MANIFEST.replace(b"[]", b"[ ]")
    client, _, _ = make_client(
        lambda r: httpx.Response(200, content=tampered, headers={"Content-Type": OCI_MANIFEST})
    )
    async with client:
        with pytest.raises(DigestMismatch) as info:
            await client.get_manifest("a/b", MANIFEST_DIGEST)
    assert compute_digest(tampered) in str(info.value)
    assert info.value.reference == MANIFEST_DIGEST


async def test_get_manifest_by_tag_checks_the_announced_digest() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        announced = MANIFEST_DIGEST if request.url.path.endswith("/good") else compute_digest(b"other")
        headers = {"Content-Type": OCI_MANIFEST + "; charset=utf-8", "Docker-Content-Digest": announced}
        return httpx.Response(200, content=MANIFEST, headers=headers)

    client, _, _ = make_client(handler)
    async with client:
        manifest = await client.get_manifest("a/b", "good")
        assert (manifest.digest, manifest.media_type, manifest.content) == (
            MANIFEST_DIGEST,
            OCI_MANIFEST,
            MANIFEST,
        )
        with pytest.raises(DigestMismatch):
            await client.get_manifest("a/b", "bad")


async def test_get_manifest_without_headers_computes_and_parses() -> None:
    client, _, _ = make_client(lambda r: httpx.Response(200, content=MANIFEST))
    async with client:
        manifest = await client.get_manifest("a/b", "v1")
    assert (manifest.digest, manifest.media_type) == (MANIFEST_DIGEST, OCI_MANIFEST)


async def test_put_manifest_sends_its_type_and_is_retried() -> None:
    auth = RecordingAuth()
    client, recorder, _ = make_client(
        sequence(
            httpx.Response(502), httpx.Response(201, headers={"Docker-Content-Digest": MANIFEST_DIGEST})
        ),
        auth,
    )
    async with client:
        assert await client.put_manifest("a/b", "v1", MANIFEST, OCI_MANIFEST) == MANIFEST_DIGEST
    assert len(recorder.requests) == 2
    request = recorder.requests[-1]
    assert request.method == "PUT" and request.url.path == "/v2/a/b/manifests/v1"
    assert request.headers["content-type"] == OCI_MANIFEST and request.content == MANIFEST
    assert auth.scopes[-1] == ["repository:a/b:pull,push"]


async def test_put_manifest_rejected() -> None:
    client, _, _ = make_client(lambda r: oci_error(400, "MANIFEST_INVALID", "manifest invalid"))
    async with client:
        with pytest.raises(RegistryRejected, match="400 MANIFEST_INVALID") as info:
            await client.put_manifest("a/b", MANIFEST_DIGEST, MANIFEST, OCI_MANIFEST)
    assert info.value.code == "MANIFEST_INVALID"


async def test_delete_manifest() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        ref = request.url.path.rsplit("/", 1)[1]
        if ref == MANIFEST_DIGEST:
            return httpx.Response(202)
        if ref == "gone":
            return oci_error(404, "MANIFEST_UNKNOWN")
        return oci_error(405, "UNSUPPORTED", "The operation is unsupported.")

    auth = RecordingAuth()
    client, recorder, _ = make_client(handler, auth)
    async with client:
        await client.delete_manifest("a/b", MANIFEST_DIGEST)
        with pytest.raises(NotFound):
            await client.delete_manifest("a/b", "gone")
        with pytest.raises(RegistryRejected) as info:
            await client.delete_manifest("a/b", "v1")
    assert (info.value.status, info.value.code) == (405, "UNSUPPORTED")
    assert auth.scopes[0] == ["repository:a/b:delete"]
    assert recorder.requests[0].method == "DELETE"


# --- referrers API probe -------------------------------------------------------------------------


async def test_a_registry_without_a_referrers_route_is_asked_once() -> None:
    """Distribution 2.8 has no referrers route: its plain-text 404 is remembered, and the next
    repository's probe costs no request; an API error 404 (an unknown repository on a registry that has
    the route) is not, and each probe asks again."""

    def no_route(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="404 page not found\n")

    client, recorder, _ = make_client(no_route)
    async with client:
        assert await client.list_referrers("a/b", MANIFEST_DIGEST) is None
        assert await client.list_referrers("c/d", MANIFEST_DIGEST) is None
    assert len(recorder.requests) == 1

    def unknown_repository(request: httpx.Request) -> httpx.Response:
        return oci_error(404, "NAME_UNKNOWN", "repository name not known to registry")

    client, recorder, _ = make_client(unknown_repository)
    async with client:
        assert await client.list_referrers("a/b", MANIFEST_DIGEST) is None
        assert await client.list_referrers("a/b", MANIFEST_DIGEST) is None
    assert len(recorder.requests) == 2


def test_same_origin_takes_urls_built_on_the_base_and_refuses_look_alikes() -> None:
    from geo_tui.registry._session import same_origin

    assert same_origin("https://reg.test/v2/a/b/manifests/x", "https://reg.test")
    assert same_origin("https://reg.test:443/v2/", "https://reg.test")  # parsed: default port
    assert not same_origin("https://reg.test.evil/v2/", "https://reg.test")
    assert not same_origin("https://reg.test@evil.test/v2/", "https://reg.test")
    assert not same_origin("http://reg.test/v2/", "https://reg.test")
    assert not same_origin("https://reg.test:5000/v2/", "https://reg.test")
