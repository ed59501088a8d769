"""The API's update stream, driven in-process over ASGI: a slow console never holds the engine back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from geo_tui.engine import Engine
from geo_tui.engine.updates import LogLine
from geo_tui.engine.wire import decode_messages
from geo_tui.service.api import ApiApp
from tests.unit.test_api_config import minimal_config


def message_kinds(text: str) -> list[str]:
    """The types of the messages in one frame (a batch holds several)."""
    message = json.loads(text)
    inner = message["messages"] if message["type"] == "batch" else [message]
    return [m["type"] for m in inner]


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
            kinds = [kind for m in sent if m["type"] == "websocket.send" for kind in message_kinds(m["text"])]
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


async def test_a_burst_of_updates_goes_out_in_few_frames_and_in_order(tmp_path: Path) -> None:
    engine = Engine(minimal_config(tmp_path))
    await engine.open()
    app = ApiApp(engine, token=None, snapshot_interval=3600)
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    frames: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            frames.append(message["text"])

    await incoming.put({"type": "websocket.connect"})
    scope = {"type": "websocket", "path": "/api/v1/updates", "headers": []}
    stream = asyncio.ensure_future(app(scope, incoming.get, send))
    try:
        while len(frames) < 2:  # hello and the first snapshot
            await asyncio.sleep(0.01)
        first = len(frames)
        for n in range(300):  # a backfill's worth of updates at once
            engine.log("info", f"burst {n}")
        lines: list[str] = []
        while len(lines) < 300:
            await asyncio.sleep(0.01)
            lines = [
                record.message
                for text in frames[first:]
                for _, body in decode_messages(text)
                if isinstance(body, LogLine)
                for record in [body.record]
                if record.message.startswith("burst")
            ]
        assert lines == [f"burst {n}" for n in range(300)], "every update, in order"
        assert len(frames) - first <= 5, f"300 updates took {len(frames) - first} frames"
    finally:
        await incoming.put({"type": "websocket.disconnect"})
        await asyncio.wait_for(stream, 5)
        await engine.close()
