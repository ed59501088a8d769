"""Removing secrets from text before anyone sees it: the configured values themselves, in every encoding
they travel in, and the tokens minted at run time (which no configuration names).

A `Redactor` is built once from the secret values (the engine builds it from the config) and applied
where text leaves the process or is kept: failure reasons before they are recorded, log records, the
engine API's answers, the CLI's output. Value removal, not guessing: a registry that quotes the password
it received in an error body, raw or inside a Basic header, loses it here whatever words surround it.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["REDACTED", "Redactor", "redact_tokens"]

REDACTED = "[redacted]"

# Shorter values cannot be told from ordinary words: removing "abc" everywhere would garble every line.
MIN_SECRET_LENGTH = 4

# Credentials minted at run time (our JWTs, a realm's tokens), which no Redactor knows the value of: auth
# scheme values (12 characters or more, so that "basic credentials" stays words), JWTs, and token fields
# of an echoed JSON or query string. Each pattern runs only when its cheap marker is in the text.
_TOKEN_PATTERNS = (
    (("bearer", "basic"), re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{12,}"), rf"\1 {REDACTED}"),
    (("eyj",), re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    (
        ("token",),
        re.compile(r"(?i)\b((?:access_|refresh_)?token)([\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"),
        rf"\1\2{REDACTED}",
    ),
)


def redact_tokens(text: str) -> str:
    """`text` without run-time credentials: Authorization values, JWTs and ``token=`` fields."""
    lowered = text.lower()
    for markers, pattern, replacement in _TOKEN_PATTERNS:
        if any(marker in lowered for marker in markers):
            text = pattern.sub(replacement, text)
    return text


def _encodings(value: str) -> set[str]:
    """`value` as it may travel: raw, base64 (standard and URL-safe, padded or not), URL-encoded, and
    escaped inside a JSON string."""
    raw = value.encode("utf-8", "surrogatepass")
    forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode("ascii")
        forms |= {text, text.rstrip("=")}
    return forms


class Redactor:
    """Removes known secret values, in their raw and encoded forms, and run-time tokens from text.

    `secrets`: values to remove (passwords, tokens, the notification secret, a PEM key); `basic`:
    (username, password) pairs whose ``user:password`` is removed in the forms a Basic header carries.
    """

    def __init__(self, secrets: Iterable[str] = (), *, basic: Iterable[tuple[str, str]] = ()) -> None:
        forms: set[str] = set()
        for value in secrets:
            if len(value) >= MIN_SECRET_LENGTH:
                forms |= _encodings(value)
        for username, password in basic:
            forms |= _encodings(f"{username}:{password}")
        # Longest first: a value's base64 must go before a shorter value found inside it. Plain substring
        # search, not one regex of alternatives: a 1 MB API answer is checked in milliseconds.
        self._forms = sorted((f for f in forms if len(f) >= MIN_SECRET_LENGTH), key=lambda f: (-len(f), f))

    def __repr__(self) -> str:
        return f"Redactor({len(self._forms)} forms)"

    def redact(self, text: str) -> str:
        """`text` with every known secret form and every run-time token replaced by ``[redacted]``."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return redact_tokens(text)

    def scrub(self, document: Any) -> Any:
        """A JSON-like `document` (dicts, lists, strings, numbers) with every string redacted."""
        if isinstance(document, str):
            return self.redact(document)
        if isinstance(document, dict):
            return {key: self.scrub(value) for key, value in document.items()}
        if isinstance(document, list | tuple):
            return [self.scrub(item) for item in document]
        return document

    def dumps(self, document: Any) -> str:
        """`document` as JSON text, free of secrets. A clean one (nearly all) costs one search of its
        text; only one that holds something is walked, so that keys and structure stay intact."""
        text = json.dumps(document)
        if self.redact(text) == text:
            return text
        return json.dumps(self.scrub(document))

    def log_filter(self) -> logging.Filter:
        """A logging filter that redacts each record's message (and traceback) in place."""
        return _RedactingFilter(self)


class _RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = self.redactor.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True
