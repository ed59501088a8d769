"""HTTPS registries: real Distribution 2.8 serving TLS (http.tls) with a certificate from a test CA.

geo-tui verifies certificates by default and trusts a site's `ca_file` when given: a sync over TLS copies
every blob byte for byte (through the client's own TLS sockets, see geo_tui/registry/_network.py), and a
certificate nobody vouched for fails the repository with a reason that names the site, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from geo_tui.config import load_config
from geo_tui.engine import Engine
from tests.support.distribution import Distribution
from tests.support.geo import image_with_layers, tag_digests, write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import layer_blob
from tests.support.push import RawPusher
from tests.support.tls import TLSFiles, make_tls_files
from tests.support.token_server import TokenServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def tls_sites(
    tmp_path: Path, tls: TLSFiles, key_pair: TestKeyPair, token_server: TokenServer
) -> Iterator[tuple[Distribution, Distribution]]:
    sites = [
        Distribution(tmp_path / name, name=name, tls=tls, key_pair=key_pair, token_realm=token_server.url)
        for name in ("primary", "secondary")
    ]
    try:
        for site in sites:
            site.start()
        yield sites[0], sites[1]
    finally:
        for site in sites:
            site.stop()


def push_content(primary: Distribution) -> dict[str, str]:
    """Two tags sharing a 3 MiB layer, each with a layer of its own: the tag -> digest map."""
    shared = layer_blob("tls-shared", 3 * 1024 * 1024)
    with RawPusher.for_registry(primary) as pusher:
        for tag in ("v1", "v2"):
            own = layer_blob(f"tls-{tag}", 512 * 1024 + 7)
            pusher.push_tree("tls/app", image_with_layers([shared, own], seed=tag), tag)
        return tag_digests(pusher, "tls/app")


async def test_sync_over_tls_trusts_the_sites_ca_file(
    tmp_path: Path, tls: TLSFiles, tls_sites: tuple[Distribution, Distribution], key_pair: TestKeyPair
) -> None:
    primary, secondary = tls_sites
    assert primary.url.startswith("https://") and secondary.url.startswith("https://")
    want = push_content(primary)
    config = write_geo_config(
        tmp_path / "geo",
        primary,
        [secondary],
        key_pair,
        primary_options={"ca_file": str(tls.ca)},
        secondary_options={"secondary": {"ca_file": str(tls.ca)}},
    )
    async with Engine(load_config(config)) as engine:
        summary = await engine.sync_once()
    site = summary.sites["secondary"]
    assert summary.ok, site.failures
    assert site.stats.blobs_copied >= 3 and site.stats.bytes_copied > 3 * 1024 * 1024
    with RawPusher.for_registry(secondary) as pusher:
        assert tag_digests(pusher, "tls/app") == want
        for tag in want:  # every blob is whole on the secondary, fetched back through TLS
            document = pusher.get_manifest("tls/app", tag).json()
            for blob in [document["config"], *document["layers"]]:
                assert pusher.blob_exists("tls/app", blob["digest"]), blob["digest"]


async def test_a_certificate_from_an_unknown_ca_fails_the_repository_clearly(
    tmp_path: Path, tls: TLSFiles, tls_sites: tuple[Distribution, Distribution], key_pair: TestKeyPair
) -> None:
    primary, secondary = tls_sites
    push_content(primary)
    mark = secondary.mark()
    # The secondary's ca_file is another CA: its certificate does not verify.
    stranger = make_tls_files(tmp_path / "other-ca", ca_name="some other CA")
    config = write_geo_config(
        tmp_path / "geo",
        primary,
        [secondary],
        key_pair,
        engine={"sync_attempts": 1},
        primary_options={"ca_file": str(tls.ca)},
        secondary_options={"secondary": {"ca_file": str(stranger.ca)}},
    )
    async with Engine(load_config(config), in_run_retry_base=0.05) as engine:
        summary = await engine.sync_once()
    failures = summary.sites["secondary"].failures
    assert set(failures) == {"tls/app"}, failures
    reason = failures["tls/app"]
    assert "secondary" in reason and "CERTIFICATE_VERIFY_FAILED" in reason.upper().replace(" ", "_"), reason
    assert "Traceback" not in reason
    reached = secondary.requests(since_mark=mark)
    assert reached == [], f"a request passed a certificate that does not verify: {reached}"
