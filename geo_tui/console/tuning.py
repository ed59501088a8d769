"""The console's speed work that reaches into Textual or the interpreter: all of it is here, and off unless
the entry point applies it.

`geo-tui` (geo_tui.cli.console.run_console) and bench/console_probe.py run the app inside
`with applied():`; tests and screenshot scripts do not, so they run on Textual's public API and the
interpreter's own collector, and have nothing to undo. GEO_TUI_CONSOLE_TUNING turns pieces off: "none", or
"-footer,-freeze" for all but those (bench/console_latency.py --tuning passes it on, to measure what each
piece still pays).

The pieces (private names of Textual 8.2: pyproject holds Textual below 8.3, and
tests/console/test_textual_private.py fails when one changes):

- footer: the key-hint bar edits its keys in place (widgets/key_hints.py) instead of Textual's Footer
  removing and mounting all of them on every focus change. It needs `FooterKey` (not exported),
  `Footer._bindings_ready` (no public flag) and `FooterKey._disabled` (no setter after construction).
- freeze: after the first full load of the rows, everything alive is moved out of the cycle collector's
  reach (`gc.freeze`): a full collection otherwise walks all of Textual, the app and every row, in which
  time no key is handled. Those objects live as long as the console anyway.
- collector: the young generation is collected every 20,000 allocations instead of 700. Textual allocates
  thousands of small containers per frame; at 700, young collections ran hundreds of times a second and
  promoted cached strips into the old generations, which brought full collections.

Re-measured with the engine in its child process (bench/console_latency.py --tuning; figures in the
README): without the footer piece each key cost the UI thread ~3-4x the CPU (p50 18.5 against 4.9-6.1
ms); without the collector piece a full collection came every ~5 s during a backfill; the freeze showed
nothing while the collector piece kept full collections away, and is kept for those that still come:
each cost ~6x the CPU without it (432 against 68 ms; 490-810 ms with 100,000 rows).

Gone: pruning the watchers that removed nodes leave behind (Textual keeps a watcher until the watched
attribute next changes, which needed `DOMNode.__watchers` and `MessagePump._closing`). With the footer
piece on, nothing piles up without it: after 30 rounds of filter, detail screen and help, as many footer
keys and widgets were alive with it as without (8 and 24). It is Textual's Footer that leaks, one set of
keys per focus change (28 footer keys alive became 324): turning the footer piece off brings that back.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

from textual.widgets import Footer

# Textual 8.2's footer key widget: textual.widgets does not export it.
from textual.widgets._footer import FooterKey

__all__ = [
    "ENV",
    "WORKAROUNDS",
    "FooterKey",
    "active",
    "applied",
    "bindings_ready",
    "freeze_loaded_heap",
    "set_bindings_ready",
    "set_key_disabled",
]

ENV = "GEO_TUI_CONSOLE_TUNING"
WORKAROUNDS = ("footer", "freeze", "collector")
YOUNG_THRESHOLD = 20_000
MIDDLE_THRESHOLD = 20
_active: frozenset[str] = frozenset()


def _wanted() -> frozenset[str]:
    setting = os.environ.get(ENV, "").strip()
    if setting == "none":
        return frozenset()
    off = {part.strip().removeprefix("-") for part in setting.split(",") if part.strip().startswith("-")}
    unknown = off - set(WORKAROUNDS)
    if unknown or (setting not in ("", "all") and not off):
        raise ValueError(f"{ENV}={setting!r}: use 'all', 'none' or '-NAME,...' with NAME in {WORKAROUNDS}")
    return frozenset(WORKAROUNDS) - off


@contextmanager
def applied() -> Iterator[frozenset[str]]:
    """Turn the pieces on for a console run (those GEO_TUI_CONSOLE_TUNING leaves on); undone at exit."""
    global _active
    previous, thresholds = _active, gc.get_threshold()
    _active = _wanted()
    if "collector" in _active:
        gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, thresholds[2])
    try:
        yield _active
    finally:
        if "freeze" in _active:
            gc.unfreeze()
        gc.set_threshold(*thresholds)
        _active = previous


def active(name: str) -> bool:
    """Whether piece `name` is on for this run."""
    if name not in WORKAROUNDS:
        raise ValueError(f"unknown console workaround {name!r}")
    return name in _active


# -- freeze ---------------------------------------------------------------------------------------------


def freeze_loaded_heap() -> int:
    """Exclude every object alive now from future collections; returns how many are frozen in all."""
    gc.freeze()
    return gc.get_freeze_count()


# -- footer: Textual 8.2's private names, for KeyHints ---------------------------------------------------


def bindings_ready(footer: Footer) -> bool:
    """Whether the screen's bindings reached `footer` yet (Footer composes no keys before)."""
    return bool(footer._bindings_ready)


def set_bindings_ready(footer: Footer) -> None:
    """What Footer.bindings_changed does before it recomposes."""
    footer._bindings_ready = True


def set_key_disabled(key: FooterKey, disabled: bool) -> None:
    """Grey out (or enable) a key already shown: a disabled key rings the bell instead of pressing."""
    if key._disabled != disabled:
        key._disabled = disabled
        key.set_class(disabled, "-disabled")
