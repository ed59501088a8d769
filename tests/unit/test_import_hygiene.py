"""The registry client, the engine and the config never import Textual (STYLE.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest


def test_core_imports_without_textual() -> None:
    code = (
        "import sys; sys.modules['textual'] = None\n"
        "import geo_tui.registry, geo_tui.engine, geo_tui.config, geo_tui.cli\n"
        "assert not any(m == 'textual' or m.startswith('textual.') for m in sys.modules if sys.modules[m])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports")
    if lint is None:
        pytest.fail("lint-imports (import-linter) is not installed: install the test extra")
    result = subprocess.run([lint], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_command_line_does_not_load_what_it_never_uses() -> None:
    """Start-up time is part of every `geo-tui sync --once`: httpx's own command line (rich, click,
    pygments) and httpcore stay unloaded until needed; Textual loads only for the console."""
    code = (
        "import sys\n"
        "import geo_tui.cli\n"
        "unused = ('rich', 'click', 'pygments', 'httpcore', 'textual')\n"
        "loaded = sorted(m for m in unused if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"loaded at start-up: {result.stdout.strip()}"


@pytest.mark.parametrize(("environment", "expected"), [(None, "120"), ("30", "30")])
def test_the_console_frame_rate_unless_told_otherwise(environment: str | None, expected: str) -> None:
    code = "import geo_tui.console.app, textual.constants as c; print(c.MAX_FPS)"
    env = {k: v for k, v in os.environ.items() if k != "TEXTUAL_FPS"}
    if environment is not None:
        env["TEXTUAL_FPS"] = environment
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
