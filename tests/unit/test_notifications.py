"""Registry notifications: the envelope parser, which events matter, and the receiver app in-process.

The receiver runs against a real `Engine` over a temporary config (opened, never started: nothing is
copied, the registries named in the config are never contacted) through `httpx.ASGITransport`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geo_tui.config import load_config
from geo_tui.engine.engine import Engine
from geo_tui.engine.notifications import EnvelopeError, RegistryEvent, parse_envelope
from geo_tui.service.receiver import EVENTS_PATH, MAX_BODY, ReceiverApp

SECRET = "UnitNotifySecret-0123456789abcdef"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DIGEST = "sha256:" + "ab" * 32
INVALID_NAMES = ["../x", "UPPER", "a" * 300, "group/../x", "", "a//b", "-a", "a/"]


def event(
    action: str = "push",
    repository: str = "group/app",
    *,
    tag: str | None = "v1",
    media_type: str | None = OCI_MANIFEST,
    digest: str | None = DIGEST,
    event_id: str = "0b5b3b0e-0000-4000-8000-000000000001",
) -> dict[str, Any]:
    """One event as Distribution 2.8 posts it (fields it does not send for the case are left out)."""
    target: dict[str, Any] = {"repository": repository, "size": 428, "length": 428}
    if media_type is not None:
        target["mediaType"] = media_type
    if digest is not None:
        target["digest"] = digest
        target["url"] = f"http://127.0.0.1:5000/v2/{repository}/manifests/{digest}"
    if tag is not None:
        target["tag"] = tag
    return {
        "id": event_id,
        "timestamp": "2024-05-01T10:11:12.123456789Z",
        "action": action,
        "target": target,
        "request": {
            "id": "req-1",
            "addr": "127.0.0.1:40000",
            "host": "127.0.0.1:5000",
            "method": "PUT",
            "useragent": "skopeo/1.9.3",
        },
        "actor": {},
        "source": {"addr": "host:5000", "instanceID": "e4a0d4a3"},
    }


def envelope(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


# -- parse_envelope ---------------------------------------------------------------------------------


def test_v1_envelope_as_distribution_2_8_posts_it() -> None:
    (parsed,) = parse_envelope(envelope(event()))
    assert parsed == RegistryEvent(
        id="0b5b3b0e-0000-4000-8000-000000000001",
        action="push",
        repository="group/app",
        tag="v1",
        digest=DIGEST,
        media_type=OCI_MANIFEST,
        timestamp="2024-05-01T10:11:12.123456789Z",
        user_agent="skopeo/1.9.3",
    )
    assert parsed.created_at == pytest.approx(1714558272.123456)
    assert not parsed.own  # skopeo's push, not one of geo-tui's reads


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2024-05-01T10:11:12Z", 1714558272.0),
        ("2024-05-01T10:11:12.5+02:00", 1714551072.5),
        ("2024-05-01T10:11:12.123456789123Z", 1714558272.123456),
        ("yesterday", None),
        ("2024-13-01T10:11:12Z", None),
        (None, None),
    ],
)
def test_an_event_timestamp_is_read_to_the_microsecond_or_not_at_all(
    timestamp: str | None, expected: float | None
) -> None:
    raw = event()
    if timestamp is None:
        del raw["timestamp"]
    else:
        raw["timestamp"] = timestamp
    (parsed,) = parse_envelope(envelope(raw))
    assert parsed.created_at == (pytest.approx(expected) if expected is not None else None)


def test_an_event_caused_by_geo_tui_is_told_apart_by_its_user_agent() -> None:
    raw = event("pull")
    raw["request"]["useragent"] = "geo-tui/0.9.0"
    other = event("pull")
    del other["request"]
    own, anonymous = parse_envelope(envelope(raw, other))
    assert own.own and own.user_agent == "geo-tui/0.9.0"
    assert not anonymous.own and anonymous.user_agent is None


def test_v2_envelope_of_distribution_3() -> None:
    # Distribution 3 (events.v2+json): the same {"events": [...]} shape; extra fields are ignored.
    raw = event(tag="latest")
    raw["target"]["references"] = [{"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": 1}]
    raw["target"]["repository"] = "ns/deep/app"
    raw["request"]["useragent"] = "containerd/2.0"
    body = json.dumps({"events": [raw, event("pull", event_id="2")]}, indent=2).encode()
    parsed = parse_envelope(body)
    assert [(e.action, e.repository, e.tag) for e in parsed] == [
        ("push", "ns/deep/app", "latest"),
        ("pull", "group/app", "v1"),
    ]


def test_plain_json_with_odd_fields_is_kept_with_what_it_has() -> None:
    body = b'{"events": [{"action": "PUSH", "target": {"repository": "app", "tag": 7}}, 3, "x", null, {}]}'
    parsed = parse_envelope(body)
    assert len(parsed) == 2  # non-objects are skipped
    assert parsed[0].action == "push" and parsed[0].repository == "app" and parsed[0].tag is None
    assert parsed[1] == RegistryEvent("", "", "", None, None, None, None)
    assert parse_envelope(b'{"events": []}') == []
    assert parse_envelope('{"events": [{"target": "nope"}]}'.encode("utf-16")) == [
        RegistryEvent("", "", "", None, None, None, None)
    ]


@pytest.mark.parametrize("action", ["push", "pull", "delete", "mount", "frobnicate", "", "PULL"])
def test_every_action_is_accepted(action: str) -> None:
    (parsed,) = parse_envelope(envelope(event(action)))
    assert parsed.action == action.lower()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'[{"events": []}]',
        b"null",
        b'"events"',
        b"42",
        b'{"events": {}}',
        b'{"events": null}',
        b'{"event": []}',
        b"\xff\xfe\xfa",
        b'{"events": [}',
    ],
)
def test_what_is_not_an_envelope_raises_envelope_error(body: bytes) -> None:
    with pytest.raises(EnvelopeError):
        parse_envelope(body)


def test_deeply_nested_json_raises_envelope_error() -> None:
    # 100 KB, well under the receiver's 1 MiB limit: the stdlib parser recurses once per level.
    for body in (b"[" * 100_000, b'{"events": ' + b"[" * 100_000, b'{"a":' * 50_000):
        with pytest.raises(EnvelopeError):
            parse_envelope(body)


# -- which events matter ----------------------------------------------------------------------------


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST, None, "application/octet-stream"])
def test_a_manifest_push_by_tag_matters(media_type: str | None) -> None:
    assert RegistryEvent("1", "push", "group/app", "v1", DIGEST, media_type, None).matters


@pytest.mark.parametrize(
    "media_type", [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, SCHEMA1_SIGNED]
)
def test_a_manifest_push_by_digest_matters(media_type: str) -> None:
    (parsed,) = parse_envelope(envelope(event(tag=None, media_type=media_type)))
    assert parsed.tag is None and parsed.matters


def test_blob_pushes_do_not_matter() -> None:
    (parsed,) = parse_envelope(envelope(event(tag=None, media_type="application/octet-stream")))
    assert not parsed.matters
    layer = "application/vnd.oci.image.layer.v1.tar+gzip"
    assert not RegistryEvent("1", "push", "group/app", None, DIGEST, layer, None).matters
    assert not RegistryEvent("1", "push", "group/app", None, DIGEST, None, None).matters


def test_deletes_matter_even_without_a_media_type() -> None:
    (parsed,) = parse_envelope(envelope(event("delete", tag=None, media_type=None)))
    assert parsed.matters
    assert RegistryEvent("1", "delete", "group/app", "v1", None, None, None).matters


@pytest.mark.parametrize("action", ["pull", "mount", "frobnicate", ""])
def test_pulls_mounts_and_unknown_actions_do_not_matter(action: str) -> None:
    (parsed,) = parse_envelope(envelope(event(action)))
    assert not parsed.matters


@pytest.mark.parametrize("name", INVALID_NAMES, ids=lambda n: f"{n[:8]}({len(n)})")
def test_invalid_repository_names_do_not_matter(name: str) -> None:
    for action in ("push", "delete"):
        (parsed,) = parse_envelope(envelope(event(action, name)))
        assert not parsed.matters, f"{action} of {name[:40]!r} ({len(name)} chars) should not matter"


def test_an_over_long_repository_name_is_not_cut_into_another_valid_one() -> None:
    # Cutting "aaa...ab" (301 chars) to 300 would name a different repository, "aaa...a".
    (parsed,) = parse_envelope(envelope(event(repository="a" * 300 + "b")))
    assert not parsed.matters


# -- hypothesis: nothing but EnvelopeError ----------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "action": st.sampled_from(["push", "pull", "delete", "mount"]) | json_values,
        "timestamp": json_values,
        "target": st.fixed_dictionaries(
            {},
            optional={
                "repository": st.text(max_size=400) | json_values,
                "tag": st.text(max_size=200) | json_values,
                "digest": json_values,
                "mediaType": st.sampled_from([OCI_MANIFEST, "application/octet-stream"]) | json_values,
            },
        )
        | json_values,
    },
)


def _parse_or_envelope_error(body: bytes) -> None:
    try:
        events = parse_envelope(body)
    except EnvelopeError:
        return
    for parsed in events:
        assert isinstance(parsed, RegistryEvent)
        _ = parsed.matters  # never raises either


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_nothing_but_envelope_error(body: bytes) -> None:
    _parse_or_envelope_error(body)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_raises_nothing_but_envelope_error(value: Any) -> None:
    _parse_or_envelope_error(json.dumps(value).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_like | json_values, max_size=5))
def test_arbitrary_envelopes_raise_nothing(events: list[Any]) -> None:
    parsed = parse_envelope(json.dumps({"events": events}).encode())
    assert len(parsed) == sum(isinstance(e, dict) for e in events)
    for one in parsed:
        _ = one.matters


# -- the receiver app, in-process, over a real Engine -----------------------------------------------


def _write_config(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        "engine": {"database": str(directory / "tracking.db"), "reconcile_interval": 3600},
        "notifications": {"listen": "127.0.0.1:5999", "secret": SECRET},
        # Never contacted: the engine is opened, not started.
        "primary": {"name": "primary", "registry": "http://127.0.0.1:9", "auth": "none"},
        "secondaries": [
            {"name": "eu", "registry": "http://127.0.0.1:10", "auth": "none"},
            {"name": "us", "registry": "http://127.0.0.1:11", "auth": "none", "exclude": ["private/*"]},
        ],
    }
    path = directory / "config.toml"
    path.write_text(tomli_w.dumps(data))
    path.chmod(0o600)
    return path


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    engine = Engine(load_config(_write_config(tmp_path / "geo")))
    await engine.open()
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=ReceiverApp(engine, SECRET))
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as http:
        yield http


def _post(client: httpx.AsyncClient, body: bytes, secret: str | None = SECRET, **kwargs: Any) -> Any:
    headers = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
    if secret is not None:
        headers["Authorization"] = secret
    return client.post(EVENTS_PATH, content=body, headers=headers, **kwargs)


def _db_rows(engine: Engine, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    # A second, read-only connection: what is on disk, not what the engine's connection holds.
    with sqlite3.connect(f"file:{engine.config.engine.database}?mode=ro", uri=True) as db:
        return list(db.execute(sql, params).fetchall())


def _notification_count(engine: Engine) -> int:
    return int(_db_rows(engine, "SELECT COUNT(*) FROM notifications")[0][0])


def _repository_count(engine: Engine) -> int:
    return int(_db_rows(engine, "SELECT COUNT(*) FROM repositories")[0][0])


@pytest.mark.parametrize(
    "given_secret",
    [
        None,
        "",
        "wrong",
        SECRET[:-1],
        SECRET + "x",
        SECRET.lower(),
        f"Bearer {SECRET}",
        " " + SECRET,
    ],
)
async def test_no_or_wrong_secret_is_401_without_a_hint(
    client: httpx.AsyncClient, engine: Engine, given_secret: str | None
) -> None:
    response = await _post(client, envelope(event()), secret=given_secret)
    assert response.status_code == 401
    text = response.text
    for fragment in (SECRET, SECRET[:8], SECRET[-8:], str(len(SECRET))):
        assert fragment not in text
    assert not any(k.lower() == "www-authenticate" for k in response.headers)
    assert _notification_count(engine) == 0 and _repository_count(engine) == 0


async def test_a_wrong_secret_is_checked_before_the_body(client: httpx.AsyncClient, engine: Engine) -> None:
    response = await _post(client, b"x" * (MAX_BODY + 1), secret="wrong")
    assert response.status_code == 401


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe\x00", b"", b'{"events": "x"}', b"null"])
async def test_malformed_json_is_400(client: httpx.AsyncClient, engine: Engine, body: bytes) -> None:
    response = await _post(client, body)
    assert response.status_code == 400
    assert SECRET not in response.text
    assert _notification_count(engine) == 0


async def test_a_json_array_is_400(client: httpx.AsyncClient, engine: Engine) -> None:
    response = await _post(client, json.dumps([event()]).encode())
    assert response.status_code == 400
    assert _notification_count(engine) == 0 and _repository_count(engine) == 0


async def test_deeply_nested_json_is_400(client: httpx.AsyncClient, engine: Engine) -> None:
    response = await _post(client, b'{"events": ' + b"[" * 100_000)
    assert response.status_code == 400


async def test_a_5_mib_body_is_413(client: httpx.AsyncClient, engine: Engine) -> None:
    big = envelope(event()) + b" " * (5 * 1024 * 1024)
    response = await _post(client, big)
    assert response.status_code == 413
    assert _notification_count(engine) == 0 and _repository_count(engine) == 0


async def test_a_5_mib_body_without_content_length_is_413(client: httpx.AsyncClient, engine: Engine) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(80):
            yield b" " * 65536

    response = await client.post(EVENTS_PATH, content=chunks(), headers={"Authorization": SECRET})
    assert response.status_code == 413
    assert _notification_count(engine) == 0


async def test_unknown_actions_are_200_and_not_queued(client: httpx.AsyncClient, engine: Engine) -> None:
    response = await _post(client, envelope(event("frobnicate"), event("pull"), event("mount")))
    assert response.status_code == 200
    assert response.json() == {"accepted": 3, "queued": 0}
    assert _notification_count(engine) == 0 and _repository_count(engine) == 0


async def test_an_event_for_a_repository_the_primary_lacks_is_200(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    # The receiver does not ask the primary; the sync finds nothing there and copies nothing.
    response = await _post(client, envelope(event(repository="no/such-repository")))
    assert response.status_code == 200


@pytest.mark.parametrize("name", INVALID_NAMES, ids=lambda n: f"{n[:8]}({len(n)})")
async def test_invalid_repository_names_are_200_and_not_queued(
    client: httpx.AsyncClient, engine: Engine, name: str
) -> None:
    response = await _post(client, envelope(event(repository=name), event("delete", name, tag=None)))
    assert response.status_code == 200
    assert response.json()["queued"] == 0
    assert _repository_count(engine) == 0 and _notification_count(engine) == 0


async def test_a_good_event_is_stored_and_queued_before_the_200(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    before = engine.tracking._clock()
    response = await _post(client, envelope(event(repository="group/app", tag="v7")))
    assert response.status_code == 200
    # Issue 17: the push is queued as itself, for a copy of what it names (one), and its new repository
    # is tracked on both sites.
    assert response.json() == {"accepted": 1, "queued": 1}
    pushes = _db_rows(engine, "SELECT repository, tag, digest, received_at FROM push_queue")
    assert [p[:3] for p in pushes] == [("group/app", "v7", DIGEST)] and pushes[0][3] >= before
    rows = _db_rows(
        engine, "SELECT site, state FROM repositories WHERE repository = ? ORDER BY site", ("group/app",)
    )
    assert rows == [("eu", "pending"), ("us", "pending")]
    stored = _db_rows(engine, "SELECT event_id, action, repository, tag, digest FROM notifications")
    assert stored == [("0b5b3b0e-0000-4000-8000-000000000001", "push", "group/app", "v7", DIGEST)]
    assert engine.last_event_at is not None
    # the engine's own view agrees
    assert [r.site for r in engine.tracking.due(engine.tracking._clock() + 1)] == ["eu", "us"]


async def test_a_filtered_repository_is_queued_only_where_wanted(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    response = await _post(client, envelope(event(repository="private/app")))
    assert response.status_code == 200 and response.json()["queued"] == 1
    assert _db_rows(engine, "SELECT site FROM repositories") == [("eu",)]


async def test_a_mixed_envelope_queues_only_what_matters(client: httpx.AsyncClient, engine: Engine) -> None:
    body = envelope(
        event("push", "mixed/app", tag=None, media_type="application/octet-stream", event_id="blob"),
        event("pull", "mixed/app", event_id="pull"),
        event("push", "../x", event_id="bad"),
        event("push", "mixed/app", tag="v1", event_id="manifest"),
        event("delete", "mixed/gone", tag=None, media_type=None, event_id="delete"),
    )
    response = await _post(client, body)
    assert response.status_code == 200
    assert response.json() == {"accepted": 5, "queued": 3}  # one push to copy, two rows for the deletion
    ids = [r[0] for r in _db_rows(engine, "SELECT event_id FROM notifications ORDER BY id")]
    assert ids == ["manifest", "delete"]


async def test_a_second_push_queues_after_the_first_and_the_oldest_time_is_kept(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    assert (await _post(client, envelope(event()))).status_code == 200
    first = engine.tracking.row("eu", "group/app")
    oldest = engine.tracking.oldest_queued_push()
    assert first is not None and oldest is not None
    assert (await _post(client, envelope(event(tag="v2")))).status_code == 200
    second = engine.tracking.row("eu", "group/app")
    assert second is not None
    # Issue 17: pushes queue copies of themselves, in order; no whole-repository run is asked for.
    assert [p.tag for p in engine.tracking.queued_pushes()] == ["v1", "v2"]
    assert engine.tracking.oldest_queued_push() == oldest  # the lag counts from the oldest waiting push
    assert second.generation == first.generation
    assert _notification_count(engine) == 2


async def test_a_delete_event_queues_a_whole_repository_run_with_its_time(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    assert (await _post(client, envelope(event("delete", tag=None, media_type=None)))).status_code == 200
    assert engine.tracking.queued_pushes() == []
    rows = _db_rows(engine, "SELECT site, oldest_unsynced_event_at FROM repositories ORDER BY site")
    assert [site for site, _ in rows] == ["eu", "us"] and all(at is not None for _, at in rows)


async def test_a_lone_surrogate_in_a_tag_is_not_a_storage_failure(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    # JSON may escape a lone surrogate; Python decodes it, SQLite cannot encode it as UTF-8.
    body = (
        b'{"events": [{"action": "push", "target": {"repository": "group/app", "tag": "\\ud800",'
        b' "mediaType": "application/vnd.oci.image.manifest.v1+json"}}]}'
    )
    response = await _post(client, body)
    assert response.status_code in (200, 400), response.text  # not 503: a registry would retry forever


async def test_other_paths_and_methods(client: httpx.AsyncClient, engine: Engine) -> None:
    assert (await client.get(EVENTS_PATH, headers={"Authorization": SECRET})).status_code == 405
    health = await client.get("/-/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and "geo_tui_notifications" in metrics.text
    assert (await client.get("/nope")).status_code == 404
    await _post(client, envelope(event()), secret="wrong")
    assert (
        'geo_tui_notification_requests_rejected_total{status="401"} 1.0'
        in (await client.get("/metrics")).text
    )


async def test_without_a_secret_the_events_path_does_not_exist(engine: Engine) -> None:
    transport = httpx.ASGITransport(app=ReceiverApp(engine, None))
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as http:
        response = await http.post(EVENTS_PATH, content=envelope(event()), headers={"Authorization": ""})
    assert response.status_code == 404
    assert _notification_count(engine) == 0
