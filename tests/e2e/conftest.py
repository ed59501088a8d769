"""Fixtures of the end-to-end tests beside the registry ones of tests/conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.distribution import Distribution
from tests.support.geo import write_geo_config
from tests.support.keys import TestKeyPair


@pytest.fixture
def config_for(tmp_path: Path, key_pair: TestKeyPair) -> Callable[..., Path]:
    """`config_for(primary, *secondaries, **options) -> Path`: a geo-tui config for those registries."""

    def make(primary: Distribution, *secondaries: Distribution, **kwargs: Any) -> Path:
        return write_geo_config(tmp_path / "geo", primary, list(secondaries), key_pair, **kwargs)

    return make
