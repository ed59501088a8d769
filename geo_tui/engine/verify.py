"""Verification: does a secondary hold exactly the primary's tags, digest for digest?"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from geo_tui.registry import RegistryClient, RegistryError

from .database import Write, in_place
from .describe import blame_primary
from .replicate import PrimaryRepository, read_primary_repository, read_secondary_tags, repository_checksum
from .tracking import Tracking, VerificationState

__all__ = ["VerificationResult", "Verifier", "verify_repository"]


@dataclass(frozen=True)
class VerificationResult:
    site: str
    repository: str
    ok: bool
    primary_checksum: str | None
    secondary_checksum: str | None
    detail: str

    @property
    def mismatch(self) -> bool:
        """A real difference (as opposed to a registry that could not be read)."""
        return not self.ok and self.primary_checksum is not None and self.secondary_checksum is not None


def describe_difference(primary: dict[str, str], secondary: dict[str, str], limit: int = 5) -> str:
    missing = sorted(set(primary) - set(secondary))
    extra = sorted(set(secondary) - set(primary))
    moved = sorted(t for t in set(primary) & set(secondary) if primary[t] != secondary[t])
    parts = []
    for label, tags in (("missing", missing), ("extra", extra), ("different digest", moved)):
        if tags:
            shown = ", ".join(tags[:limit]) + (f" (+{len(tags) - limit})" if len(tags) > limit else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


async def verify_repository(
    view: PrimaryRepository, secondary: RegistryClient, site: str
) -> VerificationResult:
    """Compare checksums over ``tag + digest`` on both sides (GitLab's repository checksum)."""
    if view.tag_errors:
        first = next(iter(sorted(view.tag_errors.items())))
        return VerificationResult(
            site, view.name, False, None, None, f"primary unreadable: tag {first[0]}: {first[1]}"
        )
    primary_tags = view.digests
    try:
        secondary_tags = await read_secondary_tags(secondary, view.name)
    except RegistryError as exc:
        return VerificationResult(site, view.name, False, repository_checksum(primary_tags), None, str(exc))
    ours, theirs = repository_checksum(primary_tags), repository_checksum(secondary_tags)
    if ours == theirs:
        return VerificationResult(site, view.name, True, ours, theirs, f"{len(primary_tags)} tags match")
    return VerificationResult(
        site, view.name, False, ours, theirs, describe_difference(primary_tags, secondary_tags)
    )


class Verifier:
    """Runs verifications and records them: a mismatch fails the row and queues a resync."""

    def __init__(
        self,
        tracking: Tracking,
        primary: RegistryClient,
        clients: Mapping[str, RegistryClient],
        *,
        wants: Callable[[str, str], bool],
        log: Callable[..., None],
        row_changed: Callable[[str, str], None],
        write: Write = in_place,
    ) -> None:
        self._tracking = tracking
        self._write = write
        self._primary = primary
        self._clients = clients
        self._wants = wants
        self._log = log
        self._row_changed = row_changed

    async def verify(
        self, sites: Sequence[str], repositories: Sequence[str], concurrency: int
    ) -> list[VerificationResult]:
        for site in sites:
            await self._write(
                self._tracking.ensure_rows, site, [r for r in repositories if self._wants(site, r)]
            )
        results: list[VerificationResult] = []
        slots = asyncio.Semaphore(concurrency)

        async def one(repository: str) -> None:
            async with slots:
                targets = [s for s in sites if self._wants(s, repository)]
                results.extend(await self.verify_repository(repository, targets))

        await asyncio.gather(*(one(r) for r in repositories))
        return sorted(results, key=lambda r: (r.site, r.repository))

    async def verify_repository(self, repository: str, sites: Sequence[str]) -> list[VerificationResult]:
        for site in sites:
            await self._write(self._tracking.mark_verification, site, repository, VerificationState.STARTED)
        try:
            view = await read_primary_repository(self._primary, repository)
        except Exception as exc:
            reason = blame_primary(exc)
            results = [VerificationResult(s, repository, False, None, None, reason) for s in sites]
        else:
            results = list(
                await asyncio.gather(*(verify_repository(view, self._clients[s], s) for s in sites))
            )
        for result in results:
            await self._record(result)
        return results

    async def _record(self, result: VerificationResult) -> None:
        site, repository = result.site, result.repository
        state = VerificationState.SUCCEEDED if result.ok else VerificationState.FAILED
        await self._write(
            self._tracking.mark_verification,
            site,
            repository,
            state,
            checksum=result.secondary_checksum,
            failure=None if result.ok else result.detail,
        )
        if result.ok:
            self._log("info", f"verified: {result.detail}", site=site, repository=repository)
        else:
            self._log("error", f"verification failed: {result.detail}", site=site, repository=repository)
            if result.mismatch:
                await self._write(self._tracking.request_sync, sites=[site], repositories=[repository])
        self._row_changed(site, repository)
