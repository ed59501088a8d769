"""How one line of the repositories pane reads: which columns fit, their widths, and each cell's text.

Rich only, no Textual: the widget in `repository_table` turns these into strips for the lines on screen.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

from rich.cells import cell_len, set_cell_size

from geo_tui.engine import RepositoryRow, SyncState, VerificationState
from geo_tui.figures import short_ago, size

from .repository_rows import REPOSITORY_MIN, RowEntry

__all__ = ["COLUMNS", "Column", "fit", "fit_columns", "row_cells", "verification_text"]

_F, _S, _P, _OK = SyncState.FAILED, SyncState.STARTED, SyncState.PENDING, SyncState.SYNCED
_STATE_TEXT = {_F: "✗ failed", _S: "⟳ running", _P: "… pending", _OK: "✓ synced"}
_STATE_CLASS = {_F: "failed", _S: "started", _P: "pending", _OK: "synced"}
_VS = VerificationState
_VERIFY_TEXT = {
    _VS.SUCCEEDED: "✓ ok",
    _VS.FAILED: "✗ failed",
    _VS.PENDING: "… pending",
    _VS.STARTED: "⟳ running",
}
_VERIFY_CLASS = {_VS.SUCCEEDED: "synced", _VS.FAILED: "failed", _VS.PENDING: "muted", _VS.STARTED: "started"}
# The depth of a finished verification, shown in its cell with its age: "✓ deep 2d", "✗ sum 3h" (10 cells).
_DEPTH_WORD = {"checksum": "sum", "deep": "deep", "content": "hash"}


@dataclass(frozen=True)
class Column:
    name: str
    title: str
    width: int  # 0: sized from the data (site) or flexible (repository, error)
    drop: int = 0  # when the width runs out, 1 goes first, then 2...; 0 never goes
    right: bool = False


COLUMNS = (
    Column("mark", "", 1),
    Column("state", "state", 9),
    Column("site", "site", 0, drop=6),
    Column("repository", "repository", 0),
    Column("tags", "tags", 6, drop=1, right=True),
    Column("last_synced", "synced", 10, drop=4),
    Column("verification", "verified", 10, drop=3),
    Column("size", "size", 10, drop=2, right=True),
    Column("error", "last error", 0, drop=5),
)
_REPOSITORY_WANT, _ERROR_MIN = 32, 16


def fit(text: str, width: int, right: bool = False) -> str:
    """Pad or cut `text` to exactly `width` cells; a cut ends with '…'."""
    length = cell_len(text)
    if length > width:
        return set_cell_size(text, width - 1) + "…" if width > 1 else "…"[:width]
    pad = " " * (width - length)
    return pad + text if right else text + pad


def fit_columns(
    width: int, site_width: int, repository_width: int, sort_column: str
) -> list[tuple[Column, int]]:
    """Which columns fit in `width`, and how wide: the least useful go first; the repository, its
    state and the sort column always show."""
    # The repository asks for its longest name up to _REPOSITORY_WANT before other columns may stay.
    wanted = max(REPOSITORY_MIN, repository_width)
    fixed = {"site": site_width, "repository": min(wanted, _REPOSITORY_WANT), "error": _ERROR_MIN}
    columns = list(COLUMNS)

    def needed() -> int:
        return sum(column.width or fixed[column.name] for column in columns) + len(columns) - 1

    for column in sorted((c for c in COLUMNS if c.drop), key=attrgetter("drop")):
        if needed() <= width:
            break
        if column.name != sort_column:
            columns.remove(column)
    spare = width - needed()
    repository = fixed["repository"] + min(max(0, spare), wanted - fixed["repository"])
    if spare < 0 or all(column.name != "error" for column in columns):
        repository = max(1, fixed["repository"] + spare)  # it takes what is left, or gives up cells
    widths = {"repository": repository, "error": _ERROR_MIN + spare - (repository - fixed["repository"])}
    return [(c, c.width or widths.get(c.name, fixed[c.name])) for c in columns]


def verification_text(row: RepositoryRow, now: float) -> str:
    """'✓ deep 2d': state, the depth of the last check and its age, once a check with a depth finished."""
    text = _VERIFY_TEXT[row.verification_state]
    word = _DEPTH_WORD.get(row.verification_depth or "")
    if word is None or row.verified_at is None or row.verification_state not in (_VS.SUCCEEDED, _VS.FAILED):
        return text
    return f"{text[0]} {word} {short_ago(row.verified_at, now)}"


def row_cells(entry: RowEntry, synced: str, marked: bool, verified: str) -> dict[str, tuple[str, str | None]]:
    """Each column's text in a row, and the component style it takes (None: the widget's own)."""
    row = entry.row
    return {
        "mark": ("●" if marked else " ", "mark"),
        "state": (_STATE_TEXT[row.state], _STATE_CLASS[row.state]),
        "site": (row.site, None),
        "repository": (row.repository, None),
        "tags": ("-" if row.tag_count is None else str(row.tag_count), None),
        "last_synced": (synced, "muted" if row.last_synced_at is None else None),
        "verification": (verified, _VERIFY_CLASS[row.verification_state]),
        "size": ("-" if row.bytes is None else size(row.bytes), None),
        "error": (entry.error or "", "error" if row.state is _F else "muted"),
    }
