"""The command palette (ctrl+p): the same actions as the keys, found by name."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from textual.command import Hit, Hits, Provider

if TYPE_CHECKING:
    from .app import GeoTuiApp

# (title, action, help, changes something)
COMMANDS: list[tuple[str, str, str, bool]] = [
    ("Resync the repository under the cursor", "resync", "queue it for a new sync on its site", True),
    ("Verify the repository under the cursor", "verify", "compare its checksum with the primary's", True),
    ("Resync marked or filtered repositories", "resync_many", "asks first, stating how many", True),
    ("Verify marked or filtered repositories", "verify_many", "asks first, stating how many", True),
    (
        "Deep-verify the repository under the cursor",
        "verify('deep')",
        "every manifest its tags reach, every blob there with its size",
        True,
    ),
    ("Deep-verify marked or filtered repositories", "verify_many('deep')", "asks first", True),
    (
        "Content-verify the repository under the cursor",
        "verify('content')",
        "downloads every blob from the secondary and re-hashes it",
        True,
    ),
    ("Content-verify marked or filtered repositories", "verify_many('content')", "asks first", True),
    ("Resync every failed repository", "resync_failed", "on every secondary", True),
    ("Pause or resume replication", "toggle_pause", "copies in flight finish", True),
    ("Show failed repositories", "show_state('failed')", "filter by state", False),
    ("Show pending repositories", "show_state('pending')", "filter by state", False),
    ("Show synced repositories", "show_state('synced')", "filter by state", False),
    ("Show all repositories", "show_state('all')", "clear the state filter", False),
    ("Filter repositories", "filter", "substring, or re: and a regex", False),
    ("Invert the filter", "invert_filter", "show what does not match", False),
    ("Show the workers", "workers", "every serve process on the tracking database: heartbeat, work", False),
    ("Save the event log", "save_log", "to a file in the current directory", False),
    ("Help", "help", "every key", False),
    ("Quit", "quit", "stop the engine cleanly and leave", False),
]


class GeoTuiCommands(Provider):
    async def search(self, query: str) -> Hits:
        app: GeoTuiApp = self.app  # type: ignore[assignment]
        matcher = self.matcher(query)
        for title, action, help_text, changes in COMMANDS:
            if changes and app.read_only:
                continue
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(app.run_action, action), help=help_text)
