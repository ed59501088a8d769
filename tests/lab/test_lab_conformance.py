"""The lab registry answers like CNCF Distribution 2.8: the same requests against both, the same statuses,
error codes, challenges and paging links.

Each case is one function in CASES that sends its requests to one registry and returns the responses to
compare; adding a case is one line in the table (plus its function).
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from geo_tui.registry import parse_www_authenticate
from tests.support import oci
from tests.support.binaries import find_binary
from tests.support.distribution import Distribution
from tests.support.keys import CATALOG_SCOPE, TestKeyPair, repository_scope
from tests.support.lab import LabInstance
from tests.support.push import RawPusher

pytestmark = [pytest.mark.timeout(60), pytest.mark.registry]

REALM = "http://127.0.0.1:9/auth"


@dataclass
class Target:
    """One registry under test, with a pusher holding pull/push/delete tokens."""

    registry: Distribution | LabInstance
    pusher: RawPusher
    key_pair: TestKeyPair

    @property
    def url(self) -> str:
        return self.registry.url

    def send(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)

    def send_raw(self, method: str, path: str, token: str | None = None) -> httpx.Response:
        """Send `path` exactly as given (httpx would resolve `..` before sending)."""
        connection = http.client.HTTPConnection(self.registry.host, timeout=10)
        try:
            connection.request(method, path, headers={"Authorization": f"Bearer {token}"} if token else {})
            reply = connection.getresponse()
            return httpx.Response(reply.status, headers=reply.getheaders(), content=reply.read())
        finally:
            connection.close()

    def token(self, *scopes: dict[str, Any], **claims: Any) -> str:
        """A token for `scopes`; `claims` override the standard ones (iss, aud, exp, ...)."""
        now = int(time.time())
        body = {
            "iss": self.registry.issuer,
            "sub": "conformance",
            "aud": self.registry.service,
            "iat": now,
            "nbf": now - 5,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
            "access": list(scopes),
        }
        key = claims.pop("signing_key", self.key_pair.private_key)
        body.update(claims)
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": self.key_pair.kid})


@functools.cache
def _stranger_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory, key_pair: TestKeyPair) -> Iterator[dict[str, Target]]:
    """A Distribution and a lab registry with the same key, issuer, service and realm."""
    find_binary("docker-registry")
    options: dict[str, Any] = {"key_pair": key_pair, "token_realm": REALM, "schema1": True}
    distribution = Distribution(tmp_path_factory.mktemp("conformance-distribution"), **options)
    lab = LabInstance(tmp_path_factory.mktemp("conformance-lab"), **options)
    registries: dict[str, Distribution | LabInstance] = {"distribution": distribution, "lab": lab}
    found: dict[str, Target] = {}
    try:
        for kind, registry in registries.items():
            registry.start()
            found[kind] = Target(registry, RawPusher.for_registry(registry), key_pair)
        yield found
    finally:
        for target in found.values():
            target.pusher.close()
        for registry in registries.values():
            registry.stop()


def observe(response: httpx.Response) -> dict[str, Any]:
    """What must agree: status, error codes, the challenge, the Link and the digest header."""
    seen: dict[str, Any] = {"status": response.status_code}
    if response.headers.get("Content-Type", "").startswith("application/json") and response.content:
        body = response.json()
        if isinstance(body, dict) and "errors" in body:
            seen["codes"] = sorted(error["code"] for error in body["errors"])
        elif isinstance(body, dict) and ("tags" in body or "repositories" in body):
            # Distribution lists tags in directory order: compare them sorted.
            seen["listing"] = {k: sorted(v) if k == "tags" and v else v for k, v in body.items()}
    if challenge := response.headers.get("WWW-Authenticate"):
        parsed = parse_www_authenticate(challenge)[0]
        params = dict(parsed.params)
        # Distribution orders a scope's actions by map iteration: compare them as sets.
        scopes = params.pop("scope", "")
        params["scope"] = sorted(
            f"{s.rsplit(':', 1)[0]}:{','.join(sorted(s.rsplit(':', 1)[1].split(',')))}"
            for s in scopes.split()
        )
        seen["challenge"] = (parsed.scheme.lower(), params)
    if link := response.headers.get("Link"):
        seen["link"] = link
    for header in ("Docker-Content-Digest", "Docker-Distribution-API-Version", "Content-Type", "OCI-Subject"):
        if header in response.headers:
            seen[header] = response.headers[header]
    if response.status_code in (201, 202) and "Location" in response.headers:
        seen["location-path"] = httpx.URL(response.headers["Location"]).path.rsplit("/", 1)[0]
    return seen


# Cases: each sends requests to one registry and returns the responses whose observations must agree.
def _repo(name: str) -> str:
    return f"conformance/{name}"


def upload_with_wrong_digest(t: Target) -> list[httpx.Response]:
    repo = _repo("upload-digest")
    started = t.pusher.request("POST", f"/v2/{repo}/blobs/uploads/", repository=repo)
    location = httpx.URL(started.headers["Location"])
    wrong = oci.Blob(b"other bytes", "application/octet-stream").digest
    finished = t.pusher.request(
        "PUT", f"{location.path}?{location.query.decode()}&digest={wrong}", repository=repo, content=b"bytes"
    )
    return [started, finished, t.pusher.request("HEAD", f"/v2/{repo}/blobs/{wrong}", repository=repo)]


def monolithic_upload_with_wrong_digest(t: Target) -> list[httpx.Response]:
    repo = _repo("monolithic-digest")
    wrong = oci.Blob(b"x", "application/octet-stream").digest
    put = t.pusher.request("POST", f"/v2/{repo}/blobs/uploads/?digest={wrong}", repository=repo, content=b"y")
    return [put, t.pusher.request("HEAD", f"/v2/{repo}/blobs/{wrong}", repository=repo)]


def upload_with_malformed_digest(t: Target) -> list[httpx.Response]:
    repo = _repo("malformed-digest")
    started = t.pusher.request("POST", f"/v2/{repo}/blobs/uploads/", repository=repo)
    location = httpx.URL(started.headers["Location"])
    query = f"{location.query.decode()}&digest=sha256:abc"
    return [t.pusher.request("PUT", f"{location.path}?{query}", repository=repo, content=b"z")]


def upload_session_lifecycle(t: Target) -> list[httpx.Response]:
    repo = _repo("session")
    started = t.pusher.request("POST", f"/v2/{repo}/blobs/uploads/", repository=repo)
    path = httpx.URL(started.headers["Location"])
    location = f"{path.path}?{path.query.decode()}"
    patched = t.pusher.request("PATCH", location, repository=repo, content=b"0123456789")
    patched_location = httpx.URL(patched.headers["Location"])
    status = t.pusher.request("GET", location, repository=repo)
    blob = oci.Blob(b"0123456789abc", "application/octet-stream")
    finished = t.pusher.request(
        "PUT",
        f"{patched_location.path}?{patched_location.query.decode()}&digest={blob.digest}",
        repository=repo,
        content=b"abc",
    )
    fetched = t.pusher.get_blob(repo, blob.digest)
    assert fetched.content == blob.data
    return [started, patched, status, finished, fetched, t.pusher.request("GET", location, repository=repo)]


def _restate(state: str, **changes: Any) -> str:
    """A Location's `_state` with fields changed (keys matched case-insensitively, as Distribution names
    them `UUID`, `Offset`): its signature (the first 32 bytes) kept, so only a forged MAC can pass."""
    packed = base64.urlsafe_b64decode(state + "=" * (-len(state) % 4))
    mac, document = packed[:32], json.loads(packed[32:])
    for key in list(document):
        if key.lower() in changes:
            document[key] = changes[key.lower()]
    return base64.urlsafe_b64encode(mac + json.dumps(document).encode()).decode()


def tampered_upload_state(t: Target) -> list[httpx.Response]:
    """A Location whose `_state` was altered (its offset) or never signed is refused, as is the same
    session under another spelling of its id."""
    repo = _repo("tampered-state")
    started = t.pusher.request("POST", f"/v2/{repo}/blobs/uploads/", repository=repo)
    location = httpx.URL(started.headers["Location"])
    state = location.params["_state"]
    upload_id = location.path.rsplit("/", 1)[1]
    unsigned = base64.urlsafe_b64encode(
        json.dumps({"name": repo, "uuid": upload_id, "offset": 0, "Name": repo, "UUID": upload_id}).encode()
    ).decode()
    return [
        started,
        t.pusher.request("PATCH", f"{location.path}?_state={_restate(state, offset=4)}", repository=repo,
                         content=b"abcd"),
        t.pusher.request("PATCH", f"{location.path}?_state={unsigned}", repository=repo, content=b"abcd"),
        t.pusher.request("PATCH", f"/v2/{repo}/blobs/uploads/{upload_id.upper()}?_state={state}",
                         repository=repo, content=b"abcd"),
        t.pusher.request("GET", f"{location.path}?_state={state}", repository=repo),  # still open, 0 bytes
    ]  # fmt: skip


def second_writer_cannot_corrupt_a_blob(t: Target) -> list[httpx.Response]:
    """Issue 12: a second writer that forges a state for another spelling of a session's id must not get
    its bytes into the blob the first writer finishes."""
    repo = _repo("second-writer")
    mine = b"a" * 1000
    started = t.pusher.request("POST", f"/v2/{repo}/blobs/uploads/", repository=repo)
    location = httpx.URL(started.headers["Location"])
    patched = t.pusher.request(
        "PATCH", f"{location.path}?{location.query.decode()}", repository=repo, content=mine
    )
    upload_id = location.path.rsplit("/", 1)[1]
    alias = upload_id.upper()
    forged = base64.urlsafe_b64encode(
        json.dumps({"name": repo, "uuid": alias, "offset": len(mine)}).encode()
    ).decode()
    intruder = t.pusher.request(
        "PATCH", f"/v2/{repo}/blobs/uploads/{alias}?_state={forged}", repository=repo, content=b"evil"
    )
    blob = oci.Blob(mine, "application/octet-stream")
    after = httpx.URL(patched.headers["Location"])
    finished = t.pusher.request(
        "PUT", f"{after.path}?{after.query.decode()}&digest={blob.digest}", repository=repo, content=b""
    )
    fetched = t.pusher.get_blob(repo, blob.digest)
    assert fetched.content == mine, "the registry stored a blob whose bytes do not hash to its digest"
    return [started, patched, intruder, finished, fetched]


def chunk_ranges(t: Target) -> list[httpx.Response]:
    """Distribution 2.8 ignores a PATCH's Content-Range, even a wrong one, but refuses a stale Location."""
    repo = _repo("ranges")
    responses = [t.pusher.request("POST", f"/v2/{repo}/blobs/uploads/", repository=repo)]
    locations: list[str] = []
    for content, content_range in ((b"abcd", "0-3"), (b"ef", "5-6"), (b"gh", "0-1")):
        url = httpx.URL(responses[-1].headers["Location"])
        locations.append(f"{url.path}?{url.query.decode()}")
        headers = {"Content-Range": content_range}
        responses.append(
            t.pusher.request("PATCH", locations[-1], repository=repo, content=content, headers=headers)
        )
    responses.append(t.pusher.request("PATCH", locations[0], repository=repo, content=b"ij"))
    return responses


def manifest_put_with_wrong_digest(t: Target) -> list[httpx.Response]:
    repo, image = _repo("manifest-digest"), oci.oci_image(901)
    for blob in image.blobs:
        t.pusher.push_blob(repo, blob)
    wrong = oci.oci_image(902).digest
    return [
        t.pusher.request(
            "PUT",
            f"/v2/{repo}/manifests/{wrong}",
            repository=repo,
            content=image.manifest,
            headers={"Content-Type": image.media_type},
        )
    ]


def manifest_with_missing_blob(t: Target) -> list[httpx.Response]:
    repo, image = _repo("missing-blob"), oci.docker_image(903)
    for blob in image.blobs[1:]:  # the config is missing
        t.pusher.push_blob(repo, blob)
    put = t.pusher.request(
        "PUT",
        f"/v2/{repo}/manifests/v1",
        repository=repo,
        content=image.manifest,
        headers={"Content-Type": image.media_type},
    )
    return [put, t.pusher.head_manifest(repo, "v1")]


def index_with_missing_child(t: Target) -> list[httpx.Response]:
    repo, index = _repo("missing-child"), oci.multi_arch(904)
    put = t.pusher.request(
        "PUT",
        f"/v2/{repo}/manifests/v1",
        repository=repo,
        content=index.manifest,
        headers={"Content-Type": index.media_type},
    )
    return [put]


def manifest_not_json(t: Target) -> list[httpx.Response]:
    repo = _repo("not-json")
    put = t.pusher.request(
        "PUT",
        f"/v2/{repo}/manifests/v1",
        repository=repo,
        content=b"{not json",
        headers={"Content-Type": oci.OCI_MANIFEST},
    )
    return [put]


def push_pull_and_delete_by_digest(t: Target) -> list[httpx.Response]:
    repo, image = _repo("delete"), oci.oci_image(905)
    t.pusher.push_tree(repo, image, "v1")
    t.pusher.push_manifest(repo, "v2", image.manifest, image.media_type)
    return [
        t.pusher.get_manifest(repo, "v1"),
        t.pusher.head_manifest(repo, image.digest),
        t.pusher.delete_manifest(repo, "v1"),  # by tag: refused
        t.pusher.delete_manifest(repo, image.digest),
        t.pusher.head_manifest(repo, "v1"),
        t.pusher.head_manifest(repo, "v2"),
        t.pusher.delete_manifest(repo, image.digest),
        t.pusher.request("GET", f"/v2/{repo}/tags/list", repository=repo),
    ]


def accept_must_name_oci_types(t: Target) -> list[httpx.Response]:
    repo, index = _repo("accept"), oci.multi_arch(909)
    docker = oci.docker_image(910)
    t.pusher.push_tree(repo, index, "index")
    t.pusher.push_tree(repo, docker, "docker")
    image = next(child for child in index.walk() if child.media_type == oci.OCI_MANIFEST)
    docker_only = (oci.DOCKER_MANIFEST, oci.DOCKER_LIST)
    return [
        t.pusher.head_manifest(repo, "index", accept=docker_only),
        t.pusher.get_manifest(repo, index.digest, accept=(oci.OCI_MANIFEST,)),
        t.pusher.head_manifest(repo, image.digest, accept=docker_only),
        t.pusher.head_manifest(repo, image.digest, accept=(oci.OCI_MANIFEST,)),
        t.pusher.head_manifest(repo, "index", accept=(f"{oci.OCI_INDEX}; q=0.9", oci.DOCKER_LIST)),
        t.pusher.head_manifest(repo, "docker"),
    ]


def manifest_list_without_list_accept(t: Target) -> list[httpx.Response]:
    repo = _repo("list-accept")
    listed = oci.multi_arch(911, docker=True)
    arm_only = oci.multi_arch(912, (("linux", "arm64", "v8"),), docker=True)
    t.pusher.push_tree(repo, listed, "multi")
    t.pusher.push_tree(repo, arm_only, "arm")
    schema2 = (oci.DOCKER_MANIFEST,)
    return [
        t.pusher.get_manifest(repo, "multi", accept=schema2),  # by tag: the linux/amd64 image instead
        t.pusher.head_manifest(repo, "multi", accept=schema2),
        t.pusher.get_manifest(repo, listed.digest, accept=schema2),  # by digest: the list itself
        t.pusher.get_manifest(repo, "arm", accept=schema2),
    ]


def blob_delete_and_unknowns(t: Target) -> list[httpx.Response]:
    repo, blob = _repo("blob-delete"), oci.Blob(b"delete me", "application/octet-stream")
    t.pusher.push_blob(repo, blob)
    missing = oci.Blob(b"never pushed", "application/octet-stream").digest
    upload = f"/v2/{repo}/blobs/uploads/{uuid.uuid4()}?_state=x"
    return [
        t.pusher.delete_blob(repo, blob.digest),
        t.pusher.request("HEAD", f"/v2/{repo}/blobs/{blob.digest}", repository=repo),
        t.pusher.get_blob(repo, missing),
        t.pusher.request("GET", upload, repository=repo),
        t.pusher.request("GET", f"/v2/{_repo('never')}/tags/list", repository=_repo("never")),
        t.pusher.get_manifest(repo, "nope"),
    ]


def mount_found_and_not_found(t: Target) -> list[httpx.Response]:
    source, target = _repo("mount-source"), _repo("mount-target")
    blob = oci.Blob(b"mount me", "application/octet-stream")
    t.pusher.push_blob(source, blob)
    missing = oci.Blob(b"not there", "application/octet-stream").digest
    both = t.token(repository_scope(target, "pull", "push"), repository_scope(source, "pull"))
    target_only = t.token(repository_scope(target, "pull", "push"))
    uploads = f"/v2/{target}/blobs/uploads/"
    return [
        t.send("POST", f"{uploads}?mount={missing}&from={source}", both),
        t.send("POST", f"{uploads}?mount={blob.digest}&from={source}", both),
        t.send("POST", f"{uploads}?mount={blob.digest}&from={source}", target_only),
        t.send("HEAD", f"/v2/{target}/blobs/{blob.digest}", both),
    ]


def invalid_names(t: Target) -> list[httpx.Response]:
    long_name = "a" * 256
    everything = t.token(
        repository_scope(long_name, "pull", "push"),
        repository_scope("Upper/case", "pull", "push"),
        repository_scope("upper/Case", "pull", "push"),
    )
    return [
        t.send("GET", "/v2/Upper/case/tags/list", everything),  # a domain may hold upper case
        t.send("GET", "/v2/upper/Case/tags/list", everything),
        t.send("GET", f"/v2/{long_name}/tags/list", everything),
        t.send("POST", f"/v2/{long_name}/blobs/uploads/", everything),
        t.send("GET", "/v2/a/-b/tags/list", everything),
        t.send("GET", "/v2/a//b/tags/list", everything),
        t.send_raw("GET", "/v2/a/./b/tags/list", everything),
        t.send_raw("GET", "/v2/a/../b/tags/list", everything),
        t.send_raw("GET", "/v2/../../etc/tags/list", everything),
        t.send_raw("GET", "/v2/a/%2E%2E/b/tags/list", everything),
        t.send_raw("GET", "/v2/a/blobs/uploads/..%2F..%2Fx", everything),
    ]


def tokens_refused(t: Target) -> list[httpx.Response]:
    repo = _repo("tokens")
    scope = repository_scope(repo, "pull")
    path = f"/v2/{repo}/tags/list"
    return [
        t.send("GET", path),
        t.send("GET", path, "not-a-jwt"),
        t.send("GET", path, t.token(scope, exp=int(time.time()) - 600)),
        t.send("GET", path, t.token(scope, nbf=int(time.time()) + 600)),
        t.send("GET", path, t.token(scope, signing_key=_stranger_key())),
        t.send("GET", path, t.token(scope, iss="someone-else")),
        t.send("GET", path, t.token(scope, aud="another-service")),
        t.send("GET", path, t.token(repository_scope(_repo("other"), "pull"))),
        t.send("GET", "/v2/", None),
        t.send("GET", "/v2/", t.token()),
        t.send("GET", "/v2/_catalog", t.token(scope)),
    ]


def pull_only_token_cannot_push(t: Target) -> list[httpx.Response]:
    repo = _repo("pull-only")
    pull = t.token(repository_scope(repo, "pull"))
    star = t.token(repository_scope(repo, "*"))
    return [
        t.send("POST", f"/v2/{repo}/blobs/uploads/", pull),
        t.send("PUT", f"/v2/{repo}/manifests/v1", pull, content=b"{}"),
        t.send("DELETE", f"/v2/{repo}/manifests/{oci.oci_image(906).digest}", pull),
        t.send("POST", f"/v2/{repo}/blobs/uploads/", star),
    ]


def schema1_push(t: Target) -> list[httpx.Response]:
    repo = "lab/legacy"
    node = oci.schema1_image(repo, "v1", seed="conformance")
    for blob in node.blobs:
        t.pusher.push_blob(repo, blob)
    put = t.pusher.request(
        "PUT", f"/v2/{repo}/manifests/v1", repository=repo, content=node.manifest,
        headers={"Content-Type": oci.SCHEMA1_SIGNED},
    )  # fmt: skip
    got = t.pusher.get_manifest(repo, "v1")
    assert got.headers["Content-Type"] == oci.SCHEMA1_SIGNED
    tampered = node.manifest.replace(b'"architecture": "amd64"', b'"architecture": "arm64"')
    assert tampered != node.manifest
    refused = t.pusher.request(
        "PUT", f"/v2/{repo}/manifests/v2", repository=repo, content=tampered,
        headers={"Content-Type": oci.SCHEMA1_SIGNED},
    )  # fmt: skip
    return [put, got, t.pusher.head_manifest(repo, node.digest), refused]


def tag_paging(t: Target) -> list[httpx.Response]:
    repo, image = _repo("paging"), oci.oci_image(907)
    t.pusher.push_tree(repo, image, "t1")
    for tag in ("t2", "t3", "t4", "t5"):
        t.pusher.push_manifest(repo, tag, image.manifest, image.media_type)
    path = f"/v2/{repo}/tags/list"
    return [
        t.pusher.request("GET", path, repository=repo),
        t.pusher.request("GET", f"{path}?n=2", repository=repo),
        t.pusher.request("GET", f"{path}?n=2&last=t2", repository=repo),
        t.pusher.request("GET", f"{path}?n=2&last=t4", repository=repo),
        t.pusher.request("GET", f"{path}?n=5", repository=repo),
        t.pusher.request("GET", f"{path}?last=t3", repository=repo),
        t.pusher.request("GET", f"{path}?n=-1", repository=repo),
    ]


def catalog_paging(t: Target) -> list[httpx.Response]:
    for i in range(3):
        t.pusher.push_tree(f"catalog/r{i}", oci.oci_image(908), "v1")
    catalog = t.token(CATALOG_SCOPE)
    responses = [
        t.send("GET", "/v2/_catalog?n=2&last=catalog/", catalog),
        t.send("GET", "/v2/_catalog?n=2&last=catalog/r1", catalog),
        t.send("GET", "/v2/_catalog?n=1001", catalog),
        t.send("GET", "/v2/_catalog?n=1000&last=catalog/r0", catalog),
        t.send("GET", "/v2/_catalog?n=0", catalog),
        t.send("GET", "/v2/_catalog?n=two&last=catalog/r1", catalog),
        t.send("GET", "/v2/_catalog?n=1&last=zzz", catalog),
    ]
    bodies = [r.json() if r.status_code == 200 else None for r in responses]
    assert bodies[0] == {"repositories": ["catalog/r0", "catalog/r1"]}
    return responses


def referrers_without_api(t: Target) -> list[httpx.Response]:
    """Distribution 2.8 has no referrers API: no OCI-Subject on a PUT with a subject, a 404 on the path;
    the lab with its API off answers the same."""
    repo, subject = _repo("referrers"), oci.oci_image(941)
    t.pusher.push_tree(repo, subject, "v1")
    signature = oci.oci_artifact(subject, seed="conformance-sig")
    for blob in signature.blobs:
        t.pusher.push_blob(repo, blob)
    put = t.pusher.request(
        "PUT",
        f"/v2/{repo}/manifests/{signature.digest}",
        repository=repo,
        content=signature.manifest,
        headers={"Content-Type": signature.media_type},
    )
    return [put, t.pusher.request("GET", f"/v2/{repo}/referrers/{subject.digest}", repository=repo)]


CASES: dict[str, Callable[[Target], list[httpx.Response]]] = {
    "upload-wrong-digest": upload_with_wrong_digest,
    "monolithic-wrong-digest": monolithic_upload_with_wrong_digest,
    "upload-malformed-digest": upload_with_malformed_digest,
    "upload-session": upload_session_lifecycle,
    "chunk-ranges": chunk_ranges,
    "upload-tampered-state": tampered_upload_state,
    "upload-second-writer": second_writer_cannot_corrupt_a_blob,
    "manifest-wrong-digest": manifest_put_with_wrong_digest,
    "manifest-missing-blob": manifest_with_missing_blob,
    "index-missing-child": index_with_missing_child,
    "manifest-not-json": manifest_not_json,
    "delete-by-digest": push_pull_and_delete_by_digest,
    "accept-oci": accept_must_name_oci_types,
    "list-accept": manifest_list_without_list_accept,
    "blob-delete-and-unknowns": blob_delete_and_unknowns,
    "mount": mount_found_and_not_found,
    "invalid-names": invalid_names,
    "tokens-refused": tokens_refused,
    "pull-only-cannot-push": pull_only_token_cannot_push,
    "schema1": schema1_push,
    "tag-paging": tag_paging,
    "catalog-paging": catalog_paging,
    "referrers-without-api": referrers_without_api,
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_lab_answers_like_distribution(case: str, targets: dict[str, Target]) -> None:
    seen = {kind: [observe(r) for r in CASES[case](target)] for kind, target in targets.items()}
    assert seen["lab"] == seen["distribution"], json.dumps(seen, indent=1)


def test_cases_are_not_trivial(targets: dict[str, Target], tmp_path: Path) -> None:
    """A sanity check of the harness: a refusal is seen as one (so agreement above means something)."""
    seen = observe(targets["lab"].send("GET", "/v2/conformance/x/tags/list"))
    assert seen["status"] == 401 and seen["codes"] == ["UNAUTHORIZED"]
    assert seen["challenge"][1]["scope"] == ["repository:conformance/x:pull"]
