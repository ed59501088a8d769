"""The demo's registries, in a process of their own: a primary and its secondaries, on lab registries,
with a busy team pushing to the primary and one secondary that goes down now and then.

Run as ``python -m geo_tui.lab.site SPEC.json``. The spec (written 0600 by the parent: it holds the
notification secret) names the ports, storage and keys. The process prints ``seeded: ...`` per initial
push, ``ready`` when the registries answer and the primary holds its initial estate, then one line per
change it makes. It exits
when its standard input closes, so it never outlives the console that started it, even after kill -9,
and then removes the demo's directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from geo_tui._parent import on_stdin_closed
from geo_tui.registry import JwtAuth, RegistryClient, RegistryError, TokenSigner

from .server import LabRegistry
from .workload import Workload

__all__ = ["DemoSiteSpec", "Outage", "run_site"]


@dataclass(frozen=True)
class Outage:
    """`site` is down for `down` seconds every `every` seconds, first at `first` (before --speed)."""

    site: str
    first: float = 40.0  # after the backfill, so that the recovery is the story, not the start
    down: float = 20.0
    every: float = 90.0


@dataclass(frozen=True)
class DemoSiteSpec:
    root: str
    private_key_path: str
    certificate_path: str
    issuer: str
    service: str
    ports: dict[str, int]  # site name -> port; the first is the primary
    notification_url: str
    notification_secret: str
    seed: int = 1
    speed: float = 1.0
    scale: float = 1.0
    push_interval: float = 3.0
    outage: Outage | None = None
    # the primary's notifications leave these out (Distribution's ignore.actions and ignore.mediatypes)
    ignore_actions: tuple[str, ...] = ()
    ignore_media_types: tuple[str, ...] = ()
    remove_on_exit: str | None = None  # the demo's directory: gone even if the console was killed

    def write(self, path: Path) -> None:
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> DemoSiteSpec:
        data = json.loads(path.read_text())
        outage = data.pop("outage", None)
        actions = tuple(data.pop("ignore_actions", ()))
        media_types = tuple(data.pop("ignore_media_types", ()))
        return cls(
            **data,
            outage=Outage(**outage) if outage else None,
            ignore_actions=actions,
            ignore_media_types=media_types,
        )


def _say(line: str) -> None:
    print(line, flush=True)


def _start_registries(spec: DemoSiteSpec) -> dict[str, LabRegistry]:
    trust = Path(spec.certificate_path).read_bytes()
    registries = {}
    for i, (name, port) in enumerate(spec.ports.items()):
        primary = i == 0
        registries[name] = LabRegistry(
            Path(spec.root) / name,
            name=name,
            port=port,
            trust_pem=trust,
            issuer=spec.issuer,
            service=spec.service,
            notification_url=spec.notification_url if primary else None,
            notification_secret=spec.notification_secret if primary else None,
            ignore_actions=frozenset(spec.ignore_actions),
            ignore_media_types=frozenset(spec.ignore_media_types),
        ).start()
    return registries


async def _activity(spec: DemoSiteSpec, registries: dict[str, LabRegistry], stop: asyncio.Event) -> None:
    primary_name = next(iter(spec.ports))
    primary = registries[primary_name]
    signer = TokenSigner(
        Path(spec.private_key_path).read_bytes(), issuer=spec.issuer, service=spec.service, ttl=300
    )
    auth = JwtAuth(signer, repository_actions=("pull", "push", "delete"))
    async with RegistryClient(primary_name, primary.url, auth) as client:
        workload = Workload(client, seed=spec.seed, scale=spec.scale)
        await workload.seed_primary(lambda action: _say(f"seeded: {action}"))
        _say("ready")
        started = time.monotonic()
        while not stop.is_set():
            _keep_outage(spec, registries, (time.monotonic() - started) * spec.speed)
            try:
                _say(f"primary: {await workload.step()}")
            except RegistryError as exc:  # the demo goes on; the console shows the engine's side
                _say(f"primary: push failed: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), spec.push_interval / spec.speed)


def _keep_outage(spec: DemoSiteSpec, registries: dict[str, LabRegistry], elapsed: float) -> None:
    """Stop or start the outage's site so that it is down exactly in its windows."""
    outage = spec.outage
    if outage is None or elapsed < outage.first:
        return
    down = (elapsed - outage.first) % outage.every < outage.down
    registry = registries[outage.site]
    if down and registry.running:
        registry.stop()
        _say(f"{outage.site}: down (a simulated outage of {outage.down / spec.speed:.0f} s)")
    elif not down and not registry.running:
        registry.start()
        _say(f"{outage.site}: back up")


def run_site(spec: DemoSiteSpec) -> int:
    """Serve until standard input closes or SIGTERM; returns the exit status."""
    registries = _start_registries(spec)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def request_stop(*_: object) -> None:
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, request_stop)
    on_stdin_closed(request_stop, name="demo-parent-watch")
    try:
        loop.run_until_complete(_activity(spec, registries, stop))
    finally:
        loop.close()
        for registry in registries.values():
            registry.stop()
        if spec.remove_on_exit:
            shutil.rmtree(spec.remove_on_exit, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m geo_tui.lab.site SPEC.json", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(run_site(DemoSiteSpec.read(Path(sys.argv[1]))))
