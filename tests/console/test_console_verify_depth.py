"""Deep and content verification from the keyboard and the command palette, on a real engine and real
registries: `d` finds a blob deleted from the secondary's storage, `C` (after a confirmation naming how many)
re-hashes the filtered set, and the table shows each row's depth and age."""

from __future__ import annotations

import os
from pathlib import Path

from geo_tui.config import load_config
from geo_tui.console.app import make_app
from geo_tui.console.screens.confirm import ConfirmScreen
from geo_tui.console.screens.help import HelpScreen
from geo_tui.console.widgets.event_log import EventLog
from geo_tui.console.widgets.repository_table import RepositoryTable
from geo_tui.engine import SyncState, VerificationState
from tests.e2e.test_verify_deep import blob_file
from tests.support.distribution import Distribution
from tests.support.geo import write_geo_config
from tests.support.keys import TestKeyPair
from tests.support.oci import oci_image
from tests.support.pilot import filter_to, until
from tests.support.push import RawPusher


async def test_deep_and_content_verification_from_the_keyboard(
    primary: Distribution,
    secondary: Distribution,
    primary_pusher: RawPusher,
    key_pair: TestKeyPair,
    tmp_path: Path,
) -> None:
    images = {name: oci_image(name) for name in ("shop/api", "shop/web", "ops/tools")}
    for name, image in images.items():
        primary_pusher.push_tree(name, image, "v1")
    config = load_config(write_geo_config(tmp_path, primary, [secondary], key_pair))
    app = make_app(config)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(RepositoryTable)

        def row(name: str):  # type: ignore[no-untyped-def]
            return table.row(("secondary", name))

        await until(
            pilot,
            lambda: (
                table.total_count == 3
                and all(
                    (r := table.row(k)) is not None
                    and r.state is SyncState.SYNCED
                    and r.verification_state is VerificationState.SUCCEEDED
                    for k in table.visible_keys()
                )
            ),
            timeout=30,
        )
        lost = images["shop/api"].blobs[-1]
        blob_file(secondary, lost.digest).unlink()
        corrupt = images["shop/web"].blobs[-1]
        path = blob_file(secondary, corrupt.digest)
        path.write_bytes(os.urandom(path.stat().st_size))

        # d: a deep verification of the row under the cursor finds the lost blob, by digest
        await filter_to(pilot, "shop/api")
        await pilot.press("d")
        log = app.query_one(EventLog)
        failed = f"verification failed (deep): missing blob {lost.digest}"
        await until(pilot, lambda: any(failed in line for line in log.lines()))

        # the resync it queued puts the blob back (the verification after that sync may already have
        # recorded its own, checksum, depth on the row: the blob and the cleared recheck are what count)
        def blob_back() -> bool:
            try:
                return blob_file(secondary, lost.digest).exists()
            except AssertionError:  # no file yet: the resync is still copying
                return False

        await until(
            pilot,
            lambda: (
                blob_back()
                and (r := row("shop/api")) is not None
                and r.state is SyncState.SYNCED
                and not r.recheck_blobs
            ),
            timeout=30,
        )
        assert blob_file(secondary, lost.digest).read_bytes() == lost.data

        # C: content-verify the filtered set, after a confirmation that says how many and how
        await filter_to(pilot, "shop/")
        await pilot.press("C")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question.startswith("Content-verify 2 filtered repositories")
        await pilot.press("y")
        await until(pilot, lambda: (r := row("shop/web")) is not None and r.verification_depth == "content")
        web = row("shop/web")
        assert web is not None and web.verification_state is VerificationState.FAILED
        assert f"corrupt on the secondary: {corrupt.digest}" in (web.verification_failure or "")
        assert table._verification_text(web).startswith("✗ hash ")

        # the palette offers the same, by name
        await filter_to(pilot, "ops/tools")
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"deepverifythe")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: (r := row("ops/tools")) is not None and r.verification_depth == "deep")
        tools = row("ops/tools")
        assert tools is not None and tools.verification_state is VerificationState.SUCCEEDED
        assert table._verification_text(tools) in ("✓ deep now", "✓ deep 1s", "✓ deep 2s", "✓ deep 3s")

        # and help lists the new keys beside v and V
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = str(app.screen.sections)  # type: ignore[attr-defined]
        for key in ("Deep verify (every blob there)", "Content verify (re-hash blobs)", "Deep verify marked"):
            assert key in text, text
        await pilot.press("escape")

        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, timeout=20)
