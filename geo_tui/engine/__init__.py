"""The sync engine: discovery, copy plans, queue, retries, verification and the tracking database.

Everything the console and the CLI need is exported here; nothing in this package imports Textual.
"""

from __future__ import annotations

from .backoff import in_run_delay, retry_delay
from .engine import Engine
from .model import EngineSnapshot, RepositoryDetail, SiteSnapshot, SiteSummary, SiteTags, SyncSummary
from .replicate import CopyStats, repository_checksum
from .tracking import (
    DatabaseDamaged,
    DatabaseTooNew,
    DatabaseUnusable,
    LogRecord,
    RepositoryRow,
    SiteCounts,
    SyncState,
    Tracking,
    VerificationState,
)
from .updates import BytesCopied, EngineStatus, LogLine, RepositoryUpdated, SiteHealth, Update
from .verify import VerificationDepth, VerificationResult

__all__ = [
    "BytesCopied",
    "CopyStats",
    "DatabaseDamaged",
    "DatabaseTooNew",
    "DatabaseUnusable",
    "Engine",
    "EngineSnapshot",
    "EngineStatus",
    "LogLine",
    "LogRecord",
    "RepositoryDetail",
    "RepositoryRow",
    "RepositoryUpdated",
    "SiteCounts",
    "SiteHealth",
    "SiteSnapshot",
    "SiteSummary",
    "SiteTags",
    "SyncState",
    "SyncSummary",
    "Tracking",
    "Update",
    "VerificationDepth",
    "VerificationResult",
    "VerificationState",
    "in_run_delay",
    "repository_checksum",
    "retry_delay",
]
