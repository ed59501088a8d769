"""Repository names, tags and references, checked before they go into a URL unescaped."""

from __future__ import annotations

import re

from ._manifest import is_valid_digest

__all__ = [
    "is_valid_reference",
    "is_valid_repository_name",
    "is_valid_tag",
    "validate_reference",
    "validate_repository_name",
]

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")


def is_valid_repository_name(name: str) -> bool:
    """Whether `name` matches the OCI distribution name grammar (so ``../x`` never does)."""
    # Distribution refuses names over 255 characters (reference.NameTotalLengthMax).
    return isinstance(name, str) and len(name) <= 255 and _NAME_RE.fullmatch(name) is not None


def is_valid_tag(tag: str) -> bool:
    """Whether `tag` matches the OCI tag grammar ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}``."""
    return isinstance(tag, str) and _TAG_RE.fullmatch(tag) is not None


def is_valid_reference(reference: str) -> bool:
    """Whether `reference` is a valid tag or digest."""
    return is_valid_tag(reference) or is_valid_digest(reference)


def validate_repository_name(name: str) -> None:
    """Raise ValueError naming `name` unless it is a valid repository name."""
    if not is_valid_repository_name(name):
        raise ValueError(f"invalid repository name {name!r}")


def validate_reference(reference: str) -> None:
    """Raise ValueError naming `reference` unless it is a valid tag or digest."""
    if not is_valid_reference(reference):
        raise ValueError(f"invalid tag or digest {reference!r}")
