"""The clock tracking rows are stamped with: this host's wall clock, set to the tracking database's.

On PostgreSQL many workers on many hosts compare times that other hosts wrote: a lease's end, a
worker's heartbeat, when a push was received, when a retry is due. Each host's own clock would make
those comparisons as wrong as the hosts' clocks are apart: a worker whose clock ran two minutes ahead
saw every other worker's lease run out and took its repositories while they were being copied, and
found the leader's heartbeat old and ended its session. So every worker (and `status`, and a console
attached to one) reads the server's ``clock_timestamp()`` at start and once a minute after, and adds
the difference to its own clock: times in the database are the server's, whatever the hosts say.

The difference is taken from the quickest of a few round trips, half of which bounds its error. On
SQLite (one engine per file, one host) nothing is read and the clock is the host's.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["CLOCK_SAMPLES", "SERVER_TIME", "DatabaseClock"]

CLOCK_SAMPLES = 3  # round trips an alignment takes; the quickest one counts
SERVER_TIME = "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8"


class DatabaseClock:
    """A wall clock (`local`, time.time) plus `offset`: the tracking database's time minus this host's,
    as last measured by `align` (0 until then)."""

    def __init__(self, local: Callable[[], float] | None = None) -> None:
        self._local = local if local is not None else _wall
        self.offset = 0.0
        self.error: float | None = None  # half the round trip of the measurement used (None: not aligned)

    def __call__(self) -> float:
        return self._local() + self.offset

    @property
    def aligned(self) -> bool:
        return self.error is not None

    def align(self, server_time: Callable[[], float], samples: int = CLOCK_SAMPLES) -> float:
        """Measure the offset with `samples` reads of the server's time and keep the quickest one's;
        returns the offset. An exception from `server_time` leaves the last offset in place."""
        best: tuple[float, float] | None = None
        for _ in range(max(1, samples)):
            before = self._local()
            server = server_time()
            after = self._local()
            trip = max(0.0, after - before)
            if best is None or trip < best[0]:
                best = (trip, server - (before + after) / 2)
        assert best is not None
        self.offset, self.error = best[1], best[0] / 2
        return self.offset


def _wall() -> float:
    return time.time()  # looked up at each call, as a clock of `time.time` itself was (tests patch it)
