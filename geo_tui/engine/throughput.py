"""Bytes per second per site, and how fast repositories complete, for rates, sparklines and ETAs."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["CompletionRate", "Throughput"]


class Throughput:
    """Bytes counted in one-second buckets; keeps ``horizon`` seconds."""

    def __init__(self, clock: Callable[[], float] = time.time, horizon: int = 3600) -> None:
        self._clock = clock
        self._horizon = horizon
        self._buckets: deque[list[int]] = deque()  # [second, bytes]
        self.total = 0

    def add(self, nbytes: int) -> None:
        second = int(self._clock())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += nbytes
        else:
            self._buckets.append([second, nbytes])
            while self._buckets and self._buckets[0][0] < second - self._horizon:
                self._buckets.popleft()
        self.total += nbytes

    def rate(self, window: int = 10) -> float:
        """Bytes per second over the last ``window`` full seconds."""
        now = int(self._clock())
        recent = sum(b for s, b in self._buckets if now - window <= s < now)
        return recent / window

    def history(self, minutes: int = 30) -> list[float]:
        """Average bytes per second in each of the last ``minutes`` minutes, oldest first."""
        now = int(self._clock())
        sums = [0] * minutes
        for second, nbytes in self._buckets:
            age = (now - second) // 60
            if 0 <= age < minutes:
                sums[minutes - 1 - age] += nbytes
        return [s / 60 for s in sums]


class CompletionRate:
    """Repositories finished per second over a sliding window, for an ETA."""

    def __init__(self, clock: Callable[[], float] = time.time, window: float = 60.0) -> None:
        self._clock = clock
        self._window = window
        self._times: deque[float] = deque()

    def record(self) -> None:
        now = self._clock()
        self._times.append(now)
        while self._times and self._times[0] < now - self._window:
            self._times.popleft()

    def eta(self, remaining: int) -> float | None:
        now = self._clock()
        while self._times and self._times[0] < now - self._window:
            self._times.popleft()
        if remaining <= 0:
            return 0.0
        if len(self._times) < 2:
            return None
        span = max(now - self._times[0], 1.0)
        return remaining / (len(self._times) / span)
