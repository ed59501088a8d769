"""What a registry's error body says, kept in the one-line message: Distribution's `detail` (issue 12: a full
secondary said only "500 UNKNOWN")."""

from __future__ import annotations

import json
from typing import Any

import pytest

from geo_tui.registry._errors import parse_error_body


def body(detail: Any) -> bytes:
    return json.dumps(
        {"errors": [{"code": "UNKNOWN", "message": "unknown error", "detail": detail}]}
    ).encode()


@pytest.mark.parametrize(
    ("detail", "message"),
    [
        # Distribution 2.8 on a full tmpfs, PATCH of an upload (checked)
        (
            "write /srv/a/b/_uploads/1/data: no space left on device",
            "unknown error: write /srv/a/b/_uploads/1/data: no space left on device",
        ),
        # ... and POST of a new upload: a storage driver error, its cause a Linux errno (28: ENOSPC)
        (
            {"DriverName": "filesystem", "Enclosed": {"Op": "write", "Path": "/srv/x/startedat", "Err": 28}},
            "unknown error: filesystem: write /srv/x/startedat: No space left on device",
        ),
        ({"name": "a/b"}, "unknown error"),  # NAME_UNKNOWN-style details add nothing a person needs
        ("unknown error", "unknown error"),
        (None, "unknown error"),
    ],
)
def test_the_detail_of_an_error_is_kept(detail: Any, message: str) -> None:
    assert parse_error_body(body(detail)) == ("UNKNOWN", message)
