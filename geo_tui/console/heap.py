"""Keeping Python's cycle collector off the UI path once the rows are loaded.

With 100,000 rows alive, each full (generation 2) collection walks every row object, the app's widgets
and Textual's caches: 120-150 ms in which no key is handled and no frame is drawn (bench/console_scale.py).
Objects alive after the first full load live as long as the console, so they are moved into the
permanent generation (`gc.freeze`), which collections skip. Frozen objects are still freed when their
last reference goes; only a reference cycle among them would outlive the console's need for it.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_loaded_heap"]


def freeze_loaded_heap() -> int:
    """Exclude every object alive now from future collections; returns how many are frozen in all."""
    gc.freeze()
    return gc.get_freeze_count()
