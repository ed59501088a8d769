"""Shared fixtures: the session's signing key and token realm, and registries per test.

    def test_copy(primary, secondary): ...            # two registries, token auth, primary accepts schema 1
    def test_three(registry_factory): registry_factory("eu", notification_url=...)

Every test that uses a registry fixture runs twice: against real CNCF Distribution 2.8 (id `distribution`)
and against geo-tui's own lab registry (id `lab`, geo_tui.lab). A test that relies on something only
Distribution does is marked `@pytest.mark.distribution_only("why")`: its lab case is deselected.

Tests that use a registry fixture get the `registry` marker. Without docker-registry (or skopeo) they are
skipped locally and fail in CI (CI=true), where .ci/run must have installed them; the lab needs no binary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.binaries import find_binary
from tests.support.distribution import Distribution
from tests.support.keys import TestKeyPair, session_key_pair
from tests.support.lab import LabInstance
from tests.support.push import RawPusher
from tests.support.token_server import TokenServer

# The PostgreSQL cluster and the `tracking_target` fixtures (tracking database on either backend).
pytest_plugins = ["tests.support.postgres"]

REGISTRY_FIXTURES = {
    "registry_factory",
    "primary",
    "secondary",
    "secondary2",
    "primary_pusher",
    "secondary_pusher",
}


def pytest_configure(config: pytest.Config) -> None:
    # Also declared in pyproject.toml; repeated so a run from another rootdir does not warn.
    config.addinivalue_line("markers", "registry: needs real CNCF Distribution and skopeo")
    config.addinivalue_line(
        "markers", "distribution_only(reason): relies on a behaviour of Distribution the lab registry lacks"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        if REGISTRY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.registry)
        callspec = getattr(item, "callspec", None)
        on_lab = callspec is not None and callspec.params.get("registry_kind") == "lab"
        # A Distribution-only test has no lab case at all (deselected, not a skip that reads as a pass).
        (dropped if on_lab and item.get_closest_marker("distribution_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def key_pair() -> TestKeyPair:
    """The RSA key that signs every token of the session; its certificate is each registry's trust."""
    return session_key_pair()


@pytest.fixture(scope="session")
def token_server(key_pair: TestKeyPair) -> Iterator[TokenServer]:
    """The token realm of every lab registry: grants whatever is asked, anonymously."""
    with TokenServer(key_pair) as server:
        yield server


REGISTRY_KINDS = ("distribution", "lab")


@pytest.fixture(params=REGISTRY_KINDS)
def registry_kind(request: pytest.FixtureRequest) -> str:
    """Which registry the test's registries are: real Distribution 2.8 or the lab registry."""
    return str(request.param)


@pytest.fixture
def registry_factory(
    tmp_path_factory: pytest.TempPathFactory,
    key_pair: TestKeyPair,
    token_server: TokenServer,
    registry_kind: str,
) -> Iterator[Callable[..., Distribution]]:
    """`registry_factory(name="secondary", **options) -> Distribution` (or its lab twin), started; all
    stopped at teardown.

    Options are `Distribution`'s: schema1, auth ("token" | "none"), issuer, delete_enabled,
    notification_url, notification_secret, port, token_realm, readonly.
    """
    if registry_kind == "distribution":
        find_binary("docker-registry")
    kind: Any = Distribution if registry_kind == "distribution" else LabInstance
    started: list[Distribution] = []

    def start(name: str = "registry", **options: Any) -> Distribution:
        options.setdefault("key_pair", key_pair)
        options.setdefault("token_realm", token_server.url)
        registry = kind(tmp_path_factory.mktemp(f"registry-{name}"), name=name, **options)
        started.append(registry)
        return registry.start()  # type: ignore[no-any-return]

    try:
        yield start
    finally:
        for registry in started:
            registry.stop()


@pytest.fixture
def primary(registry_factory: Callable[..., Distribution]) -> Distribution:
    """The primary registry: token auth, schema 1 compatibility on (so schema 1 content can exist)."""
    return registry_factory("primary", schema1=True)


@pytest.fixture
def secondary(registry_factory: Callable[..., Distribution]) -> Distribution:
    return registry_factory("secondary")


@pytest.fixture
def secondary2(registry_factory: Callable[..., Distribution]) -> Distribution:
    return registry_factory("secondary2")


@pytest.fixture
def primary_pusher(primary: Distribution) -> Iterator[RawPusher]:
    with RawPusher.for_registry(primary) as pusher:
        yield pusher


@pytest.fixture
def secondary_pusher(secondary: Distribution) -> Iterator[RawPusher]:
    with RawPusher.for_registry(secondary) as pusher:
        yield pusher


@pytest.fixture(autouse=True)
def _restore_geo_tui_logging() -> Iterator[None]:
    """The CLI (run in-process by tests) points the `geo_tui` logger at that moment's stderr and stops its
    propagation; put it back, or later tests log into a closed stream and caplog sees nothing."""
    logger = logging.getLogger("geo_tui")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])
