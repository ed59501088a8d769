"""The [api] section: where the engine API listens, and its tokens."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from geo_tui.config import Config, ConfigError, Secret, load_config

TOKEN = "api-token-SECRETMARK-0123456789"
READ = "read-token-SECRETMARK-987654321"


def minimal_config(tmp_path: Path, **sections: Any) -> Config:
    data: dict[str, Any] = {
        "engine": {"database": str(tmp_path / "tracking.db")},
        "primary": {"name": "primary", "registry": "http://127.0.0.1:9"},
        "secondaries": [{"name": "eu", "registry": "http://127.0.0.1:10"}],
        **sections,
    }
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(data))
    os.chmod(path, 0o600)
    return load_config(path)


def test_without_an_api_section_the_api_is_a_unix_socket_beside_the_database(tmp_path: Path) -> None:
    api = minimal_config(tmp_path).api
    assert api is not None and api.socket == tmp_path / "tracking.db.sock" and api.token is None


def test_a_token_and_a_notification_receiver_share_its_address(tmp_path: Path) -> None:
    notifications = {"listen": "127.0.0.1:5050", "secret": "x" * 20}
    api = minimal_config(tmp_path, notifications=notifications, api={"token": TOKEN}).api
    assert api is not None and api.shared and api.token == Secret(TOKEN)
    same = minimal_config(
        tmp_path, notifications=notifications, api={"token": TOKEN, "listen": "127.0.0.1:5050"}
    )
    assert same.api is not None and same.api.shared


def test_own_addresses_and_token_files(tmp_path: Path) -> None:
    (tmp_path / "api.token").write_text(TOKEN + "\n")
    api = minimal_config(
        tmp_path, api={"listen": "[::1]:6060", "token_file": "api.token", "read_token": READ}
    ).api
    assert api is not None and (api.listen_host, api.listen_port) == ("::1", 6060)
    assert api.token == Secret(TOKEN) and api.read_token == Secret(READ)
    unix = minimal_config(tmp_path, api={"listen": "unix:run/geo.sock"}).api
    assert unix is not None and unix.socket == tmp_path / "run" / "geo.sock"


@pytest.mark.parametrize(
    ("api", "key", "words"),
    [
        ({"listen": "127.0.0.1:6060"}, "api.listen", "needs [api] token"),
        ({"listen": "127.0.0.1:6060", "read_token": READ}, "api.listen", "needs [api] token"),
        ({"token": "short"}, "api.token", "at least 16"),
        ({"token": TOKEN, "token_file": "x"}, "api.token_file", "not both"),
        ({"token": TOKEN, "read_token": TOKEN}, "api.read_token", "must differ"),
        ({"listen": "nowhere", "token": TOKEN}, "api.listen", "host:port"),
        ({"listen": "/" + "d" * 120 + "/geo.sock"}, "api.listen", "too long"),
        ({"lisen": "x"}, "api.lisen", "did you mean 'listen'"),
    ],
)
def test_mistakes_are_one_line_naming_the_key_and_never_the_token(
    tmp_path: Path, api: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as error:
        minimal_config(tmp_path, api=api)
    text = str(error.value)
    assert f": {key}: " in text and words in text and "\n" not in text
    assert "SECRETMARK" not in text


def test_a_console_holding_only_the_read_token_attaches_read_only(tmp_path: Path) -> None:
    from geo_tui.cli import _console_link
    from geo_tui.link.remote import RemoteLink

    reader = minimal_config(tmp_path, api={"listen": str(tmp_path / "api.sock"), "read_token": READ})
    link, reads_only = _console_link(reader, "http://127.0.0.1:9")
    assert isinstance(link, RemoteLink) and reads_only and link.mode == "attached to http://127.0.0.1:9"
    full = minimal_config(
        tmp_path, api={"listen": str(tmp_path / "api.sock"), "token": TOKEN, "read_token": READ}
    )
    assert _console_link(full, "http://127.0.0.1:9")[1] is False
