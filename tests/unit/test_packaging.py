"""pyproject.toml declares what the package needs: every module it imports, with a floor .ci/floors tests."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import geo_tui

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
FLOOR = re.compile(r"([A-Za-z0-9_.-]+)(?:\[[A-Za-z0-9_,.-]+\])?\s*>=\s*([^,;\s]+)(,.*)?")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_modules() -> dict[str, str]:
    """Top-level modules that geo_tui imports from outside itself and the standard library -> a file."""
    found: dict[str, str] = {}
    for path in Path(geo_tui.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top != "geo_tui" and top not in sys.stdlib_module_names:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_module_imported_at_run_time_is_a_declared_dependency() -> None:
    declared = {_normal(FLOOR.fullmatch(dep).group(1)) for dep in PROJECT["dependencies"]}  # type: ignore[union-attr]
    distributions = packages_distributions()
    imported = _imported_modules()
    assert {"textual", "httpx", "httpcore", "certifi", "rich"} <= set(imported)
    for module, where in sorted(imported.items()):
        names = {_normal(d) for d in distributions.get(module, [])}
        assert names & declared, f"{where} imports {module} ({names or 'not installed'}): not in dependencies"


def test_every_dependency_has_the_floor_that_ci_installs() -> None:
    for dep in PROJECT["dependencies"]:
        assert FLOOR.fullmatch(dep), f"{dep!r}: .ci/floors needs a >= floor"
    assert (ROOT / ".ci" / "floors").exists()
    assert "bash .ci/floors" in (ROOT / ".ci" / "run").read_text()


def test_textual_is_held_to_the_minor_version_its_private_names_were_checked_on() -> None:
    (textual,) = [dep for dep in PROJECT["dependencies"] if dep.startswith("textual")]
    assert textual == "textual>=8.2.0,<8.3"  # tests/console/test_textual_private.py


def test_the_version_comes_from_one_place() -> None:
    assert PROJECT["dynamic"] == ["version"] and "version" not in PROJECT
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["dynamic"]["version"] == {"attr": "geo_tui.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", geo_tui.__version__)
