"""The lab registry's notifications: Distribution's envelope, posted in order with retries, accepted by
geo-tui's parser, and the same events that matter as Distribution 2.8 sends for the same pushes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from geo_tui.engine.notifications import parse_envelope
from geo_tui.lab import LabRegistry
from tests.support import oci
from tests.support.binaries import find_binary
from tests.support.distribution import Distribution
from tests.support.event_sink import Sink
from tests.support.push import RawPusher

pytestmark = pytest.mark.timeout(60)

SECRET = "lab-notification-secret-0123"


@pytest.fixture
def sink() -> Iterator[Sink]:
    found = Sink()
    yield found
    found.close()


def _manifest_pushed(tag: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: any(e["action"] == "push" and e["target"].get("tag") == tag for e in events)


def _tag_deleted(tag: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: any(e["action"] == "delete" and e["target"].get("tag") == tag for e in events)


def test_ignored_actions_and_media_types_are_not_sent(sink: Sink, tmp_path: Path) -> None:
    """As Distribution's ``ignore`` in `geo-tui init`'s snippet, which the demo's primary copies: no pull
    events, no blob events; the manifest push and the deletes still come, in order."""
    image = oci.oci_image(1)
    lab = LabRegistry(
        tmp_path / "lab",
        auth="none",
        notification_url=sink.url,
        notification_secret=SECRET,
        ignore_actions=frozenset({"pull"}),
        ignore_media_types=frozenset({"application/octet-stream"}),
    )
    with lab, RawPusher(lab.url) as pusher:
        pusher.push_tree("notify/app", image, "v1")
        assert pusher.get_manifest("notify/app", "v1").status_code == 200
        assert pusher.delete_manifest("notify/app", image.digest).status_code == 202
        events = sink.wait(_tag_deleted("v1"))
    actions = [(e["action"], e["target"].get("mediaType")) for e in events]
    assert actions == [("push", oci.OCI_MANIFEST), ("delete", None), ("delete", None)]


def test_push_pull_delete_events_in_distribution_format(sink: Sink, tmp_path: Path) -> None:
    image = oci.oci_image(1)
    lab = LabRegistry(tmp_path / "lab", auth="none", notification_url=sink.url, notification_secret=SECRET)
    with lab, RawPusher(lab.url) as pusher:
        pusher.push_tree("notify/app", image, "v1")
        assert pusher.get_manifest("notify/app", "v1").status_code == 200
        assert pusher.delete_manifest("notify/app", image.digest).status_code == 202
        events = sink.wait(_tag_deleted("v1"))
    assert SECRET not in repr(lab)

    for headers, body in sink.posts:
        assert headers["Authorization"] == SECRET
        assert headers["Content-Type"] == "application/vnd.docker.distribution.events.v1+json"
        assert len(json.loads(body)["events"]) == 1  # one event per POST, as 2.8 sends them
    actions = [(e["action"], e["target"].get("mediaType")) for e in events]
    blob_pushes = [a for a in actions if a == ("push", "application/octet-stream")]
    assert len(blob_pushes) == len(image.blobs)
    assert actions[len(blob_pushes) :] == [
        ("push", oci.OCI_MANIFEST),
        ("pull", oci.OCI_MANIFEST),
        ("delete", None),
        ("delete", None),
    ], "blob pushes first, then the manifest push, the pull and the delete, in order"
    push = events[len(blob_pushes)]["target"]
    assert push == {
        "mediaType": oci.OCI_MANIFEST,
        "size": len(image.manifest),
        "length": len(image.manifest),
        "digest": image.digest,
        "repository": "notify/app",
        "url": f"{lab.url}/v2/notify/app/manifests/{image.digest}",
        "tag": "v1",
    }
    assert all(e["id"] and e["timestamp"].endswith("Z") and e["source"]["instanceID"] for e in events)

    # geo-tui's own parser accepts every event and acts on the manifest push and the delete.
    parsed = [event for _, body in sink.posts for event in parse_envelope(body)]
    assert len(parsed) == len(events)
    mattering = [(p.action, p.repository, p.tag, p.digest) for p in parsed if p.matters]
    assert mattering == [
        ("push", "notify/app", "v1", image.digest),
        ("delete", "notify/app", None, image.digest),
        ("delete", "notify/app", "v1", None),  # the tag went with the manifest
    ]


def test_refused_posts_are_retried_in_order(tmp_path: Path) -> None:
    sink = Sink(fail_first=3)
    lab = LabRegistry(tmp_path / "lab", auth="none", notification_url=sink.url, notification_secret=SECRET)
    try:
        with lab, RawPusher(lab.url) as pusher:
            for tag in ("a", "b", "c"):
                pusher.push_tree("notify/order", oci.oci_image(2), tag)
            events = sink.wait(_manifest_pushed("c"))
    finally:
        sink.close()
    assert sink.refused == 3
    tags = [e["target"]["tag"] for e in events if e["target"].get("tag")]
    assert tags == ["a", "b", "c"]


def test_an_unreachable_endpoint_never_blocks_a_request(tmp_path: Path) -> None:
    lab = LabRegistry(tmp_path / "lab", auth="none", notification_url="http://127.0.0.1:9/events")
    with lab, RawPusher(lab.url) as pusher:
        started = time.monotonic()
        pusher.push_tree("notify/dead-end", oci.oci_image(3), "v1")
        assert time.monotonic() - started < 5
        assert httpx.get(f"{lab.url}/v2/notify/dead-end/tags/list").json()["tags"] == ["v1"]


def test_the_events_that_matter_are_those_distribution_sends(sink: Sink, tmp_path: Path) -> None:
    find_binary("docker-registry")
    index = oci.multi_arch(4)
    other = Sink()
    distribution = Distribution(tmp_path / "distribution", auth="none", notification_url=other.url)
    lab = LabRegistry(tmp_path / "lab", auth="none", notification_url=sink.url)
    mattering: dict[str, list[tuple[str, str | None, str | None, str | None]]] = {}
    try:
        for kind, registry, received in (("distribution", distribution, other), ("lab", lab, sink)):
            with registry, RawPusher(registry.url) as pusher:
                pusher.push_tree("notify/multi", index, "v1")
                pusher.delete_manifest("notify/multi", index.digest)
                received.wait(_tag_deleted("v1"))
            parsed = [event for _, body in received.posts for event in parse_envelope(body)]
            pushes = [
                (p.action, p.tag, p.digest, p.media_type) for p in parsed if p.matters and p.action == "push"
            ]
            deletes = [
                (p.action, p.tag, p.digest, None) for p in parsed if p.matters and p.action == "delete"
            ]
            mattering[kind] = sorted(pushes, key=repr) + deletes
    finally:
        other.close()
    assert mattering["lab"] == mattering["distribution"]
    assert ("push", "v1", index.digest, oci.OCI_INDEX) in mattering["lab"]
