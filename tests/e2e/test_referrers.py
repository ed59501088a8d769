"""OCI 1.1 referrers across every pair of registries: the referrers API or the fallback tag on the primary,
times the same on the secondary. The API side is the lab registry with its referrers API on; the fallback
side is real CNCF Distribution 2.8, which has none. A cosign-style signature and an SBOM are attached to an
image and to a multi-platform index, untagged, plus a signature of the image's SBOM (a referrer of a
referrer). `sync --once --dry-run` plans what the run then writes. After `sync --once` the secondary
serves them all the way it can, `verify` passes, a second run writes nothing, and a signature deleted from
the secondary fails `verify`."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from geo_tui.engine.referrers import MAX_REFERRER_DEPTH, ReferrerGraph, read_referrer_graph
from geo_tui.registry import JwtAuth, RegistryClient, TokenSigner
from tests.e2e.test_dry_run import compare_plan_with_run
from tests.e2e.test_sync import WRITE_METHODS, run_cli, sync_json
from tests.e2e.test_verify_deep import blob_file
from tests.support.binaries import find_binary
from tests.support.distribution import Distribution
from tests.support.geo import write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.lab import LabInstance
from tests.support.oci import (
    OCI_INDEX,
    Blob,
    ManifestNode,
    canonical_json,
    multi_arch,
    oci_artifact,
    oci_image,
    referrers_fallback,
)
from tests.support.push import RawPusher
from tests.support.token_server import TokenServer

pytestmark = [pytest.mark.registry, pytest.mark.timeout(240)]

REPO = "signed/app"
SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM = "application/spdx+json"
COSIGN_PAYLOAD = "application/vnd.dev.cosign.simplesigning.v1+json"


def cosign_signature(subject: ManifestNode, seed: str) -> ManifestNode:
    """A signature as cosign attaches one with the referrers API: artifactType, a simple-signing payload
    whose layer carries the signature annotation, and the subject."""
    payload = Blob(
        canonical_json(
            {
                "critical": {
                    "identity": {"docker-reference": REPO},
                    "image": {"docker-manifest-digest": subject.digest},
                    "type": "cosign container image signature",
                },
                "optional": {"seed": seed},
            }
        ),
        COSIGN_PAYLOAD,
        annotations={"dev.cosignproject.cosign/signature": f"MEUCIQ{seed}=="},
    )
    return oci_artifact(
        subject, artifact_type=SIGNATURE, blobs=[payload], seed=seed, annotations={"signed-by": "ci"}
    )


@dataclass
class Estate:
    image: ManifestNode
    index: ManifestNode
    by_subject: dict[str, list[ManifestNode]]  # subject digest -> its referrers

    @property
    def artifacts(self) -> list[ManifestNode]:
        return [a for found in self.by_subject.values() for a in found]

    def signature_of(self, subject: ManifestNode) -> ManifestNode:
        return next(a for a in self.by_subject[subject.digest] if a.artifact_type == SIGNATURE)


def make_estate() -> Estate:
    image, index = oci_image("ref-app"), multi_arch("ref-multi")
    by_subject: dict[str, list[ManifestNode]] = {}
    for name, subject in (("image", image), ("index", index)):
        by_subject[subject.digest] = [
            cosign_signature(subject, f"sig-{name}"),
            oci_artifact(subject, artifact_type=SBOM, seed=f"sbom-{name}", annotations={"format": "spdx"}),
        ]
    image_sbom = by_subject[image.digest][1]
    by_subject[image_sbom.digest] = [cosign_signature(image_sbom, "sig-of-sbom")]
    return Estate(image, index, by_subject)


def push_estate(pusher: RawPusher, estate: Estate, *, fallback: bool) -> None:
    pusher.push_tree(REPO, estate.image, "v1")
    pusher.push_tree(REPO, estate.index, "multi")
    for artifact in estate.artifacts:
        pusher.push_tree(REPO, artifact)  # by digest: untagged
    if fallback:  # a client of a registry without the API keeps the fallback tags itself
        for subject, artifacts in estate.by_subject.items():
            tag, fallback_index = referrers_fallback(subject, artifacts)
            pusher.push_manifest(REPO, tag, fallback_index.manifest, fallback_index.media_type)


def referrer_entries(pusher: RawPusher, subject: str, *, api: bool) -> dict[str, dict[str, Any]]:
    """What a registry says it holds for `subject`: its API listing, or its fallback tag index."""
    if api:
        response = pusher.request("GET", f"/v2/{REPO}/referrers/{subject}", repository=REPO)
    else:
        response = pusher.get_manifest(REPO, "sha256-" + subject.removeprefix("sha256:"))
        if response.status_code == 404:
            return {}
    assert response.status_code == 200, response.text
    return {entry["digest"]: entry for entry in response.json()["manifests"]}


KINDS = {"api": True, "fallback": False}


@pytest.fixture
def start_registry(
    tmp_path_factory: pytest.TempPathFactory, key_pair: TestKeyPair, token_server: TokenServer
) -> Iterator[Callable[[str, bool], Distribution | LabInstance]]:
    started: list[Distribution | LabInstance] = []

    def start(name: str, api: bool) -> Distribution | LabInstance:
        workdir = tmp_path_factory.mktemp(f"referrers-{name}")
        options: dict[str, Any] = {"name": name, "key_pair": key_pair, "token_realm": token_server.url}
        if api:
            registry: Distribution | LabInstance = LabInstance(workdir, referrers=True, **options)
        else:
            find_binary("docker-registry")
            registry = Distribution(workdir, **options)
        started.append(registry)
        registry.start()
        return registry

    try:
        yield start
    finally:
        for registry in started:
            registry.stop()


@pytest.mark.parametrize("secondary_kind", list(KINDS))
@pytest.mark.parametrize("primary_kind", list(KINDS))
def test_referrers_reach_every_kind_of_secondary(
    primary_kind: str,
    secondary_kind: str,
    start_registry: Callable[[str, bool], Distribution | LabInstance],
    key_pair: TestKeyPair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    primary_api, secondary_api = KINDS[primary_kind], KINDS[secondary_kind]
    primary = start_registry("primary", primary_api)
    secondary = start_registry("secondary", secondary_api)
    estate = make_estate()
    with RawPusher.for_registry(primary) as primary_pusher, RawPusher.for_registry(secondary) as pusher:
        push_estate(primary_pusher, estate, fallback=not primary_api)
        config = write_geo_config(tmp_path / "geo", primary, [secondary], key_pair)

        # the dry run plans what the run then writes, fallback index pushes included
        _, _, site = compare_plan_with_run(capsys, config, secondary)
        assert site["synced"] == 1 and site["warnings"] == []

        # every referrer is on the secondary by digest, and listed the way the secondary can list it
        for artifact in estate.artifacts:
            assert pusher.head_manifest(REPO, artifact.digest).status_code == 200, artifact.digest
        for subject, artifacts in estate.by_subject.items():
            held = referrer_entries(pusher, subject, api=secondary_api)
            assert set(held) == {a.digest for a in artifacts}, subject
            for artifact in artifacts:
                assert held[artifact.digest]["artifactType"] == artifact.artifact_type
                assert held[artifact.digest]["annotations"] == artifact.annotations
        if primary_api and not secondary_api:
            # the fallback tags are the engine's own on that secondary: pure OCI indexes of the referrers
            index = pusher.get_manifest(REPO, "sha256-" + estate.image.digest.removeprefix("sha256:"))
            assert index.headers["Content-Type"] == OCI_INDEX
            assert json.loads(index.content)["mediaType"] == OCI_INDEX

        code, out, _ = run_cli(capsys, "--config", str(config), "verify", "--json")
        results = json.loads(out)
        assert code == 0, results
        assert "referrers present" in results[0]["detail"]

        # a second run finds everything in place and writes nothing
        mark = secondary.settled_mark()
        code, summary = sync_json(capsys, config)
        assert code == 0
        secondary.settled_mark()
        writes = [r for r in secondary.requests(since_mark=mark) if r.method in WRITE_METHODS]
        assert writes == [], f"an up-to-date run wrote to the secondary: {writes}"

        # a signature lost on the secondary fails verification, naming it
        lost = estate.signature_of(estate.image)
        assert pusher.delete_manifest(REPO, lost.digest).status_code == 202
        code, out, _ = run_cli(capsys, "--config", str(config), "verify", "--json")
        results = json.loads(out)
        assert code == 1
        assert lost.digest in results[0]["detail"] and SIGNATURE in results[0]["detail"]

        # the resync it queued puts it back: the referrers walk of a primary with the API, or the look
        # below tags that match (a fallback tag does) for one without
        code, summary = sync_json(capsys, config)
        assert code == 0, summary["sites"]["secondary"]["failures"]
        assert pusher.head_manifest(REPO, lost.digest).status_code == 200
        code, out, _ = run_cli(capsys, "--config", str(config), "verify", "--json")
        assert code == 0, out


@pytest.mark.parametrize("deletions", [True, False], ids=["deletions", "no-deletions"])
@pytest.mark.parametrize("secondary_kind", list(KINDS))
def test_referrers_deleted_on_the_primary_follow(
    secondary_kind: str,
    deletions: bool,
    start_registry: Callable[[str, bool], Distribution | LabInstance],
    key_pair: TestKeyPair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Referrers deleted on a primary with the API (the image's signature, both of the index's) are
    deleted by digest on the secondary and leave its listing: its API's, or its fallback index (which
    becomes empty for the index). With `replicate_deletions = false` they stay, listed."""
    secondary_api = KINDS[secondary_kind]
    primary = start_registry("primary", True)
    secondary = start_registry("secondary", secondary_api)
    estate = make_estate()
    with RawPusher.for_registry(primary) as primary_pusher, RawPusher.for_registry(secondary) as pusher:
        push_estate(primary_pusher, estate, fallback=False)
        config = write_geo_config(
            tmp_path / "geo", primary, [secondary], key_pair, engine={"replicate_deletions": deletions}
        )
        assert sync_json(capsys, config)[0] == 0

        image_sbom = estate.by_subject[estate.image.digest][1]
        gone = [estate.signature_of(estate.image), *estate.by_subject[estate.index.digest]]
        for artifact in gone:
            assert primary_pusher.delete_manifest(REPO, artifact.digest).status_code == 202
        # the dry run plans the deletions the run then makes
        _, done, site = compare_plan_with_run(capsys, config, secondary)
        assert site["referrers_deleted"] == (len(gone) if deletions else 0)
        assert {d for _, d in done.deleted} == ({a.digest for a in gone} if deletions else set())

        image_referrers = referrer_entries(pusher, estate.image.digest, api=secondary_api)
        index_referrers = referrer_entries(pusher, estate.index.digest, api=secondary_api)
        if deletions:
            assert set(image_referrers) == {image_sbom.digest} and index_referrers == {}
        else:
            assert len(image_referrers) == 2 and len(index_referrers) == 2
        for artifact in gone:
            expected = 404 if deletions else 200
            assert pusher.head_manifest(REPO, artifact.digest).status_code == expected
        # what stays is whole: the SBOM and its own signature
        for artifact in (image_sbom, *estate.by_subject[image_sbom.digest]):
            assert pusher.head_manifest(REPO, artifact.digest).status_code == 200
        code, out, _ = run_cli(capsys, "--config", str(config), "verify", "--json")
        assert code == 0, out


def test_referrer_chains_are_followed_to_a_bound(
    start_registry: Callable[[str, bool], Distribution | LabInstance], key_pair: TestKeyPair
) -> None:
    """A signature of a signature of ... : MAX_REFERRER_DEPTH levels below the image are asked for their
    referrers, the next one is listed but not followed, and it says so."""
    lab = start_registry("primary", True)
    image = oci_image("chain")
    chain = [image]
    with RawPusher.for_registry(lab) as pusher:
        pusher.push_tree(REPO, image, "v1")
        for level in range(MAX_REFERRER_DEPTH + 2):
            chain.append(cosign_signature(chain[-1], f"chain-{level}"))
            pusher.push_tree(REPO, chain[-1])

    async def read() -> ReferrerGraph:
        signer = TokenSigner(key_pair.key_pem, issuer=lab.issuer, service=lab.service)
        async with RegistryClient("lab", lab.url, JwtAuth(signer)) as client:
            return await read_referrer_graph(client, REPO, [image.digest])

    graph = asyncio.run(read())
    assert graph.api
    followed = chain[: MAX_REFERRER_DEPTH + 1]
    assert list(graph.by_subject) == [node.digest for node in followed]
    assert set(graph.referrers) == {node.digest for node in chain[1 : MAX_REFERRER_DEPTH + 2]}
    last = chain[MAX_REFERRER_DEPTH + 1].digest
    assert [r.split()[0] for r in graph.refused] == [last]


def test_deep_verification_walks_untagged_referrers_a_secondary_lists_through_its_api(
    start_registry: Callable[[str, bool], Distribution | LabInstance],
    key_pair: TestKeyPair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On a secondary with the referrers API no tag reaches a signature or an SBOM: `verify --deep` asks
    the API for the referrers of every manifest it walked (and of those), so a blob lost behind an
    untagged signature of an SBOM fails it, naming the repository and the digest, where the checksum
    depth cannot see it; the resync it queues puts the blob back. A signature lost from the secondary
    fails the deep check too."""
    primary = start_registry("primary", True)
    secondary = start_registry("secondary", True)
    estate = make_estate()
    with RawPusher.for_registry(primary) as primary_pusher, RawPusher.for_registry(secondary) as pusher:
        push_estate(primary_pusher, estate, fallback=False)
        config = write_geo_config(tmp_path / "geo", primary, [secondary], key_pair)
        assert sync_json(capsys, config)[0] == 0

        def verify(*args: str) -> tuple[int, dict[str, Any]]:
            code, out, err = run_cli(capsys, "--config", str(config), "verify", "--json", *args)
            assert "Traceback" not in err
            (result,) = json.loads(out)
            return code, result

        code, result = verify("--deep")
        assert code == 0, result
        # the image, the index and its 2 children, and the 5 untagged referrers (one of them 2 levels deep)
        tagged = 1 + 1 + len(estate.index.children)
        assert result["blobs"]["manifests"] == tagged + len(estate.artifacts), result

        # a blob of the SBOM's signature (a referrer of a referrer, untagged) lost from storage
        image_sbom = estate.by_subject[estate.image.digest][1]
        payload = estate.signature_of(image_sbom).blobs[-1]
        blob_file(secondary, payload.digest).unlink()
        code, result = verify()
        assert code == 0, result  # the checksum depth looks at no blob
        code, out, _ = run_cli(capsys, "--config", str(config), "verify", "--deep")
        assert code == 1, out
        assert re.search(rf"^FAIL +secondary +{REPO}: .*missing blob {payload.digest}", out, re.M), out
        code, result = verify("--deep")
        assert code == 1 and result["missing"] == [payload.digest], result

        # the resync that failure queued looks below the referrers too, and puts the blob back
        code, out, err = run_cli(capsys, "--config", str(config), "resync", REPO, "--now", "--json")
        assert code == 0, err
        assert json.loads(out)["sites"]["secondary"]["blobs_copied"] == 1
        assert blob_file(secondary, payload.digest).read_bytes() == payload.data
        code, result = verify("--deep")
        assert code == 0 and result["missing"] == [], result

        # a signature lost from the secondary: not listed there, so deep verification fails on it
        lost = estate.signature_of(estate.index)
        assert pusher.delete_manifest(REPO, lost.digest).status_code == 202
        code, result = verify("--deep")
        assert code == 1 and lost.digest in result["detail"], result
        assert SIGNATURE in result["detail"]


@pytest.mark.parametrize("secondary_kind", list(KINDS))
def test_deep_verification_checks_the_referrers_of_an_index_s_children(
    secondary_kind: str,
    start_registry: Callable[[str, bool], Distribution | LabInstance],
    key_pair: TestKeyPair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A signature per platform (cosign sign --recursive): its subject is a child of a tagged index, which
    the checksum depth's referrer check (tagged manifests) does not reach. Replicated with the rest; lost
    from the secondary, `verify --deep` names it, and the resync it queues puts it back."""
    primary = start_registry("primary", True)
    secondary = start_registry("secondary", KINDS[secondary_kind])
    index = multi_arch("per-platform")
    child = index.children[0]
    signature = cosign_signature(child, "sig-amd64")
    with RawPusher.for_registry(primary) as primary_pusher, RawPusher.for_registry(secondary) as pusher:
        primary_pusher.push_tree(REPO, index, "multi")
        primary_pusher.push_tree(REPO, signature)  # untagged, its subject untagged too
        config = write_geo_config(tmp_path / "geo", primary, [secondary], key_pair)
        assert sync_json(capsys, config)[0] == 0
        assert pusher.head_manifest(REPO, signature.digest).status_code == 200

        def verify_deep() -> tuple[int, dict[str, Any]]:
            code, out, err = run_cli(capsys, "--config", str(config), "verify", "--deep", "--json")
            assert "Traceback" not in err
            (result,) = json.loads(out)
            return code, result

        code, result = verify_deep()
        assert code == 0, result
        assert result["blobs"]["manifests"] == 1 + len(index.children) + 1 + (
            0 if KINDS[secondary_kind] else 1
        )

        assert pusher.delete_manifest(REPO, signature.digest).status_code == 202
        code, result = verify_deep()
        assert code == 1 and signature.digest in result["detail"], result

        code, _, err = run_cli(capsys, "--config", str(config), "resync", REPO, "--now", "--json")
        assert code == 0, err
        assert pusher.head_manifest(REPO, signature.digest).status_code == 200
        code, result = verify_deep()
        assert code == 0, result
