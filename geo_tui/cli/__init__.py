"""The ``geo-tui`` command line: the console by default; serve, sync, status, verify and resync.

Exit status: 0 all good, 1 something failed or differs (a crash too: one line, and the traceback in a
crash log, see geo_tui.crash), 2 bad configuration or usage, 130 interrupted.

One module per idea: `arguments` (the parser), `entry` (dispatch and exit statuses), `common` (what every
command shares), `console` (the console and the demo), and one module per command group: `sync`, `resync`,
`verify`, `status`, `service` (serve and doctor; `init` lives in geo_tui.setup).
"""

from __future__ import annotations

from geo_tui.cli.arguments import build_parser
from geo_tui.cli.console import _console_link as _console_link
from geo_tui.cli.entry import _COMMANDS as _COMMANDS
from geo_tui.cli.entry import main

__all__ = ["build_parser", "main"]

_parser = build_parser  # the name tests import
