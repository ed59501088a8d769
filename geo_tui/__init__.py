"""geo-tui: keep secondary container registries in step with a primary."""

import sys

__version__ = "0.1.0"

# httpx imports its own command line (click, rich, pygments) whenever those are installed, as they
# are with textual and uvicorn: ~40 ms of every geo-tui start, for a function geo-tui never calls.
# A None in sys.modules makes that import fail, which httpx expects (its `main` becomes a stub).
# An httpx imported before geo_tui keeps its command line.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
