"""Registry notifications: Distribution's event envelope, parsed from untrusted bytes.

Distribution posts ``{"events": [...]}`` (media type ``...events.v1+json``, ``v2`` from
Distribution 3). Every action is accepted (GitLab once answered 400 to ``pull`` events and
lost every push, GitLab issue 386389); only pushes and deletes of manifests and tags matter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from geo_tui.registry import MANIFEST_TYPES, is_valid_digest, is_valid_repository_name, is_valid_tag

__all__ = ["EnvelopeError", "RegistryEvent", "parse_envelope"]

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
        assert isinstance(target, dict)
        events.append(
            RegistryEvent(
                id=_text(raw.get("id")) or "",
                action=(_text(raw.get("action"), 32) or "").lower(),
                repository=_text(target.get("repository"), 300) or "",
                tag=_text(target.get("tag"), 128),
                digest=_text(target.get("digest"), 200),
                media_type=_text(target.get("mediaType"), 200),
                timestamp=_text(raw.get("timestamp"), 64),
            )
        )
    return events
