"""The lab registry's OCI 1.1 referrers API, case by case against distribution spec v1.1 ("Listing
Referrers", "Pushing Manifests with Subject"): CNCF Distribution 2.8 has no such API to compare with, so
each case asserts what the spec says."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from geo_tui.registry import Descriptor, JwtAuth, RegistryClient, TokenSigner
from tests.support import oci
from tests.support.keys import TestKeyPair
from tests.support.lab import LabInstance
from tests.support.push import RawPusher
from tests.support.token_server import TokenServer

pytestmark = pytest.mark.timeout(60)

REPO = "spec/referrers"
SBOM = "application/spdx+json"
SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"


@pytest.fixture
def lab(tmp_path: Path, key_pair: TestKeyPair, token_server: TokenServer) -> Iterator[LabInstance]:
    registry = LabInstance(
        tmp_path / "lab",
        key_pair=key_pair,
        token_realm=token_server.url,
        referrers=True,
        referrers_page_size=2,
    )
    with registry:
        yield registry


@pytest.fixture
def pusher(lab: LabInstance) -> Iterator[RawPusher]:
    with RawPusher.for_registry(lab) as pusher:
        yield pusher


def put_manifest(pusher: RawPusher, node: oci.ManifestNode, reference: str | None = None) -> dict[str, str]:
    for blob in node.blobs:
        pusher.push_blob(REPO, blob)
    response = pusher.request(
        "PUT",
        f"/v2/{REPO}/manifests/{reference or node.digest}",
        repository=REPO,
        content=node.manifest,
        headers={"Content-Type": node.media_type},
    )
    assert response.status_code == 201, response.text
    return dict(response.headers)


def list_referrers(pusher: RawPusher, digest: str, query: str = "") -> tuple[int, dict[str, str], dict]:  # type: ignore[type-arg]
    response = pusher.request("GET", f"/v2/{REPO}/referrers/{digest}{query}", repository=REPO)
    return response.status_code, dict(response.headers), response.json() if response.content else {}


def test_no_referrers_is_an_empty_index_not_a_404(pusher: RawPusher) -> None:
    subject = oci.oci_image("lonely")
    pusher.push_tree(REPO, subject, "v1")
    for digest in (subject.digest, oci.sha256_digest(b"never pushed")):
        status, headers, body = list_referrers(pusher, digest)
        assert status == 200
        assert headers["content-type"] == oci.OCI_INDEX
        assert body == {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": []}
    status, _, body = list_referrers(pusher, "sha256:" + "0" * 63)
    assert status == 400 and body["errors"][0]["code"] == "DIGEST_INVALID"  # never "no referrers"


def test_put_with_subject_answers_oci_subject_and_lists_descriptors(pusher: RawPusher) -> None:
    subject = oci.oci_image("signed")
    pusher.push_tree(REPO, subject, "v1")
    sbom = oci.oci_artifact(subject, artifact_type=SBOM, seed="sbom", annotations={"kind": "sbom"})
    headers = put_manifest(pusher, sbom)
    assert headers["oci-subject"] == subject.digest
    # a referrer without artifactType (an image manifest) is listed with its config's media type
    image_referrer = json.loads(oci.oci_image("plain-ref").manifest)
    image_referrer["subject"] = subject.descriptor()
    plain = oci.ManifestNode(
        json.dumps(image_referrer).encode(), oci.OCI_MANIFEST, blobs=oci.oci_image("plain-ref").blobs
    )
    put_manifest(pusher, plain)
    no_subject = put_manifest(pusher, oci.oci_image("no-subject"), "other")
    assert "oci-subject" not in no_subject

    status, _, body = list_referrers(pusher, subject.digest, "")
    manifests = body["manifests"]
    # page size 2: both fit on the first page
    by_digest = {d["digest"]: d for d in manifests}
    assert status == 200 and set(by_digest) == {sbom.digest, plain.digest}
    assert by_digest[sbom.digest] == {
        "mediaType": oci.OCI_MANIFEST,
        "digest": sbom.digest,
        "size": sbom.size,
        "artifactType": SBOM,
        "annotations": sbom.annotations,
    }
    assert by_digest[plain.digest]["artifactType"] == oci.OCI_CONFIG
    assert "annotations" not in by_digest[plain.digest]


def test_artifact_type_filter_is_announced(pusher: RawPusher) -> None:
    subject = oci.oci_image("filtered")
    pusher.push_tree(REPO, subject, "v1")
    sbom = oci.oci_artifact(subject, artifact_type=SBOM, seed="f-sbom")
    signature = oci.oci_artifact(subject, artifact_type=SIGNATURE, seed="f-sig")
    put_manifest(pusher, sbom)
    put_manifest(pusher, signature)
    status, headers, body = list_referrers(
        pusher, subject.digest, "?" + urlencode({"artifactType": SIGNATURE})
    )
    assert status == 200 and headers["oci-filters-applied"] == "artifactType"
    assert [d["digest"] for d in body["manifests"]] == [signature.digest]
    _, unfiltered, _ = list_referrers(pusher, subject.digest)
    assert "oci-filters-applied" not in unfiltered


def test_large_listings_page_with_link(pusher: RawPusher) -> None:
    subject = oci.oci_image("popular")
    pusher.push_tree(REPO, subject, "v1")
    artifacts = [oci.oci_artifact(subject, seed=f"page-{i}") for i in range(5)]
    for artifact in artifacts:
        put_manifest(pusher, artifact)
    seen: list[str] = []
    path: str | None = f"/v2/{REPO}/referrers/{subject.digest}"
    pages = 0
    while path:
        response = pusher.request("GET", path, repository=REPO)
        assert response.status_code == 200
        seen.extend(d["digest"] for d in response.json()["manifests"])
        pages += 1
        link = response.links.get("next", {}).get("url")
        path = str(link).removeprefix(pusher.base_url) if link else None
    assert pages == 3  # 2 + 2 + 1
    assert sorted(seen) == sorted(a.digest for a in artifacts) and len(seen) == len(set(seen))


def test_deleting_a_referrer_unlists_it(pusher: RawPusher) -> None:
    subject = oci.oci_image("unsigned-later")
    pusher.push_tree(REPO, subject, "v1")
    signature = oci.oci_artifact(subject, artifact_type=SIGNATURE, seed="gone")
    put_manifest(pusher, signature)
    assert pusher.delete_manifest(REPO, signature.digest).status_code == 202
    assert list_referrers(pusher, subject.digest)[2]["manifests"] == []


def test_referrers_need_a_pull_token(lab: LabInstance) -> None:
    with RawPusher(lab.url) as anonymous:
        response = anonymous.request("GET", f"/v2/{REPO}/referrers/{oci.sha256_digest(b'x')}")
    assert response.status_code == 401


def test_the_client_reads_every_page_and_filters(
    lab: LabInstance, pusher: RawPusher, key_pair: TestKeyPair
) -> None:
    """geo-tui's client follows the lab's Link pages and asks for the artifactType filter; a registry
    without the API (a 404) reads as None, not as "no referrers"."""
    subject = oci.oci_image("client-pages")
    pusher.push_tree(REPO, subject, "v1")
    signatures = [oci.oci_artifact(subject, artifact_type=SIGNATURE, seed=f"c-sig-{i}") for i in range(3)]
    sboms = [oci.oci_artifact(subject, artifact_type=SBOM, seed=f"c-sbom-{i}") for i in range(2)]
    for artifact in [*signatures, *sboms]:
        put_manifest(pusher, artifact)

    async def read() -> tuple[list[Descriptor] | None, list[Descriptor] | None, list[Descriptor] | None]:
        signer = TokenSigner(key_pair.key_pem, issuer=lab.issuer, service=lab.service)
        async with RegistryClient("lab", lab.url, JwtAuth(signer)) as client:
            every = await client.list_referrers(REPO, subject.digest)
            only = await client.list_referrers(REPO, subject.digest, artifact_type=SBOM)
        lab.stop()
        lab.referrers = False
        lab.start()
        async with RegistryClient("lab", lab.url, JwtAuth(signer)) as client:
            none = await client.list_referrers(REPO, subject.digest)
        return every, only, none

    mark = lab.settled_mark()
    every, only, none = asyncio.run(read())
    # 3 pages, 1 filtered page, and the 404 of the lab without the API
    assert lab.wait_for_requests(5, "GET", "/referrers/", since_mark=mark) == 5
    assert every is not None and {d.digest for d in every} == {a.digest for a in [*signatures, *sboms]}
    assert len(every) == 5  # three pages of 2, 2 and 1
    assert only is not None and {d.digest for d in only} == {a.digest for a in sboms}
    assert all(d.artifact_type == SBOM for d in only)
    assert none is None
