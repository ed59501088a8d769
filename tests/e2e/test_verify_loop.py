"""The background verification never blocks the engine's loop while a repository is still copying."""

from __future__ import annotations

import time
from pathlib import Path

from geo_tui.config import load_config
from geo_tui.engine import Engine, SyncState, VerificationState
from tests.support.distribution import Distribution
from tests.support.faults import FaultTransport
from tests.support.geo import write_geo_config
from tests.support.inprocess import EngineInThread
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.push import RawPusher


def test_a_row_synced_on_one_site_waits_for_the_other_site_without_stalling_the_engine(
    primary: Distribution,
    secondary: Distribution,
    secondary2: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    # secondary is synced (its verification due) while the same repository's job still copies into
    # secondary2: a verification loop that spun on that row without yielding froze every copy for good.
    primary_pusher.push_tree("slow/app", oci_image("slow"), "v1")
    slow = FaultTransport()
    hold = slow.delay("PUT", r"/manifests/", seconds=4.5)
    config = load_config(write_geo_config(tmp_path, primary, [secondary, secondary2], key_pair))
    link = EngineInThread(config, lambda c: Engine(c, transports={secondary2.name: slow}))
    rows = {}
    link.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            batch = link.drain()
            rows.update((row.key, row) for row in [*(batch.all_rows or []), *batch.rows])
            done = [r for r in rows.values() if r.verification_state is VerificationState.SUCCEEDED]
            if len(done) == 2:
                break
            time.sleep(0.1)
    finally:
        link.stop(timeout=10)
    assert slow.fired(hold) >= 1, "the copy into secondary2 was never held"
    assert {key: (row.state, row.verification_state) for key, row in rows.items()} == {
        (name, "slow/app"): (SyncState.SYNCED, VerificationState.SUCCEEDED)
        for name in (secondary.name, secondary2.name)
    }
