"""The API's update stream, driven in-process over ASGI: a slow console never holds the engine back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from geo_tui.engine import Engine
from geo_tui.engine.api import ApiApp
from tests.unit.test_api_config import minimal_config


async def test_a_slow_console_is_told_to_reload_and_never_blocks_the_engine(tmp_path: Path) -> None:
    engine = Engine(minimal_config(tmp_path))
    await engine.open()
    app = ApiApp(engine, token=None, queue_size=5, snapshot_interval=3600)
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []
    reading = asyncio.Event()  # the console stops reading after its first two messages

    async def receive() -> dict[str, Any]:
        return await incoming.get()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if sum(m["type"] == "websocket.send" for m in sent) >= 2:
            await reading.wait()

    await incoming.put({"type": "websocket.connect"})
    scope = {"type": "websocket", "path": "/api/v1/updates", "headers": []}
    stream = asyncio.ensure_future(app(scope, receive, send))
    try:
        while sum(m["type"] == "websocket.send" for m in sent) < 2:
            await asyncio.sleep(0.01)
        for n in range(50):  # the engine goes on at full speed while the console reads nothing
            engine.log("info", f"line {n}")
        reading.set()
        kinds: list[str] = []
        while "reload" not in kinds:
            await asyncio.sleep(0.01)
            kinds = [json.loads(m["text"])["type"] for m in sent if m["type"] == "websocket.send"]
        assert kinds[0] == "hello"
        assert kinds.count("log") < 50  # dropped, and the reload brings the console back in step
        await asyncio.sleep(0.05)
        before = len(sent)
        engine.log("info", "after the reload")
        while len(sent) == before:
            await asyncio.sleep(0.01)
        assert "after the reload" in sent[-1]["text"]  # the stream goes on afterwards
    finally:
        await incoming.put({"type": "websocket.disconnect"})
        await asyncio.wait_for(stream, 5)
        await engine.close()
