"""Failures as data: which side failed, what kind of failure, the HTTP status if any, and the words.

A failure stays a `Failure` from where it is caught until it is shown: the words go to the tracking
database, the log and the console unchanged, and the metrics take their labels from the fields (never
from the words: a label per message would grow a series per message).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from geo_tui.registry import (
    DigestMismatch,
    InvalidManifest,
    NotFound,
    RateLimited,
    RegistryAuthError,
    RegistryError,
    RegistryRejected,
    RegistryUnavailable,
    TransferTooSlow,
)

__all__ = ["Failure", "Side", "failure_of", "joined"]

Side = Literal["primary", "secondary", "geo-tui"]

# The kind of a registry error without an HTTP status, by its class (the most specific first).
_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (TransferTooSlow, "too_slow"),
    (RegistryUnavailable, "unreachable"),
    (RegistryAuthError, "auth"),
    (NotFound, "not_found"),
    (RateLimited, "rate_limited"),
    (DigestMismatch, "digest"),
    (RegistryRejected, "rejected"),
    (InvalidManifest, "invalid_manifest"),
    (TimeoutError, "timed_out"),
)


@dataclass(frozen=True)
class Failure:
    """One failure: ``side`` (primary, secondary, or geo-tui itself), ``kind`` (a bounded word such as
    ``http_500``, ``unreachable``, ``digest``, ``refuses_deletes``), ``status`` (the HTTP status, if any)
    and ``text`` (the words shown to people)."""

    side: Side
    kind: str
    text: str
    status: int | None = None

    def __str__(self) -> str:
        return self.text

    @property
    def label(self) -> str:
        """The failure's metric label: its side and kind, e.g. ``secondary_http_500``."""
        return f"{self.side.replace('-', '_')}_{self.kind}"

    def within(self, prefix: str) -> Failure:
        """The same failure, said of a part: ``tag v1: <text>``."""
        return replace(self, text=prefix + self.text)

    def said(self, words: Callable[[str], str]) -> Failure:
        """The same failure in other words (redacted, say)."""
        return replace(self, text=words(self.text))


def failure_of(
    exc: BaseException, primary: str, *, text: str | None = None, side: Side | None = None
) -> Failure:
    """The failure ``exc`` is. A registry error is on the primary when the registry it names is
    ``primary`` (the primary site's name), else on the secondary; a manifest that cannot be parsed was
    read from the primary; anything else is geo-tui's own. ``text``: the words (``str(exc)`` if none)."""
    status = exc.status if isinstance(exc, RegistryError) else None
    if side is None:
        if isinstance(exc, RegistryError):
            side = "primary" if exc.registry == primary else "secondary"
        elif isinstance(exc, InvalidManifest):
            side = "primary"
        else:
            side = "geo-tui"
    if status is not None:
        kind = f"http_{status}"
    else:
        kind = next((k for cls, k in _KINDS if isinstance(exc, cls)), "other")
    return Failure(side, kind, str(exc) if text is None else text, status)


def joined(failures: Sequence[Failure], shown: int = 3) -> Failure:
    """Several failures of one run as one: the first's side, kind and status, the first ``shown``
    texts joined by ``; `` and how many more there are."""
    first = failures[0]
    more = len(failures) - shown
    text = "; ".join(f.text for f in failures[:shown]) + (f"; and {more} more" if more > 0 else "")
    return replace(first, text=text)
