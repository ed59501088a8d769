"""Fixtures of the end-to-end tests beside the registry ones of tests/conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from geo_tui.engine.tracking.postgres import PostgresDatabase
from tests.support.distribution import Distribution
from tests.support.geo import write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.postgres import database_option


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
