from __future__ import annotations

import random

from geo_tui.engine import in_run_delay, retry_delay
from geo_tui.engine.backoff import MAX_RETRY_DELAY


def test_retry_delay_grows_and_is_capped() -> None:
    rng = random.Random(7)
    delays = [retry_delay(n, rng) for n in range(1, 12)]
    assert all(d >= 15 for d in delays), "never a tight loop"
    assert max(delays) == MAX_RETRY_DELAY
    assert retry_delay(1, random.Random(0)) <= 1 + 15 + 29 * 2


def test_retry_delay_has_jitter() -> None:
    values = {retry_delay(3, random.Random(seed)) for seed in range(20)}
    assert len(values) > 5


def test_in_run_delay() -> None:
    assert [in_run_delay(a) for a in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert in_run_delay(30) == 8.0
