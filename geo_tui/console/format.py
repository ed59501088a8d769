"""Words and glyphs for numbers the console shows: sizes, rates, ages, durations, bars and sparklines.

Pure functions with no Textual in them, so every pane says "12.3 MiB" and "3 min ago" the same way.
Glyphs carry the meaning on their own: the console must read on a 16-colour terminal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "ago",
    "duration",
    "human_bytes",
    "percent_bar",
    "rate",
    "short_digest",
    "sparkline",
]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_SPARKS = "▁▂▃▄▅▆▇█"
_EIGHTHS = " ▏▎▍▌▋▊▉"  # partial cells of a bar, by eighths
_FULL, _EMPTY = "█", "░"


def human_bytes(n: float) -> str:
    """Binary units with one decimal: '512 B', '12.3 MiB'. Negative sizes keep their sign."""
    if n < 0:
        return "-" + human_bytes(-n)
    value, unit = float(n), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    if unit == 0:
        return f"{int(value)} B"
    if round(value, 1) >= 1024 and unit < len(_UNITS) - 1:  # 1023.96 KiB reads as 1.0 MiB
        value, unit = value / 1024, unit + 1
    return f"{value:.1f} {_UNITS[unit]}"


def rate(bytes_per_s: float) -> str:
    """A transfer rate: '0 B/s', '12.4 MiB/s'."""
    return f"{human_bytes(max(0.0, bytes_per_s))}/s"


def ago(ts: float | None, now: float) -> str:
    """How long ago `ts` was: 'never', 'just now', '42 s ago', '3 min ago', '2 h ago', '5 d ago'."""
    if ts is None:
        return "never"
    seconds = now - ts
    if seconds < 1:  # also a clock a little ahead of ours
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def duration(seconds: float) -> str:
    """A span of time in its two largest units: '0s', '45s', '4m 10s', '2h 05m', '3d 4h'."""
    total = max(0, math.floor(seconds + 0.5))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


def sparkline(values: Sequence[float], width: int) -> str:
    """The last `width` values as block glyphs, newest on the right, scaled to their maximum.

    Always `width` cells: missing history is blank on the left; a zero is the lowest block, so
    "nothing moved" still shows as a flat line.
    """
    if width <= 0:
        return ""
    recent = [max(0.0, float(v)) for v in values[-width:]]
    top = max(recent, default=0.0)
    top_index = len(_SPARKS) - 1
    if top <= 0:
        glyphs = _SPARKS[0] * len(recent)
    else:
        # Anything above zero shows at least the second block, so a trickle differs from a stall.
        glyphs = "".join(
            _SPARKS[0] if v <= 0 else _SPARKS[max(1, round(v / top * top_index))] for v in recent
        )
    return " " * (width - len(recent)) + glyphs


def percent_bar(fraction: float, width: int) -> str:
    """A bar of exactly `width` cells: '█████▌░░'. It is full only at 100%, never by rounding."""
    if width <= 0:
        return ""
    fraction = min(1.0, max(0.0, fraction))
    if fraction >= 1.0:
        return _FULL * width
    eighths = math.floor(fraction * width * 8)
    full, part = divmod(eighths, 8)
    bar = _FULL * full + (_EIGHTHS[part] if part else "")
    return bar + _EMPTY * (width - len(bar))


def short_digest(digest: str | None) -> str:
    """'sha256:abcd1234…' (algorithm and the first 8 hex digits), or '—' when there is none."""
    if not digest:
        return "—"
    algorithm, _, hex_digits = digest.partition(":")
    if not hex_digits:
        return digest[:12] + ("…" if len(digest) > 12 else "")
    return f"{algorithm}:{hex_digits[:8]}" + ("…" if len(hex_digits) > 8 else "")
