"""The exceptions a registry client raises, one hierarchy the console maps to what it shows.

    RegistryError                  (registry, operation, repository, reference, status, code, detail)
    ├── RegistryUnavailable        transport error, timeout, or 5xx after the retries ran out
    ├── RegistryAuthError          401/403 after re-authenticating once; token realm failures
    ├── NotFound                   404: MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN, ...
    ├── RateLimited                429 after the retries ran out
    ├── RegistryRejected           any other 4xx: DIGEST_INVALID, MANIFEST_INVALID, UNSUPPORTED, 405, ...
    └── DigestMismatch             content read does not hash to the digest asked for

    ValueError
    └── InvalidManifest            (in _manifest) manifest bytes that cannot be parsed; names the digest

`str(error)` is one line, ``"<registry>: <operation> <repository>[@ref]: <status> <code>: <detail>"``,
and never carries a token, password or Authorization value: details are built from the OCI error body
or the transport error; the client removes its configured secret values (see _redact), and run-time
tokens (JWTs, Authorization values) are removed here.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ._redact import redact_tokens

__all__ = [
    "DigestMismatch",
    "NotFound",
    "RateLimited",
    "RegistryAuthError",
    "RegistryError",
    "RegistryRejected",
    "RegistryUnavailable",
    "TransferTooSlow",
    "error_class_for_status",
    "parse_error_body",
    "redact",
]

_MAX_DETAIL = 300


def redact(text: str) -> str:
    """One line of `text`, cut to a readable length, without run-time credentials (Authorization values,
    JWTs, token fields). Configured secret values are removed before this, by the client's Redactor,
    so that the cut never leaves half of one behind."""
    text = redact_tokens(" ".join(text.split()))
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return text


class RegistryError(Exception):
    """A request to a registry failed; every attribute is safe to show to a person.

    Attributes:
        registry: the site name of the registry.
        operation: what was attempted, e.g. ``"GET manifest"`` or ``"upload blob"``.
        repository: the repository involved, if any.
        reference: the tag or digest involved, if any.
        status: the HTTP status of the final answer, if there was one.
        code: the first OCI error code of the answer's JSON body, e.g. ``"MANIFEST_UNKNOWN"``.
        detail: a short human-readable explanation, free of credentials.
    """

    def __init__(
        self,
        registry: str,
        operation: str,
        repository: str | None = None,
        *,
        reference: str | None = None,
        status: int | None = None,
        code: str | None = None,
        detail: str = "",
    ) -> None:
        self.registry = registry
        self.operation = operation
        self.repository = repository
        self.reference = reference
        self.status = status
        self.code = code
        self.detail = redact(detail)
        super().__init__(self._message())

    def _message(self) -> str:
        target = self.repository or ""
        if self.reference:
            target = f"{target}@{self.reference}"
        where = f"{self.registry}: {self.operation}" + (f" {target}" if target else "")
        what = " ".join(str(part) for part in (self.status, self.code) if part is not None)
        parts = [where]
        if what:
            parts.append(what)
        if self.detail:
            parts.append(self.detail)
        return ": ".join(parts)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes do not survive the default Exception pickling.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[RegistryError], state: dict[str, Any]) -> RegistryError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, error._message())
    return error


class RegistryUnavailable(RegistryError):
    """The registry could not be reached, timed out, or kept answering 5xx."""


class TransferTooSlow(RegistryUnavailable):
    """A request ran past its deadline: its size at the configured minimum rate, plus the base timeout.
    A body that trickles (a byte every few seconds) never trips the no-progress timeout; this does."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials (401/403), even after re-authenticating once."""


class NotFound(RegistryError):
    """The repository, manifest or blob does not exist (404)."""


class RateLimited(RegistryError):
    """The registry kept answering 429 Too Many Requests."""


class RegistryRejected(RegistryError):
    """The registry refused the request (a 4xx other than 401, 403, 404 and 429)."""


class DigestMismatch(RegistryError):
    """Content read from the registry does not hash to the digest that was asked for."""


def error_class_for_status(status: int) -> type[RegistryError]:
    """The exception class for a final, unsuccessful HTTP status."""
    if status in (401, 403):
        return RegistryAuthError
    if status == 404:
        return NotFound
    if status == 429:
        return RateLimited
    if status >= 500:
        return RegistryUnavailable
    if 400 <= status < 500:
        return RegistryRejected
    return RegistryError


def parse_error_body(body: bytes) -> tuple[str | None, str]:
    """The first OCI error code and a one-line message from ``{"errors": [{"code", "message"}]}``.

    Anything else (HTML from a proxy, empty bodies, garbage) gives ``(None, "")``.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None, ""
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        return None, ""
    code: str | None = None
    messages: list[str] = []
    for entry in errors:
        if not isinstance(entry, dict):
            continue
        if code is None and isinstance(entry.get("code"), str):
            code = entry["code"]
        message = entry.get("message") if isinstance(entry.get("message"), str) else ""
        detail = _detail_text(entry.get("detail"))
        if detail and detail != message:
            message = f"{message}: {detail}" if message else detail
        if message:
            messages.append(message)
    # Not cut here: the client removes configured secrets first, RegistryError cuts after.
    return code, redact_tokens("; ".join(messages))


def _detail_text(detail: Any) -> str:
    """The `detail` of an OCI error as words. Distribution puts the cause of a 500 there: a string
    ("write .../data: no space left on device"), or a storage driver error as an object,
    ``{"DriverName": "filesystem", "Enclosed": {"Op": "write", "Path": ..., "Err": 28}}`` (Linux errno)."""
    if isinstance(detail, str):
        return detail
    if not isinstance(detail, dict):
        return ""
    enclosed = detail.get("Enclosed")
    if isinstance(enclosed, dict) and isinstance(enclosed.get("Err"), int):
        try:
            cause = os.strerror(enclosed["Err"])
        except ValueError:
            cause = f"errno {enclosed['Err']}"
        where = " ".join(str(enclosed[k]) for k in ("Op", "Path") if isinstance(enclosed.get(k), str))
        driver = detail.get("DriverName")
        prefix = f"{driver}: " if isinstance(driver, str) and driver else ""
        return f"{prefix}{where}: {cause}" if where else f"{prefix}{cause}"
    return ""
