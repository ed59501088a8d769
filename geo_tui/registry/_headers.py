"""Parsers of untrusted response headers: Link, WWW-Authenticate and Retry-After.

None of them raises on garbage: a header that cannot be understood reads as absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin

__all__ = ["Challenge", "parse_link_next", "parse_retry_after", "parse_www_authenticate"]

_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TOKEN68_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*(?=[ \t]*(?:,|$))")
_WS = " \t"


class _Syntax(Exception):
    """The header stopped making sense at this point."""


class _Scanner:
    """A cursor over a header value, with the RFC 9110 token and quoted-string rules."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip(self, chars: str = _WS) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def match(self, pattern: re.Pattern[str]) -> str | None:
        m = pattern.match(self.text, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        return m.group()

    def token(self) -> str:
        value = self.match(_TOKEN_RE)
        if value is None:
            raise _Syntax
        return value

    def quoted(self) -> str:
        self.pos += 1  # the opening quote
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                return "".join(out)
            if char == "\\" and self.pos < len(self.text):
                char = self.text[self.pos]
                self.pos += 1
            out.append(char)
        raise _Syntax  # unterminated

    def value(self) -> str:
        return self.quoted() if self.peek() == '"' else self.token()


# --- Link (RFC 8288) ---------------------------------------------------------------------------


def parse_link_next(link_header: str | None, base_url: str) -> str | None:
    """The absolute URL of the ``rel="next"`` link in `link_header`, resolved against `base_url`.

    `rel` may list several relation types (``rel="next last"``), quoted or not. Returns None when
    there is no next link or the header cannot be parsed.
    """
    if not link_header:
        return None
    for target, params in _links(link_header):
        rels = params.get("rel", "")
        if "next" in rels.lower().split():
            try:
                return urljoin(base_url, target.strip())
            except ValueError:
                return None
    return None


def _links(header: str) -> list[tuple[str, dict[str, str]]]:
    scanner = _Scanner(header)
    links: list[tuple[str, dict[str, str]]] = []
    try:
        while True:
            scanner.skip(_WS + ",")
            if scanner.at_end():
                return links
            if scanner.peek() != "<":
                raise _Syntax
            end = header.find(">", scanner.pos)
            if end < 0:
                raise _Syntax
            target = header[scanner.pos + 1 : end]
            scanner.pos = end + 1
            params: dict[str, str] = {}
            while True:
                scanner.skip()
                if scanner.peek() != ";":
                    break
                scanner.pos += 1
                scanner.skip()
                name = scanner.token().lower()
                scanner.skip()
                value = ""
                if scanner.peek() == "=":
                    scanner.pos += 1
                    scanner.skip()
                    value = scanner.value()
                params.setdefault(name, value)
            links.append((target, params))
            scanner.skip()
            if not scanner.at_end() and scanner.peek() != ",":
                raise _Syntax
    except _Syntax:
        return links


# --- WWW-Authenticate (RFC 9110 section 11.6.1) -----------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """One authentication challenge: a lower-cased `scheme` and its parameters (lower-cased names).

    A token68 credential (``Negotiate abc==``) is kept under the parameter name ``"token68"``.
    """

    scheme: str
    params: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def realm(self) -> str | None:
        """The ``realm`` parameter, if any."""
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        """The ``service`` parameter, if any."""
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        """The space-separated scopes of the ``scope`` parameter."""
        return tuple(self.params.get("scope", "").split())


def parse_www_authenticate(value: str) -> list[Challenge]:
    """The challenges in a WWW-Authenticate value, e.g. Docker's
    ``Bearer realm="https://r/token",service="registry",scope="repository:a/b:pull,push"``.

    Quoted strings may hold commas and backslash-escaped quotes; several challenges may share one
    header. Returns the challenges read before the first syntax error, so garbage gives ``[]``.
    """
    if not isinstance(value, str):
        return []
    scanner = _Scanner(value)
    challenges: list[Challenge] = []
    try:
        while True:
            scanner.skip(_WS + ",")
            if scanner.at_end():
                return challenges
            scheme = scanner.token().lower()
            params: dict[str, str] = {}
            scanner.skip()
            token68 = scanner.match(_TOKEN68_RE)
            if token68 is not None:
                params["token68"] = token68
            else:
                _read_params(scanner, params)
            challenges.append(Challenge(scheme, params))
    except _Syntax:
        return challenges


def _starts_param(scanner: _Scanner) -> bool:
    """Whether the scanner is at ``name =`` (an auth-param) rather than a new scheme or token68."""
    m = _TOKEN_RE.match(scanner.text, scanner.pos)
    return m is not None and scanner.text[m.end() :].lstrip(_WS).startswith("=")


def _read_params(scanner: _Scanner, params: dict[str, str]) -> None:
    """auth-params up to the next challenge (a token not followed by ``=``) or the end."""
    while True:
        scanner.skip(_WS + ",")
        if scanner.at_end() or not _starts_param(scanner):
            return
        name = scanner.token().lower()
        scanner.skip()
        scanner.pos += 1  # "="
        scanner.skip()
        params.setdefault(name, scanner.value())
        scanner.skip()
        if not scanner.at_end() and scanner.peek() != ",":
            raise _Syntax


# --- Retry-After (RFC 9110 section 10.2.3) ----------------------------------------------------


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from `now` (a Unix time), from delta-seconds or an HTTP-date; never negative.

    Returns None when `value` is absent or unreadable.
    """
    if not value or not isinstance(value, str):
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        significant = text.lstrip("0") or "0"
        return float(int(significant)) if len(significant) <= 11 else 1e11
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:  # "-0000" dates come back naive; HTTP dates are GMT
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    except Exception:  # the email parser raises several types on garbage, and overflows on odd years
        return None
