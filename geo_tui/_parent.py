"""Child processes that live as long as the pipe from their parent: the console's engine, the demo's
lab sites."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

__all__ = ["on_stdin_closed"]


def on_stdin_closed(callback: Callable[[], None], *, name: str) -> None:
    """Call `callback` (on a daemon thread) once standard input reaches EOF: the parent closed the
    pipe to stop this process, or died, kill -9 included."""

    def watch() -> None:
        # The raw descriptor, not sys.stdin: a daemon thread parked in a buffered read holds its lock,
        # and the interpreter aborts at exit when it cannot take that lock back.
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        callback()

    threading.Thread(target=watch, name=name, daemon=True).start()
