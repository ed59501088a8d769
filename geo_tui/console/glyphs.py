"""Glyphs the console draws: sparklines, bars and digests cut to fit a cell.

Pure functions with no Textual in them. Glyphs carry the meaning on their own: the console must read on a
16-colour terminal. Sizes, rates, ages and durations in words are `geo_tui.figures`, shared with the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["percent_bar", "short_digest", "sparkline"]

_SPARKS = "▁▂▃▄▅▆▇█"
_EIGHTHS = " ▏▎▍▌▋▊▉"  # partial cells of a bar, by eighths
_FULL, _EMPTY = "█", "░"


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
