"""The manifest parser takes untrusted bytes: it returns refs or raises InvalidManifest, nothing else."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from geo_tui.registry import (
    DOCKER_LIST,
    DOCKER_MANIFEST_V2,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    InvalidManifest,
    ManifestRefs,
    compute_digest,
    is_valid_digest,
    manifest_digest,
    parse_manifest,
    parse_referrers,
)

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
BUILDKIT_CACHE = "application/vnd.buildkit.cacheconfig.v0"


def digest_of(seed: object) -> str:
    return compute_digest(repr(seed).encode())


def descriptor(media_type: str | None, seed: object, size: int = 10, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"digest": digest_of(seed), "size": size, **extra}
    if media_type is not None:
        d["mediaType"] = media_type
    return d


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=3).encode()


# --- digests ----------------------------------------------------------------------------------


def test_is_valid_digest() -> None:
    assert is_valid_digest("sha256:" + "a" * 64)
    assert is_valid_digest("sha512:" + "0" * 128)
    for bad in ("sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha512:" + "a" * 64, "md5:abc", "", "sha256:"):
        assert not is_valid_digest(bad)
    assert not is_valid_digest("sha256:" + "a" * 64 + "\n")


def test_compute_digest() -> None:
    assert compute_digest(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_manifest_digest_of_non_schema1_is_sha256_of_the_bytes() -> None:
    content = encode({"schemaVersion": 2, "mediaType": OCI_MANIFEST})
    assert manifest_digest(content, OCI_MANIFEST) == compute_digest(content)
    assert manifest_digest(content, OCI_MANIFEST, "sha512") == "sha512:" + hashlib.sha512(content).hexdigest()


# --- schema 1 signed with a real libtrust ES256 signature -------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def libtrust_sign(payload: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """A libtrust pretty JWS: the signatures are spliced in before the payload's closing brace."""
    format_length = len(payload.rstrip()[:-1].rstrip())
    format_tail = payload[format_length:]
    protected = b64url(
        json.dumps(
            {"formatLength": format_length, "formatTail": b64url(format_tail), "time": "2024-01-01T00:00:00Z"}
        ).encode()
    )
    r, s = decode_dss_signature(
        key.sign(f"{protected}.{b64url(payload)}".encode(), ec.ECDSA(hashes.SHA256()))
    )
    numbers = key.public_key().public_numbers()
    signature = {
        "header": {
            "jwk": {
                "kty": "EC",
                "crv": "P-256",
                "x": b64url(numbers.x.to_bytes(32, "big")),
                "y": b64url(numbers.y.to_bytes(32, "big")),
            },
            "alg": "ES256",
        },
        "signature": b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big")),
        "protected": protected,
    }
    block = json.dumps([signature], indent=3).replace("\n", "\n   ")
    return payload[:format_length] + f',\n   "signatures": {block}'.encode() + format_tail


def schema1_payload(layers: list[str]) -> bytes:
    return encode(
        {
            "schemaVersion": 1,
            "name": "group/app",
            "tag": "old",
            "architecture": "amd64",
            "fsLayers": [{"blobSum": d} for d in layers],
            "history": [{"v1Compatibility": json.dumps({"id": str(i)})} for i in range(len(layers))],
        }
    )


def test_schema1_signed_digest_is_over_the_payload_without_signatures() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    layers = [digest_of("l1"), digest_of("l2"), digest_of("l1")]
    payload = schema1_payload(layers)
    signed = libtrust_sign(payload, key)

    # The signature is real: it verifies over protected.payload with the embedded key.
    sig = json.loads(signed)["signatures"][0]
    header = json.loads(b64url_decode(sig["protected"]))
    rebuilt = signed[: header["formatLength"]] + b64url_decode(header["formatTail"])
    assert rebuilt == payload
    raw = b64url_decode(sig["signature"])
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.public_key().verify(der, f"{sig['protected']}.{b64url(payload)}".encode(), ec.ECDSA(hashes.SHA256()))

    expected = "sha256:" + hashlib.sha256(payload).hexdigest()
    assert manifest_digest(signed, DOCKER_SCHEMA1_SIGNED) == expected
    assert manifest_digest(signed, DOCKER_SCHEMA1_SIGNED + "; charset=utf-8") == expected
    assert manifest_digest(signed, DOCKER_SCHEMA1_SIGNED) != compute_digest(signed)

    refs = parse_manifest(signed, DOCKER_SCHEMA1_SIGNED)
    assert refs.media_type == DOCKER_SCHEMA1_SIGNED
    assert [b.digest for b in refs.blobs] == [digest_of("l1"), digest_of("l2")]  # distinct, in order
    assert all(b.size == -1 for b in refs.blobs)
    assert parse_manifest(signed, "application/json").media_type == DOCKER_SCHEMA1_SIGNED


def test_schema1_signatures_that_disagree_or_are_broken_are_invalid() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signed = json.loads(libtrust_sign(schema1_payload([digest_of(1)]), key))
    broken = dict(signed, signatures=[{"protected": "!!!"}])
    with pytest.raises(InvalidManifest, match="protected header"):
        manifest_digest(json.dumps(broken).encode(), DOCKER_SCHEMA1_SIGNED)
    huge = b64url(json.dumps({"formatLength": 10**9, "formatTail": ""}).encode())
    with pytest.raises(InvalidManifest, match="formatLength"):
        manifest_digest(json.dumps(dict(signed, signatures=[{"protected": huge}])).encode(), DOCKER_SCHEMA1)
    unsigned = schema1_payload([digest_of(1)])
    assert manifest_digest(unsigned, DOCKER_SCHEMA1) == compute_digest(unsigned)
    assert parse_manifest(unsigned, None).media_type == DOCKER_SCHEMA1


# --- parsing ----------------------------------------------------------------------------------


def test_oci_manifest_with_subject_and_artifact_type() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": descriptor(OCI_CONFIG, "c"),
        "layers": [descriptor(OCI_LAYER, "l1"), descriptor(OCI_LAYER, "l2", urls=["https://x/l2"])],
        "subject": descriptor(OCI_MANIFEST, "s", 99),
    }
    refs = parse_manifest(encode(doc), OCI_MANIFEST)
    assert refs == ManifestRefs(
        media_type=OCI_MANIFEST,
        blobs=(
            Descriptor(OCI_CONFIG, digest_of("c"), 10),
            Descriptor(OCI_LAYER, digest_of("l1"), 10),
            Descriptor(OCI_LAYER, digest_of("l2"), 10, ("https://x/l2",)),
        ),
        subject=Descriptor(OCI_MANIFEST, digest_of("s"), 99),
        artifact_type="application/vnd.example.sbom",
    )
    assert hash(refs) == hash(parse_manifest(encode(doc), OCI_MANIFEST))


def test_referrer_descriptors_carry_artifact_type_and_annotations() -> None:
    """A referrers listing (or fallback index) keeps what it says of each referrer when well formed;
    malformed annotations or artifactType are dropped, never a reason to refuse the listing."""
    listing = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            descriptor(OCI_MANIFEST, "sig", artifactType="application/sig", annotations={"k": "v"}),
            descriptor(OCI_MANIFEST, "odd", artifactType=7, annotations={"k": 1}),
        ],
    }
    signature, odd = parse_referrers(encode(listing))
    assert (signature.artifact_type, signature.annotations) == ("application/sig", {"k": "v"})
    assert (odd.artifact_type, odd.annotations) == (None, None)
    assert signature == Descriptor(OCI_MANIFEST, digest_of("sig"), 10)  # metadata takes no part in equality
    with pytest.raises(InvalidManifest):
        parse_referrers(encode({"manifests": [{"digest": "sha256:short", "size": 1}]}))
    with pytest.raises(InvalidManifest):
        parse_referrers(b"[]")


def test_index_splits_manifests_from_blobs_and_treats_untyped_entries_as_manifests() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            descriptor(OCI_MANIFEST, "amd64", platform={"os": "linux", "architecture": "amd64"}),
            descriptor(OCI_INDEX, "nested"),
            descriptor(None, "untyped"),
            descriptor(BUILDKIT_CACHE, "cache-config"),
            descriptor(OCI_LAYER, "cache-layer"),
        ],
    }
    refs = parse_manifest(encode(doc), None)
    assert refs.media_type == OCI_INDEX
    assert [d.digest for d in refs.manifests] == [
        digest_of("amd64"),
        digest_of("nested"),
        digest_of("untyped"),
    ]
    assert refs.manifests[0].platform == {"os": "linux", "architecture": "amd64"}
    assert refs.manifests[2].media_type == ""
    assert [d.digest for d in refs.blobs] == [digest_of("cache-config"), digest_of("cache-layer")]


def test_docker_list_and_v2_resolve_from_the_header_or_the_body() -> None:
    v2 = encode(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_V2,
            "config": descriptor("application/vnd.docker.container.image.v1+json", "c"),
            "layers": [descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", "l")],
        }
    )
    assert parse_manifest(v2, None).media_type == DOCKER_MANIFEST_V2
    assert parse_manifest(v2, "application/octet-stream").media_type == DOCKER_MANIFEST_V2
    lst = encode(
        {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [descriptor(DOCKER_MANIFEST_V2, 1)]}
    )
    assert parse_manifest(lst, DOCKER_LIST + "; charset=utf-8").manifests[0].digest == digest_of(1)


def test_early_oci_manifests_without_media_type_are_detected_by_shape() -> None:
    manifest = encode({"schemaVersion": 2, "config": descriptor(OCI_CONFIG, "c"), "layers": []})
    assert parse_manifest(manifest, None).media_type == OCI_MANIFEST
    index = encode({"schemaVersion": 2, "manifests": []})
    assert parse_manifest(index, None).media_type == OCI_INDEX


@pytest.mark.parametrize(
    ("content", "content_type", "reason"),
    [
        (b"not json", None, "not JSON"),
        (b"\xff\xfe", None, "not JSON"),
        (b"[1, 2]", None, "not a JSON object"),
        (b"{}", None, "unknown manifest schema"),
        (b'{"schemaVersion": 3}', None, "unknown manifest schema"),
        (b'{"mediaType": "text/html"}', None, "unknown manifest mediaType"),
        (b'{"mediaType": 7}', None, "mediaType is not a string"),
        (b'{"mediaType": "%s", "manifests": {}}' % OCI_INDEX.encode(), None, "manifests is not a list"),
        (b'{"mediaType": "%s"}' % OCI_MANIFEST.encode(), None, "config is not a descriptor"),
        (b'{"mediaType": "%s"}' % OCI_INDEX.encode(), OCI_MANIFEST, "does not match Content-Type"),
        (b'{"schemaVersion": 1, "fsLayers": [{"blobSum": "sha256:x"}]}', None, r"fsLayers\[0\].blobSum"),
        (b"[" * 100000 + b"]" * 100000, None, "not JSON"),
    ],
)
def test_invalid_manifests_are_named_by_digest(content: bytes, content_type: str | None, reason: str) -> None:
    with pytest.raises(InvalidManifest, match=reason) as info:
        parse_manifest(content, content_type)
    assert info.value.digest == compute_digest(content)
    assert compute_digest(content) in str(info.value)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("digest", "sha256:" + "A" * 64, "digest is missing or invalid"),
        ("digest", "sha256:../../etc", "digest is missing or invalid"),
        ("digest", None, "digest is missing or invalid"),
        ("size", -1, "size"),
        ("size", 1.5, "size"),
        ("size", True, "size"),
        ("size", "10", "size"),
        ("size", 2**63, "size"),
        ("urls", "https://x", "urls"),
        ("platform", "linux", "platform"),
        ("mediaType", 5, "mediaType"),
    ],
)
def test_invalid_descriptors(field: str, value: object, reason: str) -> None:
    layer = descriptor(OCI_LAYER, "l")
    layer[field] = value
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, "c"),
        "layers": [layer],
    }
    with pytest.raises(InvalidManifest, match=reason):
        parse_manifest(encode(doc), OCI_MANIFEST)


# --- properties -------------------------------------------------------------------------------


@given(st.binary())
def test_parse_manifest_raises_only_invalid_manifest_on_bytes(content: bytes) -> None:
    try:
        parse_manifest(content, None)
    except InvalidManifest:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
manifest_keys = st.sampled_from(
    [
        "schemaVersion",
        "mediaType",
        "config",
        "layers",
        "manifests",
        "subject",
        "fsLayers",
        "signatures",
        "artifactType",
        "digest",
        "size",
        "urls",
        "platform",
        "blobSum",
    ]
)
manifest_like = st.recursive(
    st.none()
    | st.integers(-2, 3)
    | st.sampled_from([OCI_INDEX, OCI_MANIFEST, DOCKER_SCHEMA1, digest_of(0), ""]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(manifest_keys, children, max_size=5),
    max_leaves=25,
)


@given(
    st.one_of(json_values, manifest_like),
    st.sampled_from([None, OCI_INDEX, OCI_MANIFEST, DOCKER_SCHEMA1_SIGNED]),
)
def test_parse_manifest_raises_only_invalid_manifest_on_json(
    document: object, content_type: str | None
) -> None:
    content = json.dumps(document).encode()
    try:
        parse_manifest(content, content_type)
    except InvalidManifest:
        pass
    try:
        manifest_digest(content, content_type or DOCKER_SCHEMA1_SIGNED)
    except InvalidManifest:
        pass


digests = st.one_of(
    st.binary(max_size=8).map(compute_digest),
    st.binary(max_size=8).map(lambda b: "sha512:" + hashlib.sha512(b).hexdigest()),
)
blob_types = st.sampled_from([OCI_LAYER, OCI_CONFIG, BUILDKIT_CACHE, "application/octet-stream"])
manifest_types = st.sampled_from([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_V2, DOCKER_LIST])
sizes = st.integers(0, 2**63 - 1)
platforms = st.none() | st.fixed_dictionaries(
    {"os": st.sampled_from(["linux", "windows"]), "architecture": st.text(max_size=8)}
)


@st.composite
def descriptors(draw: st.DrawFn, media_types: st.SearchStrategy[str]) -> Descriptor:
    urls = draw(st.lists(st.text(max_size=10), max_size=2))
    return Descriptor(draw(media_types), draw(digests), draw(sizes), tuple(urls), draw(platforms))


def to_json(d: Descriptor) -> dict[str, Any]:
    out: dict[str, Any] = {"digest": d.digest, "size": d.size}
    if d.media_type:
        out["mediaType"] = d.media_type
    if d.urls:
        out["urls"] = list(d.urls)
    if d.platform is not None:
        out["platform"] = d.platform
    return out


@given(
    st.sampled_from([OCI_INDEX, DOCKER_LIST]),
    st.lists(descriptors(manifest_types | st.just("")), max_size=4),
    st.lists(descriptors(blob_types), max_size=3),
    st.none() | descriptors(manifest_types),
    st.none() | st.text(max_size=10),
    st.booleans(),
)
def test_index_round_trip(
    media_type: str,
    children: list[Descriptor],
    blobs: list[Descriptor],
    subject: Descriptor | None,
    artifact_type: str | None,
    send_header: bool,
) -> None:
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
    doc["manifests"] = [to_json(d) for d in [*blobs, *children]]
    if subject is not None:
        doc["subject"] = to_json(subject)
    if artifact_type is not None:
        doc["artifactType"] = artifact_type
    refs = parse_manifest(encode(doc), media_type if send_header else None)
    assert refs == ManifestRefs(media_type, tuple(blobs), tuple(children), subject, artifact_type)
    assert [d.platform for d in refs.manifests] == [d.platform for d in children]


@given(
    st.sampled_from([OCI_MANIFEST, DOCKER_MANIFEST_V2]),
    descriptors(blob_types),
    st.lists(descriptors(blob_types), max_size=5),
    st.none() | descriptors(manifest_types),
)
def test_image_manifest_round_trip(
    media_type: str, config: Descriptor, layers: list[Descriptor], subject: Descriptor | None
) -> None:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": to_json(config),
        "layers": [to_json(d) for d in layers],
    }
    if subject is not None:
        doc["subject"] = to_json(subject)
    refs = parse_manifest(encode(doc), media_type)
    assert refs == ManifestRefs(media_type, (config, *layers), (), subject, None)


@given(st.lists(st.binary(max_size=4).map(compute_digest), min_size=1, max_size=8))
def test_schema1_round_trip(layers: list[str]) -> None:
    refs = parse_manifest(schema1_payload(layers), DOCKER_SCHEMA1)
    assert [b.digest for b in refs.blobs] == list(dict.fromkeys(layers))
    assert refs.manifests == () and refs.subject is None
