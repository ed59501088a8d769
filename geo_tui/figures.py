"""Figures as people read them: sizes, rates, ages, durations and counts, the same in the CLI and the console.

Every screen, log line and command output that shows one of these to a person goes through here, so
1,048,575 bytes reads "1.0 MiB" and a sync 42 s ago reads "42 s ago" wherever it is shown. The standard
library only: the engine, the CLI and the lab use it as well as the console (never Textual here).

- size: binary units, whole bytes below 1 KiB, one decimal above, never "1024.0" of a unit: '512 B',
  '1.0 MiB', '5.0 TiB'.
- rate: a size per second: '0 B/s', '12.4 MiB/s'.
- age: a span as an age, in words: 'under 1 s', '42 s', '3 min' (as in "no heartbeat for 3 min").
- ago: how long ago, in words: 'never', 'just now', '42 s ago', '3 min ago', '2 h ago', '5 d ago';
  short_ago is the same age in at most 4 cells for a narrow column: 'now', '42s', '3m', '2h', '5d'.
  Both round down and change unit at the same place (1 s, 1 min, 1 h, 1 d).
- duration: a span in its two largest units, rounded to the second: '45s', '4m 10s', '2h 05m', '3d 4h'.
- count: thousands separated: '1,234'.
"""

from __future__ import annotations

import math

__all__ = ["age", "ago", "count", "duration", "rate", "short_ago", "size"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
# Ages: the largest unit that fits, rounded down; below a second it is "now".
_AGE_UNITS = ((86400, "d", "d"), (3600, "h", "h"), (60, "min", "m"), (1, "s", "s"))


def size(n: float) -> str:
    """Binary units: '512 B', '1.0 KiB', '12.3 MiB'. A negative size keeps its sign."""
    if n < 0:
        return "-" + size(-n)
    value, unit = float(n), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    if unit == 0:
        return f"{int(value)} B"
    if round(value, 1) >= 1024 and unit < len(_UNITS) - 1:  # 1023.96 KiB would print as 1024.0 KiB
        value, unit = value / 1024, unit + 1
    return f"{value:.1f} {_UNITS[unit]}"


def rate(bytes_per_s: float) -> str:
    """A transfer rate: '0 B/s', '12.4 MiB/s'; a negative rate (a clock step) reads as 0."""
    return f"{size(max(0.0, bytes_per_s))}/s"


def _age(seconds: float) -> tuple[int, str, str] | None:
    """The age's whole number of its largest unit, with the unit's long and short names; None under 1 s."""
    for unit, long, short in _AGE_UNITS:
        if seconds >= unit:
            return int(seconds // unit), long, short
    return None  # under a second, or a clock a little ahead of ours


def age(seconds: float) -> str:
    """A span as an age, rounded down in its largest unit as `ago` does: 'under 1 s', '42 s', '3 min'."""
    parts = _age(seconds)
    return "under 1 s" if parts is None else f"{parts[0]} {parts[1]}"


def ago(ts: float | None, now: float) -> str:
    """How long before `now` the time `ts` was: 'never' (None), 'just now', '42 s ago', '3 min ago'."""
    if ts is None:
        return "never"
    parts = _age(now - ts)
    return "just now" if parts is None else f"{parts[0]} {parts[1]} ago"


def short_ago(ts: float, now: float) -> str:
    """The same age as `ago` in at most 4 cells: 'now', '42s', '3m', '2h', '5d'."""
    age = _age(now - ts)
    return "now" if age is None else f"{age[0]}{age[2]}"


def duration(seconds: float) -> str:
    """A span of time in its two largest units: '0s', '45s', '4m', '4m 10s', '2h 05m', '3d 4h'."""
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


def count(n: int) -> str:
    """A count with thousands separated: '7', '1,234', '100,000'."""
    return f"{n:,}"
