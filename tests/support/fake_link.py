"""A fake `EngineLink` for the pure UI tests (pictures, key hints, headers): it hands the console fixed
batches and records the commands the console sends, through the real API client's command methods, so a
command reaches it typed exactly as it would reach an engine. Behaviour on a real engine is tested over
the spawned engine (tests/console/test_console_live.py) and attached ones."""

from __future__ import annotations

import asyncio

from geo_tui.engine.wire import Command, CommandAnswer
from geo_tui.link.client import EngineClient
from geo_tui.link.link import Batch, CommandResult, EngineCall, EngineRead


class RecordingClient(EngineClient):
    """An API client that sends nothing: it records each command and answers that it went well."""

    def __init__(self) -> None:
        super().__init__("http://engine.invalid")
        self.commands: list[Command] = []

    async def _command(self, command: Command, *, patient: bool = False) -> CommandAnswer:
        self.commands.append(command)
        return CommandAnswer(True, f"{command.name}: done")


class FakeLink:
    """Hands out ``batches`` one per drain, then empty ones; ``commands`` is what the console sent.
    A read named in ``answers`` is answered with its value in the next drain; ``reads`` counts the reads
    asked for, by name."""

    mode = "embedded"
    owns_engine = True

    def __init__(self, *batches: Batch, answers: dict[str, object] | None = None) -> None:
        self.batches = list(batches)
        self.answers = dict(answers or {})
        self.reads: dict[str, int] = {}
        self._answered: dict[str, object] = {}
        self.client = RecordingClient()
        self._results: list[CommandResult] = []
        self._running: set[asyncio.Task[None]] = set()

    @property
    def commands(self) -> list[Command]:
        return self.client.commands

    def start(self) -> None: ...
    def stop(self, timeout: float = 15.0) -> None: ...
    def load_detail(self, repository: str) -> None: ...

    def drain(self) -> Batch:
        batch = self.batches.pop(0) if self.batches else Batch()
        batch.results, self._results = batch.results + self._results, []
        batch.reads, self._answered = {**batch.reads, **self._answered}, {}
        return batch

    def read(self, name: str, call: EngineRead) -> None:
        self.reads[name] = self.reads.get(name, 0) + 1
        if name in self.answers:
            self._answered[name] = self.answers[name]

    def command(self, call: EngineCall) -> None:
        async def run() -> None:
            answer = await call(self.client)
            self._results.append(CommandResult(answer.message, answer.ok))

        task = asyncio.get_running_loop().create_task(run())  # the console's loop: actions run on it
        self._running.add(task)
        task.add_done_callback(self._running.discard)
