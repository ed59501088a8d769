"""`serve` on a thread of the test's own process, for tests that build the engine themselves (fault
transports around a registry, a shifted clock, a short health interval), which a child process cannot be
handed. The console reaches it as it reaches its own engine in a child process: through the engine's
API, its client and `RemoteLink`; only the process boundary differs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from geo_tui.config import Config
from geo_tui.engine import Engine
from geo_tui.engine.describe import describe_error
from geo_tui.link.link import _setter
from geo_tui.link.remote import RemoteLink
from geo_tui.service.serve import serve

READY_TIMEOUT = 30.0


class EngineInThread(RemoteLink):
    """`serve(config)` over ``engine_factory(config)``, attached to like the console's own engine: it
    stops when the link stops. ``engine`` is the engine itself, for the test to look at."""

    owns_engine = True

    def __init__(self, config: Config, engine_factory: Callable[[Config], Engine]) -> None:
        super().__init__("", token=config.api.token if config.api is not None else None)
        self.mode = "embedded"
        self.config = config
        self.engine: Engine | None = None
        self._factory = engine_factory
        self._serving: threading.Thread | None = None
        self._serve_loop: asyncio.AbstractEventLoop | None = None
        self._serve_stop: asyncio.Event | None = None
        self._listening = threading.Event()
        self._ending = threading.Event()

    def start(self) -> None:
        if self._serving is not None:
            return
        self._serving = threading.Thread(target=self._serve, name="test-serve", daemon=True)
        self._serving.start()
        threading.Thread(target=self._attach, name="test-serve-attach", daemon=True).start()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> bool:
        return self._listening.wait(timeout) and bool(self.target)

    def stop(self, timeout: float = 15.0) -> None:
        self._ending.set()
        super().stop(timeout=min(timeout, 5.0))
        loop, stop = self._serve_loop, self._serve_stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if self._serving is not None:
            self._serving.join(timeout)

    def _attach(self) -> None:
        if self.wait_ready() and not self._ending.is_set():
            super().start()

    def _serve(self) -> None:
        def ready(engine: Engine, api: str) -> None:
            self.engine, self.target = engine, api
            self._listening.set()

        async def run() -> None:
            self._serve_loop, self._serve_stop = asyncio.get_running_loop(), asyncio.Event()
            if self._ending.is_set():
                return
            await serve(
                self.config,
                command="a test's engine",
                on_ready=ready,
                engine_factory=lambda config, command: self._factory(config),
                stop=self._serve_stop,
            )

        try:
            asyncio.run(run())
        except Exception as exc:  # what the console shows when its engine cannot start
            self._inbox.put(_setter("failure", describe_error(exc)))
        finally:
            self._listening.set()
