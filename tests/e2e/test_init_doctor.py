"""`geo-tui init --non-interactive` then `geo-tui doctor`, against real Distribution instances configured
from the snippets init wrote; and the failures doctor must name, with a fix."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from geo_tui.registry import libtrust_key_id
from tests.e2e.test_cli import geo
from tests.support.distribution import Distribution, free_port
from tests.support.event_sink import Sink
from tests.support.geo import tag_digests
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.push import RawPusher
from tests.support.served import Served

ISSUER = "gitlab-issuer"
SERVICE = "container_registry"
PROBE = "geo-tui-doctor/probe"


@dataclass
class InitDone:
    config: Path
    snippets: dict[str, dict[str, Any]]
    ports: dict[str, int]
    listen: int
    key_pair: TestKeyPair  # init's key, to push test content as a GitLab user would
    secret: str
    stdout: str


def run_init(tmp_path: Path, realm: str, ports: dict[str, int], *extra: str) -> InitDone:
    listen = free_port()
    geo_dir = tmp_path / "geo"
    result = geo(
        "init",
        "--non-interactive",
        "--config",
        str(geo_dir / "config.toml"),
        "--primary",
        f"http://127.0.0.1:{ports['primary']}",
        "--secondary",
        f"eu=http://127.0.0.1:{ports['eu']}",
        "--token-realm",
        realm,
        "--listen",
        f"127.0.0.1:{listen}",
        "--database",
        str(geo_dir / "tracking.db"),
        "--snippets-dir",
        str(tmp_path / "snippets"),
        *extra,
    )
    assert result.returncode == 0, result.stderr
    snippets = {
        name: yaml.safe_load((tmp_path / "snippets" / f"{name}.registry.yml").read_text()) for name in ports
    }
    key_pem = (geo_dir / "registry.key").read_bytes()
    key = serialization.load_pem_private_key(key_pem, password=None)
    key_pair = TestKeyPair(
        private_key=key,  # type: ignore[arg-type]
        key_pem=key_pem,
        cert_pem=(geo_dir / "registry.crt").read_bytes(),
        kid=libtrust_key_id(key.public_key()),
    )
    secret = snippets["primary"]["notifications"]["endpoints"][0]["headers"]["Authorization"][0]
    return InitDone(geo_dir / "config.toml", snippets, ports, listen, key_pair, secret, result.stdout)


Lab = Callable[..., tuple[InitDone, Distribution, Distribution]]


@pytest.fixture
def lab(registry_factory: Callable[..., Distribution], token_server: Any, tmp_path: Path) -> Lab:
    """`lab(primary_options=None, *init_flags) -> (init, primary, eu)`.

    The registries start first (so their ports are theirs), init runs with their URLs, then each registry
    configured "from the snippet" restarts on its port with only init's snippet merged over a bare config.
    `primary_options`, if given, starts the primary as the test wants and leaves it so.
    """

    def start(
        primary_options: dict[str, Any] | None = None, *init_flags: str
    ) -> tuple[InitDone, Distribution, Distribution]:
        options = {"auth": "none"} if primary_options is None else primary_options
        primary = registry_factory("primary", **options)
        eu = registry_factory("eu", auth="none")
        done = run_init(tmp_path, token_server.url, {"primary": primary.port, "eu": eu.port}, *init_flags)
        for name, registry in (("primary", primary), ("eu", eu)):
            if name == "eu" or primary_options is None:
                registry.extra_config = done.snippets[name]
                registry.restart()
        return done, primary, eu

    return start


def doctor(done: InitDone) -> tuple[int, list[str], str]:
    result = geo("--config", str(done.config), "doctor")
    assert done.secret not in result.stdout + result.stderr, "doctor printed the notification secret"
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout.splitlines(), result.stderr


def line_for(lines: list[str], prefix: str) -> str:
    found = [line for line in lines if line.startswith(prefix)]
    assert len(found) == 1, f"expected one line starting {prefix!r} in:\n" + "\n".join(lines)
    return found[0]


def test_init_writes_what_the_registries_need(tmp_path: Path) -> None:
    init_done = run_init(tmp_path, "https://gitlab.example.com/jwt/auth", {"primary": 5000, "eu": 5001})
    primary = init_done.snippets["primary"]
    token = primary["auth"]["token"]
    assert token["issuer"] == ISSUER and token["service"] == SERVICE
    assert Path(token["rootcertbundle"]) == init_done.config.parent / "registry.crt"
    endpoint = primary["notifications"]["endpoints"][0]
    assert endpoint["url"] == f"http://127.0.0.1:{init_done.listen}/api/v4/container_registry_event/events"
    assert (endpoint["timeout"], endpoint["threshold"], endpoint["backoff"]) == ("5s", 5, "1s")
    assert "notifications" not in init_done.snippets["eu"]
    assert init_done.secret not in init_done.stdout  # --snippets-dir: the secret stays in 0600 files
    for path in (init_done.config, init_done.config.parent / "registry.key"):
        assert os.stat(path).st_mode & 0o777 == 0o600


def test_doctor_passes_on_registries_set_up_from_the_snippets_and_sync_copies(
    lab: Lab, tmp_path: Path
) -> None:
    init_done, primary, eu = lab()
    served = Served(init_done.config, init_done.listen, tmp_path / "serve.log").start()
    try:
        mark = eu.mark()
        code, lines, stderr = doctor(init_done)
    finally:
        assert served.stop(signal.SIGTERM) == 0
    assert code == 0, "\n".join(lines) + stderr
    checks = [line for line in lines if not line.endswith("checks passed")]
    assert len(checks) == 8 and all(line.startswith("ok ") for line in checks), "\n".join(lines)
    assert "shared key is accepted" in line_for(lines, "ok   primary token:")
    assert "cannot push" in line_for(lines, "ok   primary push blocked:")
    assert "accepted and cancelled" in line_for(lines, "ok   eu push accepted:")
    assert "serve answers" in line_for(lines, "ok   notifications:")
    assert "accepts the secret" in line_for(lines, "ok   notifications:")
    # The probe left nothing: its upload session was cancelled, and no repository appeared.
    assert eu.count_requests("POST", PROBE, since_mark=mark, status=202) == 1
    assert eu.count_requests("DELETE", PROBE, since_mark=mark, status=204) == 1
    with RawPusher(eu.url, key_pair=init_done.key_pair, issuer=ISSUER, service=SERVICE) as eu_pusher:
        assert PROBE not in eu_pusher.catalog()
        with RawPusher(primary.url, key_pair=init_done.key_pair, issuer=ISSUER, service=SERVICE) as pusher:
            image = oci_image("init-doctor")
            pusher.push_tree("team/app", image, "v1")
            result = geo("--config", str(init_done.config), "sync", "--once", "--json")
            assert result.returncode == 0, result.stdout + result.stderr
            assert json.loads(result.stdout)["sites"]["eu"]["synced"] == 1
            assert tag_digests(eu_pusher, "team/app") == {"v1": image.digest}


def test_doctor_names_a_stopped_secondary_and_a_missing_receiver(lab: Lab) -> None:
    init_done, _, eu = lab()
    eu.stop()
    code, lines, _ = doctor(init_done)
    assert code == 1
    failed = line_for(lines, "FAIL eu answers:")
    assert eu.url in failed and "fix: start the registry" in failed and "secondaries[0].registry" in failed
    assert line_for(lines, "skip eu push accepted:")
    assert line_for(lines, "ok   primary push blocked:")
    receiver = line_for(lines, "FAIL notifications:")
    assert "not running" in receiver and f"--config {init_done.config} serve" in receiver


def test_doctor_says_how_to_fix_a_primary_that_trusts_another_key(lab: Lab) -> None:
    # The fixture's token auth: the session's key with init's issuer and service; only the key differs.
    init_done, _, _ = lab({"issuer": ISSUER, "service": SERVICE})
    code, lines, _ = doctor(init_done)
    assert code == 1
    failed = line_for(lines, "FAIL primary token:")
    assert "401" in failed and "fix: the registry does not trust geo-tui's key" in failed
    assert "rootcertbundle" in failed and repr(ISSUER) in failed
    assert line_for(lines, "skip primary push blocked:")
    assert line_for(lines, "ok   eu token:")


def test_doctor_fails_loudly_when_anyone_can_push_to_the_primary(lab: Lab) -> None:
    init_done, primary, _ = lab({"auth": "none"})
    mark = primary.mark()
    code, lines, _ = doctor(init_done)
    assert code == 1
    failed = line_for(lines, "FAIL primary push blocked:")
    assert "THE PRIMARY ACCEPTS PUSHES" in failed and "probe session cancelled" in failed
    assert "fix: turn on token auth on the primary" in failed
    assert "asks for no credentials" in line_for(lines, "ok   primary token:")
    # The session it opened was cancelled at once.
    assert primary.count_requests("POST", PROBE, since_mark=mark, status=202) == 1
    assert primary.count_requests("DELETE", PROBE, since_mark=mark, status=204) == 1


def test_doctor_notices_serve_running_with_another_secret(lab: Lab, tmp_path: Path) -> None:
    init_done, _, _ = lab()
    stale = tmp_path / "stale.toml"  # an older setup's config: same everything, another secret
    stale.write_text(init_done.config.read_text().replace(init_done.secret, "Stale" + "x" * 40))
    stale.chmod(0o600)
    served = Served(stale, init_done.listen, tmp_path / "serve.log").start()
    try:
        code, lines, _ = doctor(init_done)
    finally:
        served.stop(signal.SIGTERM)
    assert code == 1
    failed = line_for(lines, "FAIL notifications:")
    assert "refuses this config's secret (events -> 401)" in failed
    assert f"fix: it runs with another config: restart it with --config {init_done.config}" in failed


def test_doctor_fails_a_primary_account_that_may_push(lab: Lab) -> None:
    # auth = "token": geo-tui asks the primary's realm for tokens; the lab realm grants whatever is asked.
    done, primary, _ = lab({}, "--auth", "primary=token")
    mark = primary.mark()
    code, lines, _ = doctor(done)
    assert code == 1
    assert "token credentials accepted" in line_for(lines, "ok   primary credentials:")
    failed = line_for(lines, "FAIL primary push blocked:")
    assert (
        "THE PRIMARY ACCEPTS PUSHES: geo-tui's account opened an upload (probe session cancelled)" in failed
    )
    assert "fix: give geo-tui an account that may only pull on the primary (primary.username)" in failed
    assert primary.count_requests("DELETE", PROBE, since_mark=mark, status=204) == 1


@pytest.mark.distribution_only("the lab registry applies no ignore: it sends every event")
def test_the_primary_s_snippet_delivers_pushes_and_deletes_and_no_pulls(lab: Lab) -> None:
    """init's notification endpoint, applied as written to real Distribution 2.8: reads of manifests and
    blobs (geo-tui's reconcile HEADs every tag) put nothing in the queue a push's event waits in."""
    sink = Sink()
    try:
        done, primary, _ = lab(None, "--notification-url", sink.url)
        assert done.snippets["primary"]["notifications"]["endpoints"][0]["url"] == sink.url
        image = oci_image("snippet-events")
        with RawPusher(primary.url, key_pair=done.key_pair, issuer=ISSUER, service=SERVICE) as pusher:
            pusher.push_tree("team/app", image, "v1")
            sink.wait(lambda events: any(e["action"] == "push" for e in events))
            mark = primary.mark()
            for _ in range(3):  # every kind of read: manifest by tag and by digest, blob, HEAD and GET
                assert pusher.head_manifest("team/app", "v1").status_code == 200
                assert pusher.get_manifest("team/app", "v1").status_code == 200
                assert pusher.head_manifest("team/app", image.digest).status_code == 200
                for blob in image.blobs:
                    assert pusher.blob_exists("team/app", blob.digest)
                    assert pusher.get_blob("team/app", blob.digest).status_code == 200
            reads = 3 * (3 + 2 * len(image.blobs))
            assert primary.wait_for_requests(reads, since_mark=mark, status=200) == reads
            assert pusher.delete_manifest("team/app", image.digest).status_code == 202
            # One queue per endpoint, delivered in order: a pull event of those reads would come first.
            events = sink.wait(lambda events: any(e["action"] == "delete" for e in events))
        assert all(headers.get("Authorization") == done.secret for headers, _ in sink.posts), "not the secret"
        kinds = Counter((e["action"], e["target"].get("mediaType")) for e in events)
        assert set(kinds) == {("push", image.media_type), ("delete", None)}, kinds  # no pull, no blob
        assert kinds[("push", image.media_type)] == 1, kinds
        pushed = [e["target"] for e in events if e["action"] == "push"]
        assert (pushed[0]["tag"], pushed[0]["digest"]) == ("v1", image.digest)
        assert image.digest in {e["target"].get("digest") for e in events if e["action"] == "delete"}
    finally:
        sink.close()
