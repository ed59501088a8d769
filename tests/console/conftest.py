"""Console tests share one interpreter: undo the console's `gc.freeze()` and collector thresholds after
each test, so one test's app (cycles and all) does not stay beyond the collector's reach for the rest of
the session, and other tests run with the interpreter's defaults."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def unfreeze_heap() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
