"""geo_tui.figures: how sizes, rates, ages, durations and counts read, at the edges of every unit."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import geo_tui.figures
from geo_tui.figures import ago, count, duration, rate, short_ago, size

NOW = 1_700_000_000.0
KIB, MIB, GIB, TIB = 2**10, 2**20, 2**30, 2**40


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (KIB * 1023.94, "1023.9 KiB"),  # the last that stays in KiB
        (KIB * 1023.96, "1.0 MiB"),  # would round to "1024.0 KiB"
        (MIB - 1, "1.0 MiB"),  # 1,048,575 bytes: "1024.0 KiB" in the table and the CLI before
        (MIB, "1.0 MiB"),
        (12_900_000, "12.3 MiB"),
        (GIB - 1, "1.0 GiB"),
        (5 * TIB, "5.0 TiB"),  # "5120.0 GiB" in the CLI before
        (TIB - 1, "1.0 TiB"),
        (2**60 - 1, "1.0 EiB"),
        (2**70, "1024.0 EiB"),  # past the last unit, the number grows
        (-1536, "-1.5 KiB"),
        (1023.7, "1023 B"),  # whole bytes
    ],
)
def test_size(n: float, expected: str) -> None:
    assert size(n) == expected


@pytest.mark.parametrize("exponent", range(10, 60, 10))
def test_no_size_reads_as_1024_of_a_unit(exponent: int) -> None:
    for delta in range(1, 200):
        assert not size(2**exponent - delta * 2 ** (exponent - 20)).startswith("1024.0")


@pytest.mark.parametrize(
    ("bytes_per_s", "expected"),
    [(0, "0 B/s"), (-5, "0 B/s"), (900, "900 B/s"), (12.4 * MIB, "12.4 MiB/s"), (MIB - 1, "1.0 MiB/s")],
)
def test_rate(bytes_per_s: float, expected: str) -> None:
    assert rate(bytes_per_s) == expected


@pytest.mark.parametrize(
    ("age", "words", "short"),
    [
        (-5, "just now", "now"),  # a clock slightly ahead of ours
        (0, "just now", "now"),
        (0.99, "just now", "now"),
        (1, "1 s ago", "1s"),
        (42, "42 s ago", "42s"),  # "just now" in the repositories table before
        (59.9, "59 s ago", "59s"),
        (60, "1 min ago", "1m"),
        (119, "1 min ago", "1m"),
        (3599, "59 min ago", "59m"),
        (3600, "1 h ago", "1h"),
        (2 * 3600 + 59, "2 h ago", "2h"),
        (86399, "23 h ago", "23h"),
        (86400, "1 d ago", "1d"),
        (400 * 86400, "400 d ago", "400d"),
    ],
)
def test_ago_and_short_ago_change_unit_at_the_same_place(age: float, words: str, short: str) -> None:
    assert ago(NOW - age, NOW) == words
    assert short_ago(NOW - age, NOW) == short


def test_ago_of_nothing_is_never() -> None:
    assert ago(None, NOW) == "never"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-3, "0s"),
        (0, "0s"),
        (0.49, "0s"),
        (0.5, "1s"),
        (4.2, "4s"),
        (59.4, "59s"),
        (59.5, "1m"),  # rounds to the second first: never "60s"
        (60, "1m"),
        (250, "4m 10s"),
        (3599.5, "1h 00m"),
        (3 * 3600 + 5 * 60, "3h 05m"),
        (86399.5, "1d 0h"),
        (2 * 86400 + 4 * 3600, "2d 4h"),
    ],
)
def test_duration(seconds: float, expected: str) -> None:
    assert duration(seconds) == expected


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, "0"), (7, "7"), (999, "999"), (1000, "1,000"), (100_000, "100,000"), (-1234, "-1,234")],
)
def test_count(n: int, expected: str) -> None:
    assert count(n) == expected


def test_figures_import_the_standard_library_only() -> None:
    """The engine, the CLI and the lab use it: no Textual, no other part of geo_tui."""
    tree = ast.parse(Path(geo_tui.figures.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported, "no imports found: the test reads the wrong file"
    assert {name.split(".")[0] for name in imported} <= set(sys.stdlib_module_names) | {"__future__"}
