"""What a libpq URL of the tracking database says, read without connecting: how logs and errors name
it (never with its password), and its own ``options``."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

__all__ = ["describe_url", "url_options"]


def url_options(url: str) -> str | None:
    """The URL's own ``options`` parameter, kept beside ours (a keyword would replace it)."""
    try:
        found = conninfo_to_dict(url).get("options")
    except psycopg.ProgrammingError:
        return None
    return str(found) if found else None


def describe_url(url: str) -> str:
    """``postgresql://user@host:port/name`` of a libpq URL, without password or other parameters."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(an unreadable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "localhost")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"
