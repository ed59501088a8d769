"""The console's own engine, the child's side: `geo-tui serve --console-child`, which link/spawned.py's
`SpawnedEngine` starts and reads the ready line of."""

from __future__ import annotations

import contextlib
import os
import signal

from geo_tui._parent import on_stdin_closed
from geo_tui.config import Config
from geo_tui.engine.engine import Engine
from geo_tui.engine.wire import CHILD_READY

from .serve import serve

__all__ = ["ENGINE_NICE", "lower_priority", "serve_for_console"]

# Below the console's CPU priority: where the engine and the console share the cores, a keypress does
# not queue behind a copy. With cores to spare it changes nothing.
ENGINE_NICE = 10


def lower_priority() -> None:
    """Run below the console: nice for the process, and, where the kernel groups the processes of a
    session for scheduling (autogroup, on by default in most distributions), for this session's group
    too, or the console's session and this one would share the cores half and half however nice."""
    with contextlib.suppress(OSError):
        os.nice(ENGINE_NICE)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as group:
        group.write(str(ENGINE_NICE))


async def serve_for_console(config: Config, parent_pid: int) -> int:
    """The child's side: `serve`, print the ready line with the API's address, and stop (as on
    SIGTERM) when stdin closes."""
    lower_priority()

    on_stdin_closed(lambda: os.kill(os.getpid(), signal.SIGTERM), name="geo-tui-parent-watch")

    def ready(engine: Engine, api: str) -> None:
        print(f"{CHILD_READY} {api}", flush=True)

    return await serve(config, command=f"the geo-tui console (pid {parent_pid})", on_ready=ready)
