"""Issue 17's pure parts: the plan a run of coalesced push events follows, and the background budget."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from geo_tui.engine.budget import RequestBudget, Work, request_hook, set_work
from geo_tui.engine.notifications import RegistryEvent
from geo_tui.engine.replicate import CopyPlan

A, B, C, D = (f"sha256:{c * 64}" for c in "abcd")


def test_each_tag_once_in_the_order_of_its_latest_push_and_the_latest_digest_wins() -> None:
    plan = CopyPlan.from_pushes([("v1", A), ("v2", B), ("v1", C), ("v3", D)])
    assert plan.tags == (("v2", B), ("v1", C), ("v3", D))
    assert plan.digests == ()


def test_digest_only_pushes_follow_the_tags_once_and_not_when_a_tag_names_them() -> None:
    plan = CopyPlan.from_pushes([(None, A), (None, B), ("multi", C), (None, A), (None, C)])
    assert plan.tags == (("multi", C),)
    assert plan.digests == (A, B)  # each once, in push order; C is the tag's own manifest


def event(**changes: object) -> RegistryEvent:
    fields: dict[str, object] = {
        "id": "1",
        "action": "push",
        "repository": "group/app",
        "tag": "v1",
        "digest": A,
        "media_type": "application/vnd.oci.image.manifest.v1+json",
        "timestamp": None,
    }
    fields.update(changes)
    return RegistryEvent(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "copyable"),
    [
        ({}, True),
        ({"tag": None}, True),  # an index's child or a referrer, pushed by digest
        ({"action": "delete"}, False),  # deletions need the whole repository (the deletion-safety rule)
        ({"digest": None}, False),
        ({"digest": "sha256:short"}, False),
        ({"tag": "bad tag!"}, False),
        ({"tag": None, "media_type": "application/octet-stream"}, False),  # a blob
    ],
)
def test_which_events_name_what_to_copy(changes: dict[str, object], copyable: bool) -> None:
    assert event(**changes).copyable is copyable


def test_the_budget_spreads_requests_out_and_zero_bounds_nothing() -> None:
    async def take(rate: float, count: int) -> float:
        budget = RequestBudget(rate)
        started = asyncio.get_running_loop().time()
        for _ in range(count):
            await budget.take()
        return asyncio.get_running_loop().time() - started

    # 100/s with a burst of a tenth of a second's worth (10): the last of 31 goes after 20 intervals of 10 ms.
    assert asyncio.run(take(100, 31)) >= 0.19
    assert asyncio.run(take(0, 1000)) < 0.5


def test_the_hook_counts_every_request_and_paces_only_background_work() -> None:
    budget = RequestBudget(20)
    hook = request_hook(budget)
    request = httpx.Request("HEAD", "http://registry.invalid/v2/")

    async def run(background: bool) -> tuple[int, float]:
        work = Work(background=background)
        set_work(work)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(6):
            await hook(request)
        return work.requests, loop.time() - started

    requests, seconds = asyncio.run(run(False))
    assert requests == 6 and seconds < 0.1  # a push's copy never waits
    requests, seconds = asyncio.run(run(True))
    assert (
        requests == 6 and seconds >= 0.14
    )  # 20/s, a burst of 2: the sixth goes out after 3 intervals of 50 ms
