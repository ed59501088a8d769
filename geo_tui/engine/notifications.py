"""Registry notifications: Distribution's event envelope, parsed from untrusted bytes.

Distribution posts ``{"events": [...]}`` (media type ``...events.v1+json``, ``v2`` from
Distribution 3). Every action is accepted (GitLab once answered 400 to ``pull`` events and
lost every push, GitLab issue 386389); only pushes and deletes of manifests and tags matter.

Distribution 2.8 also sends a ``pull`` event for every manifest read, geo-tui's own included, and
delivers an endpoint's events one at a time, in order: a push event waits behind every pull queued
before it. The endpoint `geo-tui init` writes drops them (``ignore.actions: [pull]``, which 2.8.2
applies only beside a non-empty ``ignore.mediatypes``; checked). For a primary that still sends them,
`PullBacklog` counts geo-tui's own manifest reads of the primary that Distribution has not notified
yet, so whole-repository work holds back while that queue is long and a push's event is never stuck
behind thousands of them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx

from geo_tui.registry import MANIFEST_TYPES, is_valid_digest, is_valid_repository_name, is_valid_tag

__all__ = ["OWN_USER_AGENT", "EnvelopeError", "PullBacklog", "RegistryEvent", "parse_envelope"]

# geo-tui's registry client sends ``geo-tui/<version>``; Distribution copies it into the event.
OWN_USER_AGENT = "geo-tui/"
# Own pulls background work may leave ahead of a push's event in the primary's queue. Distribution
# delivers one at a time (5-10 ms each here), so a push waits about this many deliveries longer; the
# reconcile's pace is the delivery rate whatever this is, as long as it keeps that queue from emptying.
OWN_PULLS_AHEAD = 4
# While pushes come (one was copied within PUSH_WINDOW seconds), one own pull at most: each push event of
# a CI burst then waits behind one delivery, not four (the reconcile of a large repository goes slower
# meanwhile, and at OWN_PULLS_AHEAD again once the pushes stop).
OWN_PULLS_AHEAD_OF_PUSHES = 1
PUSH_WINDOW = 10.0

ACTIONS_THAT_MATTER = frozenset({"push", "delete"})


class EnvelopeError(ValueError):
    """The body is not a notification envelope (not JSON, or no ``events`` list)."""


@dataclass(frozen=True)
class RegistryEvent:
    id: str
    action: str
    repository: str
    tag: str | None
    digest: str | None
    media_type: str | None
    timestamp: str | None
    user_agent: str | None = None

    @property
    def own(self) -> bool:
        """Caused by one of geo-tui's own requests (its reads of the primary)."""
        return (self.user_agent or "").startswith(OWN_USER_AGENT)

    @property
    def created_at(self) -> float | None:
        """The event's timestamp at the registry (Unix seconds), or None when absent or unreadable."""
        if not self.timestamp:
            return None
        try:  # RFC 3339 with nanoseconds; Python reads microseconds
            text = self.timestamp.replace("Z", "+00:00")
            head, dot, rest = text.partition(".")
            if dot:
                digits = len(rest) - len(rest.lstrip("0123456789"))
                rest = rest[: min(digits, 6)] + rest[digits:]
            return datetime.fromisoformat(head + dot + rest).timestamp()
        except ValueError:
            return None

    @property
    def is_manifest(self) -> bool:
        return bool(self.tag) or (self.media_type or "") in MANIFEST_TYPES

    @property
    def matters(self) -> bool:
        """A push or delete of a manifest or tag in a valid repository: something to replicate.

        A delete event carries no media type (Distribution sends only the digest), so every delete counts.
        """
        if self.action not in ACTIONS_THAT_MATTER or not is_valid_repository_name(self.repository):
            return False
        return self.action == "delete" or self.is_manifest

    @property
    def copyable(self) -> bool:
        """A push that names what to copy: a manifest digest, with a tag or pushed by digest alone.
        Copied as named; any other event that matters needs the whole repository compared."""
        return (
            self.matters
            and self.action == "push"
            and self.digest is not None
            and is_valid_digest(self.digest)
            and (self.tag is None or is_valid_tag(self.tag))
        )


def _text(value: object, limit: int = 512) -> str | None:
    """A string field, or None when absent, too long (never cut: a cut name could become another
    valid one) or not encodable (a lone surrogate cannot be stored)."""
    if not isinstance(value, str) or not value or len(value) > limit:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def parse_envelope(body: bytes) -> list[RegistryEvent]:
    """Parse a notification body. Raises EnvelopeError for what is not an envelope; events with
    missing or odd fields are kept with what they have (they simply may not matter)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise EnvelopeError(f"the body is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise EnvelopeError('the body is not an {"events": [...]} envelope')
    events = []
    for raw in document["events"]:
        if not isinstance(raw, dict):
            continue
        target = raw.get("target") if isinstance(raw.get("target"), dict) else {}
        request = raw.get("request") if isinstance(raw.get("request"), dict) else {}
        assert isinstance(target, dict) and isinstance(request, dict)
        events.append(
            RegistryEvent(
                id=_text(raw.get("id")) or "",
                action=(_text(raw.get("action"), 32) or "").lower(),
                repository=_text(target.get("repository"), 300) or "",
                tag=_text(target.get("tag"), 128),
                digest=_text(target.get("digest"), 200),
                media_type=_text(target.get("mediaType"), 200),
                timestamp=_text(raw.get("timestamp"), 64),
                user_agent=_text(request.get("useragent"), 256),
            )
        )
    return events


def is_manifest_read(request: httpx.Request) -> bool:
    """A GET or HEAD of a manifest: Distribution 2.8 answers it with a ``pull`` notification."""
    return request.method in ("GET", "HEAD") and "/manifests/" in request.url.path


class PullBacklog:
    """geo-tui's own manifest reads of the primary whose ``pull`` events have not come back yet.

    Every such read, by any work, is counted when it goes out (`sent`); the receiver counts the own
    manifest pull events it gets (`seen`). Background work waits in `hold` while more than ``limit``
    are outstanding, so what Distribution queues ahead of a push's event stays about ``limit`` events
    long, and a whole-repository run goes as fast as the receiver drains its own pulls, no faster.

    While pushes come (`pushes_coming`), the limit is ``push_limit``. Nothing is held until an own pull
    event has arrived (a primary that does not notify, or filters
    them, is never waited on), and a wait with no own event arriving for ``stall`` seconds lets go:
    a read that failed (404) or an event Distribution dropped is never coming, so the count restarts,
    and nothing is held again until the next own pull event arrives.
    """

    def __init__(
        self, limit: int = OWN_PULLS_AHEAD, stall: float = 1.0, clock: Callable[[], float] = time.monotonic
    ):
        self.limit = limit
        self.stall = stall
        self._clock = clock
        self._sent = 0
        self._seen = 0
        self._notified = False  # an own pull event has come back: the primary notifies them
        self._arrived = asyncio.Event()
        self.held_seconds = 0.0  # background work held back so far, for /metrics
        self.released = 0  # waits let go for lack of events
        self.push_limit = min(limit, OWN_PULLS_AHEAD_OF_PUSHES)
        self._pushes_until = float("-inf")

    def pushes_coming(self) -> None:
        """A push is being copied: for PUSH_WINDOW seconds, at most ``push_limit`` own pulls ahead."""
        self._pushes_until = self._clock() + PUSH_WINDOW

    @property
    def current_limit(self) -> int:
        return self.push_limit if self._clock() < self._pushes_until else self.limit

    @property
    def outstanding(self) -> int:
        return max(0, self._sent - self._seen)

    def seen(self, count: int = 1) -> None:
        """The receiver got ``count`` own manifest pull events."""
        self._seen += count
        self._notified = True
        self._seen = min(self._seen, self._sent)  # another geo-tui's pulls are not ours to count
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()

    async def hold(self, request: httpx.Request, background: bool) -> None:
        """Before a request to the primary: count it if it is a manifest read, after waiting while
        the backlog is long when it is background work."""
        if not is_manifest_read(request):
            return
        if background and self._notified and self.outstanding >= self.current_limit:
            started = self._clock()
            while self.outstanding >= self.current_limit:
                try:
                    async with asyncio.timeout(self.stall):
                        await self._arrived.wait()
                except TimeoutError:
                    # Nothing came back for a while: those are not coming, and the primary may have
                    # stopped notifying; hold nothing until an own pull event comes back again.
                    self._sent = self._seen
                    self._notified = False
                    self.released += 1
                    break
            self.held_seconds += self._clock() - started
        self._sent += 1
