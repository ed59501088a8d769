"""The house stays changeable (issue 15, STYLE.md): no module in geo_tui/ over 500 lines, no class with more
than 25 methods. A module or class that grows past either usually holds two ideas: split it along them.

The allowlist names what is being split right now and nothing else; it is meant to be empty.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "geo_tui"
MAX_MODULE_LINES = 500
MAX_CLASS_METHODS = 25

# What is being split right now (empty: the engine's split landed).
ALLOWED_MODULES: frozenset[str] = frozenset()
ALLOWED_CLASSES: frozenset[str] = frozenset()


def _modules() -> list[tuple[str, str]]:
    root = PACKAGE.parent
    return [(path.relative_to(root).as_posix(), path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))]


def _methods(node: ast.ClassDef) -> int:
    """Functions defined in the class body (properties and their setters each count, as they read)."""
    return sum(isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) for item in node.body)


def _check(sizes: dict[str, int], limit: int, unit: str, allowed: frozenset[str]) -> None:
    """Print every name over `limit` with its size, largest first (the allowlisted marked), and fail on
    those not allowed, or on an allowlist entry no longer needed."""
    over = sorted(((name, n) for name, n in sizes.items() if n > limit), key=lambda item: -item[1])
    lines = [f"  {name}: {n} {unit}" + (" (allowed for now)" * (name in allowed)) for name, n in over]
    print(f"over {limit} {unit}:\n" + ("\n".join(lines) or "  none"))
    offenders = [line for (name, _), line in zip(over, lines, strict=True) if name not in allowed]
    assert not offenders, f"over {limit} {unit}; split each along its ideas:\n" + "\n".join(offenders)
    stale = sorted(name for name in allowed if sizes.get(name, 0) <= limit)
    assert not stale, f"no longer over {limit} {unit}: remove from the allowlist: {stale}"


def test_the_package_is_where_the_test_looks() -> None:
    names = {name for name, _ in _modules()}
    assert "geo_tui/__init__.py" in names and len(names) > 50


def test_no_module_is_over_500_lines() -> None:
    sizes = {name: len(text.splitlines()) for name, text in _modules()}
    _check(sizes, MAX_MODULE_LINES, "lines", ALLOWED_MODULES)


def test_no_class_has_more_than_25_methods() -> None:
    counts: dict[str, int] = {}
    for name, text in _modules():
        for node in ast.walk(ast.parse(text, name)):
            if isinstance(node, ast.ClassDef):
                key = f"{name}:{node.name}"
                counts[key] = max(counts.get(key, 0), _methods(node))
    _check(counts, MAX_CLASS_METHODS, "methods", ALLOWED_CLASSES)
