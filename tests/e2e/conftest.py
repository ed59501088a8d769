"""Fixtures of the end-to-end tests beside the registry ones of tests/conftest.py."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from geo_tui.engine.tracking.postgres import PostgresDatabase
from tests.support.distribution import Distribution
from tests.support.geo import write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.postgres import database_option
from tests.support.served import Served


@pytest.fixture
def config_for(
    tmp_path: Path, key_pair: TestKeyPair, tracking_target: Path | PostgresDatabase
) -> Callable[..., Path]:
    """`config_for(primary, *secondaries, **options) -> Path`: a geo-tui config for those registries,
    whose tracking database is `tracking_target` (a module's `tracking_backend` may run it on both)."""

    def make(primary: Distribution, *secondaries: Distribution, **kwargs: Any) -> Path:
        kwargs["engine"] = {**database_option(tracking_target), **(kwargs.get("engine") or {})}
        return write_geo_config(tmp_path / "geo", primary, list(secondaries), key_pair, **kwargs)

    return make


@pytest.fixture
def workers() -> Iterator[list[Served]]:
    """The `serve` workers a test starts (appends); at its end each still running is thawed (SIGCONT: a
    test may have frozen it) and killed. Modules whose workers come from elsewhere define their own."""
    started: list[Served] = []
    try:
        yield started
    finally:
        for worker in started:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGCONT)
            worker.stop(signal.SIGKILL)
