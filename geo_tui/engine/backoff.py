"""When a failed repository runs again."""

from __future__ import annotations

import random

__all__ = ["MAX_RETRY_DELAY", "in_run_delay", "retry_delay"]

MAX_RETRY_DELAY = 3600.0
_default_rng = random.Random()


def retry_delay(retry_count: int, rng: random.Random | None = None) -> float:
    """Seconds until the next attempt after ``retry_count`` failures.

    GitLab Geo's schedule, ``n^4 + 15 + rand(30) * (n + 1)``, capped at an hour: quick enough
    to ride out a blip, never a tight loop (GitLab once retried ~1,900 times a day per repository).
    """
    n = max(1, retry_count)
    jitter = (rng or _default_rng).randrange(30) * (n + 1)
    return min(MAX_RETRY_DELAY, float(n**4 + 15 + jitter))


def in_run_delay(attempt: int, base: float = 0.5, cap: float = 8.0) -> float:
    """Delay between the attempts of one `sync --once` run: short, growing, capped."""
    return min(cap, base * 2.0 ** max(0, attempt - 1))
