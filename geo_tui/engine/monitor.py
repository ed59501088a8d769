"""Each site as the engine watches it: its client and copier, its health (pinged on an interval, at
once after a failed copy), the bytes streamed into it, and what its card in the console shows."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from geo_tui.config import Config, SiteConfig
from geo_tui.registry import Redactor, RegistryClient

from .blobs import BlobCopier
from .budget import Gate, RequestBudget, request_hook
from .database import Write
from .describe import describe_error
from .model import SiteSnapshot
from .repository import CopyStats
from .sites import build_client, build_signer
from .streams import ClusterStreams
from .throughput import CompletionRate, Throughput
from .tracking import SiteCounts
from .updates import BytesCopied, SiteHealth

if TYPE_CHECKING:
    from .engine import Engine
    from .tracking import Tracking

__all__ = ["Site", "SiteMonitor", "open_sites"]

UNHEALTHY_INTERVAL = 3.0  # while a site is down: its recovery shows within seconds
HEALTH_MIN_GAP = 1.0  # a burst of failed copies asks for one health check, not one each
FLUSH_INTERVAL = 0.5


@dataclass
class Site:
    config: SiteConfig
    client: RegistryClient
    copier: BlobCopier | None = None
    health: SiteHealth | None = None
    throughput: Throughput = field(default_factory=Throughput)
    completions: CompletionRate = field(default_factory=CompletionRate)
    stats: CopyStats = field(default_factory=CopyStats)
    unflushed: int = 0

    @property
    def reachable(self) -> bool:
        return self.health is None or self.health.healthy


def open_sites(
    config: Config,
    tracking: Tracking,
    monitor: SiteMonitor,
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport],
    request_timeout: float,
    redactor: Redactor,
    write: Write,
    read: Write,
    gates: Sequence[Gate] = (),
    primary_gates: Sequence[Gate] = (),
    streams: ClusterStreams | None = None,
) -> dict[str, Site]:
    """A client for every site, and a blob copier for every secondary. Each client holds background
    work to the site's own budget and to `gates` (and `primary_gates` on the primary): see .budget.
    ``streams``: with many workers, one stream of a blob per secondary across all of them."""
    signer = build_signer(config.auth) if config.auth is not None else None
    blob_connections = config.engine.blob_concurrency * 2
    clock = monitor.clock
    sites: dict[str, Site] = {}
    for site in config.sites:
        budget = RequestBudget(config.engine.reconcile_requests_per_second)
        client = build_client(
            site,
            config,
            signer=signer,
            blob_connections=blob_connections,
            transport=transports.get(site.name),
            timeout=request_timeout,
            redactor=redactor,
            on_request=request_hook(
                budget, [*gates, *(primary_gates if site.name == config.primary.name else ())]
            ),
        )
        sites[site.name] = Site(site, client, throughput=Throughput(clock), completions=CompletionRate(clock))
    primary = sites[config.primary.name].client
    for site in config.secondaries:
        entry = sites[site.name]
        entry.copier = BlobCopier(
            primary,
            entry.client,
            site.name,
            tracking,
            on_bytes=monitor.bytes_counter(entry),
            write=write,
            read=read,
            streams=streams,
        )
    return sites


class SiteMonitor:
    def __init__(self, engine: Engine, health_interval: float) -> None:
        self._engine = engine
        self.clock = engine._clock
        self.health_interval = health_interval
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Check every site's health now (a copy failed: is the site down?)."""
        self._wake.set()

    async def check_health(self) -> dict[str, SiteHealth]:
        engine = self._engine

        async def ping(site: Site) -> None:
            now = engine._clock()
            try:
                latency = await site.client.ping()
                health = SiteHealth(site.config.name, True, latency, None, now)
            except Exception as exc:
                health = SiteHealth(site.config.name, False, None, describe_error(exc), now)
            changed = site.health is None or site.health.healthy != health.healthy
            site.health = health
            engine._emit(health)
            if changed and engine._tracking is not None:
                if health.healthy:
                    engine.log(
                        "info", f"reachable ({(health.latency or 0) * 1000:.0f} ms)", site=site.config.name
                    )
                else:
                    engine.log("error", f"unreachable: {health.error}", site=site.config.name)

        sites = engine._sites
        await asyncio.gather(*(ping(s) for s in sites.values()))
        return {name: s.health for name, s in sites.items() if s.health is not None}

    async def health_forever(self) -> None:
        supervisor = self._engine._supervisor
        while True:
            self._wake.clear()
            with supervisor.cycle("health"):
                healthy = await self.check_health()
            interval = self.health_interval
            if not all(h.healthy for h in healthy.values()):
                interval = min(interval, UNHEALTHY_INTERVAL)
            await asyncio.sleep(min(interval, HEALTH_MIN_GAP))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, interval - HEALTH_MIN_GAP))

    @staticmethod
    def bytes_counter(site: Site) -> Callable[[str, int], None]:
        def count(_repository: str, nbytes: int) -> None:
            site.throughput.add(nbytes)
            site.unflushed += nbytes

        return count

    def flush(self) -> None:
        """Tell the watchers the bytes streamed into each site since the last time."""
        engine = self._engine
        now = engine._clock()
        for name, site in engine._sites.items():
            if site.unflushed:
                nbytes, site.unflushed = site.unflushed, 0
                engine._emit(BytesCopied(name, nbytes, now))

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.flush()
            self._engine._supervisor.beat("flush")

    def snapshots(
        self, counts: dict[str, SiteCounts], pushed: float | None, primary_repositories: int | None
    ) -> tuple[SiteSnapshot, ...]:
        """Each site's card; ``pushed``: when the oldest push still waiting for its copy came."""
        now = self._engine._clock()
        sites = []
        for name, site in self._engine._sites.items():
            c = counts.get(name)
            remaining = (c.pending + c.started + c.failed) if c else 0
            sites.append(
                SiteSnapshot(
                    name=name,
                    role=site.config.role,
                    registry=site.config.registry,
                    health=site.health,
                    counts=c,
                    throughput=site.throughput.rate(),
                    throughput_history=tuple(site.throughput.history()),
                    # a site that is down finishes nothing: no ETA rather than a made-up one
                    eta=site.completions.eta(remaining) if c and site.reachable else None,
                    lag=(now - oldest)
                    if c and (oldest := _oldest(c.oldest_unsynced_event_at, pushed))
                    else None,
                    repository_count=primary_repositories if site.config.role == "primary" else None,
                )
            )
        return tuple(sites)


def _oldest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None
