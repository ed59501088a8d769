"""Keeping Python's cycle collector off the UI path: freeze what is loaded, drop what Textual leaves behind.

With 100,000 rows alive, each full (generation 2) collection walks every row object, the app's widgets
and Textual's caches: 120-150 ms in which no key is handled and no frame is drawn (bench/console_scale.py).
Objects alive after the first full load live as long as the console, so they are moved into the
permanent generation (`gc.freeze`), which collections skip. Frozen objects are still freed when their
last reference goes; only a reference cycle among them would outlive the console's need for it.

Textual (8.x) keeps a watcher `(node, callback)` on the watched object until the watched attribute next
changes, even after the node is removed. The footer's keys watch the footer's `compact`, which never
changes, and are rebuilt on every focus change; a screen's header watches the app's `title`. So each
detail screen and each footer rebuild stayed alive, and full collections grew from 20 ms to 400 ms over a
few minutes of use (bench/console_latency.py). `prune_stale_watchers` drops watchers of removed nodes.
(The console now reuses one detail screen and edits its key-hint bar in place, so few nodes go; the
pruning stays for what still does, such as confirmations and help.)

Textual also allocates thousands of small containers per frame (each Strip carries seven little caches).
With CPython's default young threshold of 700, young collections ran hundreds of times a second and
promoted cached strips, so a full collection came every ~2 s during a backfill, 90-140 ms of CPU each on a
2-core machine. `tune_collector` raises the young threshold: in the same bench no full collection ran
while the backfill was measured, the UI loop's p99 lag fell from ~110 to ~45 ms, and the copy was no slower.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable

from textual.dom import DOMNode

__all__ = ["freeze_loaded_heap", "prune_stale_watchers", "tune_collector"]

YOUNG_THRESHOLD = 20_000
MIDDLE_THRESHOLD = 20
# Private names of Textual 8.2, which has no API to drop a watcher (pyproject holds Textual below 8.3;
# tests/console/test_textual_private.py fails when one changes): the `__watchers` dict and `_closing`.
_WATCHERS = "__watchers"  # where textual.reactive keeps them (set with setattr, so not name-mangled)


def freeze_loaded_heap() -> int:
    """Exclude every object alive now from future collections; returns how many are frozen in all."""
    gc.freeze()
    return gc.get_freeze_count()


def tune_collector() -> None:
    """Collect the young generation every 20,000 allocations instead of 700 (for the console's process)."""
    _, _, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, old)


def prune_stale_watchers(nodes: Iterable[DOMNode]) -> int:
    """Drop the watchers that removed nodes left on `nodes`, as Textual does when the attribute changes;
    returns how many were dropped."""
    dropped = 0
    for node in nodes:
        watchers: dict[str, list[tuple[DOMNode, object]]] | None = getattr(node, _WATCHERS, None)
        if not watchers:
            continue
        for watcher_list in watchers.values():
            alive = [(watcher, callback) for watcher, callback in watcher_list if not watcher._closing]
            dropped += len(watcher_list) - len(alive)
            watcher_list[:] = alive
    return dropped
