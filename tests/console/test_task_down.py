"""The console's header names a background task of the engine that is down (issue 12, case 4): the
engine's snapshot carries it (wire.py), whether the engine is embedded or attached."""

from __future__ import annotations

import dataclasses

from geo_tui.console.app import GeoTuiApp
from geo_tui.link.link import Batch
from tests.console.test_snapshots import NOW, SNAPSHOT, StaticLink, settle


class TaskDownLink(StaticLink):
    def __init__(self) -> None:
        super().__init__()
        self.snapshots = [dataclasses.replace(SNAPSHOT, tasks_down=("discovery",)), SNAPSHOT]

    def drain(self) -> Batch:
        batch = super().drain()
        if not batch and self.snapshots and self.next:
            self.next = False
            return Batch(snapshot=self.snapshots.pop(0))
        return batch

    next = False


async def test_the_header_names_a_task_down_and_clears_when_it_is_back() -> None:
    link = TaskDownLink()
    app = GeoTuiApp(link, clock=lambda: NOW, refresh_interval=0.05)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        assert "TASK DOWN" not in app.sub_title
        link.next = True
        for _ in range(100):
            if "TASK DOWN" in app.sub_title:
                break
            await pilot.pause(0.05)
        assert app.sub_title.endswith("TASK DOWN: discovery"), app.sub_title
        await pilot.pause()
        assert "TASK DOWN: discovery" in app.export_screenshot().replace("&#160;", " ")  # on screen
        link.next = True
        for _ in range(100):
            if "TASK DOWN" not in app.sub_title:
                break
            await pilot.pause(0.05)
        assert "TASK DOWN" not in app.sub_title
