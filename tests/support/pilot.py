"""Driving the console with Pilot as an operator would: wait for what the screen shows, type a filter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from textual.pilot import Pilot


async def until(pilot: Pilot[None], condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Let the app run until `condition()` holds; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out waiting in the console"
        await pilot.pause(0.1)


async def filter_to(pilot: Pilot[None], text: str) -> None:
    """Replace the repository filter with `text` (the prompt opens holding the current filter)."""
    await pilot.press("slash", "end", *["backspace"] * 40)
    await pilot.press(*text)
    await pilot.press("enter")
    await pilot.pause()
