"""A whole-repository job's HEADs of the primary, shared by its secondaries' runs (engine/shared_heads.py):
asked once for both runs, never held past its age or the job's bound, a failure never shared, a
cancelled run never cancelling the other's answer. The end-to-end count on real Distribution is in
tests/e2e/test_merged_listings.py."""

from __future__ import annotations

import asyncio

import pytest

from geo_tui.engine import shared_heads
from geo_tui.engine.shared_heads import SHARED_HEAD_AGE, SharedHeads
from geo_tui.registry import ManifestInfo

INFO = ManifestInfo("sha256:" + "a" * 64, "application/vnd.oci.image.manifest.v1+json", 512)


class Primary:
    def __init__(self, answer: ManifestInfo | None = INFO, delay: float = 0.0) -> None:
        self.asked: list[str] = []
        self.answer = answer
        self.delay = delay
        self.fail: set[str] = set()

    def ask(self, tag: str):  # type: ignore[no-untyped-def]
        async def head() -> ManifestInfo | None:
            self.asked.append(tag)
            await asyncio.sleep(self.delay)
            if tag in self.fail:
                raise OSError(f"connection reset during HEAD of {tag}")
            return self.answer

        return head


def test_two_runs_ask_each_tag_once_and_nothing_is_held_after() -> None:
    async def main() -> None:
        primary, heads = Primary(delay=0.01), SharedHeads(2)
        tags = [f"build-{i}" for i in range(50)]

        async def run() -> list[ManifestInfo | None]:
            return [await heads.head(t, primary.ask(t)) for t in tags]

        first, second = await asyncio.gather(run(), run())
        assert first == second == [INFO] * 50
        assert sorted(primary.asked) == sorted(tags)  # once each, for both runs
        assert heads.asked == 50 and heads.shared == 50 and len(heads) == 0

    asyncio.run(main())


def test_a_single_run_asks_every_time_and_holds_nothing() -> None:
    async def main() -> None:
        primary, heads = Primary(), SharedHeads(1)
        for _ in range(2):
            assert await heads.head("v1", primary.ask("v1")) == INFO
        assert primary.asked == ["v1", "v1"] and len(heads) == 0

    asyncio.run(main())


def test_an_answer_older_than_its_age_is_asked_again() -> None:
    async def main() -> None:
        now = [100.0]
        primary, heads = Primary(), SharedHeads(2, clock=lambda: now[0])
        await heads.head("v1", primary.ask("v1"))
        now[0] += SHARED_HEAD_AGE + 0.1  # the other run is far behind: it must not compare an old answer
        await heads.head("v1", primary.ask("v1"))
        assert primary.asked == ["v1", "v1"] and heads.shared == 0

    asyncio.run(main())


def test_past_the_bound_a_run_ahead_asks_without_holding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_heads, "SHARED_HEADS", 3)

    async def main() -> None:
        now = [0.0]
        primary, heads = Primary(), SharedHeads(2, clock=lambda: now[0])
        for i in range(5):  # the other run has not started: three held, two asked and not held
            await heads.head(f"t{i}", primary.ask(f"t{i}"))
        assert len(heads) == 3
        for i in range(5):
            await heads.head(f"t{i}", primary.ask(f"t{i}"))
        # t0-t2 taken by both; t3 and t4 asked again by the run behind, and held for one that is past them
        assert heads.shared == 3 and len(primary.asked) == 7 and len(heads) == 2
        await heads.head("u0", primary.ask("u0"))
        await heads.head("u1", primary.ask("u1"))  # full: asked, not held
        assert len(heads) == 3 and "u1" not in heads._answers
        now[0] += SHARED_HEAD_AGE + 1  # old answers go to make room for new ones
        await heads.head("w", primary.ask("w"))
        assert list(heads._answers) == ["w"]

    asyncio.run(main())


def test_a_failed_head_is_not_shared_each_run_asks_and_reports_its_own() -> None:
    async def main() -> None:
        primary, heads = Primary(delay=0.01), SharedHeads(2)
        primary.fail.add("v1")
        results = await asyncio.gather(
            heads.head("v1", primary.ask("v1")), heads.head("v1", primary.ask("v1")), return_exceptions=True
        )
        assert all(isinstance(r, OSError) for r in results), results
        assert primary.asked == ["v1", "v1"]  # the second run asked again
        primary.fail.clear()
        assert await heads.head("v1", primary.ask("v1")) == INFO  # a later run is not given the failure
        assert len(heads) == 1  # held for the other run

    asyncio.run(main())


def test_a_404_is_shared_like_any_answer() -> None:
    async def main() -> None:
        primary, heads = Primary(answer=None, delay=0.01), SharedHeads(2)
        assert await asyncio.gather(
            heads.head("gone", primary.ask("gone")), heads.head("gone", primary.ask("gone"))
        ) == [None, None]
        assert primary.asked == ["gone"]

    asyncio.run(main())


def test_a_run_cancelled_does_not_cancel_the_others_answer() -> None:
    async def main() -> None:
        primary, heads = Primary(delay=0.05), SharedHeads(2)
        first = asyncio.ensure_future(heads.head("v1", primary.ask("v1")))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(heads.head("v1", primary.ask("v1")))
        await asyncio.sleep(0.01)
        first.cancel()
        assert await second == INFO
        assert first.cancelled() and primary.asked == ["v1"]

    asyncio.run(main())
