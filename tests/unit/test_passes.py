"""A pass's rules: how often a one-shot pass runs a row, when a failure retries within it, what it sums."""

from __future__ import annotations

from geo_tui.engine.passes import Pass
from geo_tui.engine.repository import CopyStats

KEY = ("eu", "app")


def test_a_one_shot_pass_runs_a_row_at_most_its_attempts_and_retries_within_itself_until_then() -> None:
    run = Pass.one_shot(["eu"], attempts=2)
    assert run.may_start(KEY) and not run.is_standing
    run.started(KEY)
    assert run.tries(KEY) == 1 and run.retries_in_run(KEY) and run.may_start(KEY)
    run.started(KEY)
    assert run.tries(KEY) == 2 and not run.retries_in_run(KEY) and not run.may_start(KEY)
    assert run.may_start(("eu", "other"))  # each row counts its own


def test_the_standing_pass_never_stops_a_row_and_never_retries_within_itself() -> None:
    run = Pass.standing(["eu"])
    for _ in range(5):
        run.started(KEY)
    assert run.is_standing and run.may_start(KEY) and not run.retries_in_run(KEY)
    assert run.tries(KEY) == 5  # the log's "attempt n" counts on for serve's life
    run.failed("eu", "app", "x")
    run.synced("eu", "app")
    assert run.summary(1.0).sites == {}  # serve sums nothing up


def test_a_one_shot_summary_keeps_the_final_failures_and_forgets_one_synced_later() -> None:
    run = Pass.one_shot(["eu", "us"], attempts=3)
    run.add("eu", CopyStats(tags_pushed=2, bytes_copied=10), ["a warning"])
    run.failed("eu", "app", "eu: PUT manifest app: 500")
    run.failed("us", "lib", "us: unreachable")
    run.synced("eu", "app")
    summary = run.summary(2.5)
    eu, us = summary.sites["eu"], summary.sites["us"]
    assert (eu.synced, eu.failed, eu.failures, eu.warnings) == (1, 1, {}, ["a warning"])
    assert eu.stats.tags_pushed == 2 and eu.stats.bytes_copied == 10
    assert (us.failed, us.failures) == (1, {"lib": "us: unreachable"})
    assert summary.seconds == 2.5 and not summary.ok
