"""Console tests share one interpreter: undo the console's `gc.freeze()` after each test, so one test's
app (cycles and all) does not stay beyond the collector's reach for the rest of the session."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def unfreeze_heap() -> Iterator[None]:
    yield
    gc.unfreeze()
