"""Getting real sites ready: `geo-tui init` (config, key pair, secret, registry snippets) and
`geo-tui doctor` (checks a config against the live registries).

Like the engine, nothing here imports Textual.
"""

from __future__ import annotations

from .doctor import CheckResult, format_results, run_doctor
from .init import add_init_arguments, run_init
from .keys import SetupError, generate_notification_secret
from .snippets import Snippet, SnippetOptions, site_snippets

__all__ = [
    "CheckResult",
    "SetupError",
    "Snippet",
    "SnippetOptions",
    "add_init_arguments",
    "format_results",
    "generate_notification_secret",
    "run_doctor",
    "run_init",
    "site_snippets",
]
