"""The console: a Textual app over an engine's API (its own in a child process, or a running one)."""

import os

# Textual paints at most TEXTUAL_FPS frames a second (60 by default), on a timer: a key waits for the
# timer's next tick, up to 1/60 s when the screen was painted just before, as it is all the time
# during a backfill. At 120 that wait halves (keys p99 during a backfill 49 -> 45 ms, cursor keys
# 29 -> 18 ms, in bench/console_latency.py). It adds no output on a slow link: the engine's changes
# are painted at most every REFRESH_INTERVAL (0.25 s) whatever the frame rate. Set before Textual is
# imported (it reads the variable once); a TEXTUAL_FPS in the environment wins.
FRAME_RATE = 120
os.environ.setdefault("TEXTUAL_FPS", str(FRAME_RATE))
