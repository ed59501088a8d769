"""Find the real tools the lab drives: missing locally -> skip; missing in CI (CI=true) -> fail loudly."""

from __future__ import annotations

import os
import shutil

import pytest

DEBIAN_PACKAGES = {"docker-registry": "docker-registry", "skopeo": "skopeo", "tmux": "tmux"}


def find_binary(name: str) -> str:
    """The absolute path of `name`; skip the test when it is missing, or fail it when running in CI."""
    path = shutil.which(name)
    if path:
        return path
    package = DEBIAN_PACKAGES.get(name, name)
    message = (
        f"`{name}` is not on PATH. Install it with `apt-get install -y {package}` "
        "(.ci/run does this on a fresh machine)."
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
