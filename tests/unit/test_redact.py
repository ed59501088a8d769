"""The Redactor removes configured secret values in every form they travel in, and run-time tokens."""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import quote, quote_plus

import pytest

from geo_tui.registry import REDACTED, Redactor

SECRET = 'pa55/w0rd+"x"&y=1 z\\'


def b64(text: str, *, urlsafe: bool = False) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode(text.encode()).decode()


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        b64(SECRET),
        b64(SECRET).rstrip("="),
        b64(SECRET, urlsafe=True),
        quote(SECRET, safe=""),
        quote_plus(SECRET),
        json.dumps(SECRET)[1:-1],
        b64(f"geo:{SECRET}"),
        f"geo:{SECRET}",
    ],
    ids=[
        "raw",
        "base64",
        "base64-unpadded",
        "base64-urlsafe",
        "url",
        "url-plus",
        "json",
        "basic",
        "basic-raw",
    ],
)
def test_every_form_of_a_secret_is_removed(form: str) -> None:
    redactor = Redactor([SECRET], basic=[("geo", SECRET)])
    text = redactor.redact(f"the registry said: {form} (end)")
    assert text == f"the registry said: {REDACTED} (end)"
    assert SECRET not in text and form not in text


def test_short_values_are_not_removed_from_every_word() -> None:
    redactor = Redactor(["abc"])
    assert redactor.redact("abc is in alphabet") == "abc is in alphabet"


def test_a_longer_form_wins_over_a_value_inside_it() -> None:
    inner, outer = "secret-one", "prefix-secret-one-suffix"
    assert Redactor([inner, outer]).redact(f"<{outer}>") == f"<{REDACTED}>"


def test_run_time_tokens_go_by_pattern_and_words_stay() -> None:
    redactor = Redactor()
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJnZW8ifQ.c2lnbmF0dXJl"
    assert redactor.redact(f"sent {jwt}") == f"sent {REDACTED}"
    assert redactor.redact("Authorization: Bearer abcdefghijklmnop") == f"Authorization: Bearer {REDACTED}"
    assert redactor.redact('{"token": "opaque-realm-token"}') == f'{{"token": "{REDACTED}"}}'
    assert redactor.redact("uses basic credentials") == "uses basic credentials"


def test_dumps_keeps_keys_and_structure_and_passes_clean_documents_unchanged() -> None:
    redactor = Redactor(["state"])  # a secret that is also a key of the document
    document = {"state": "failed", "reason": "echo state and more", "n": 3, "list": ["state"]}
    assert json.loads(redactor.dumps(document)) == {
        "state": "failed",
        "reason": f"echo {REDACTED} and more",
        "n": 3,
        "list": [REDACTED],
    }
    clean = {"rows": [{"repository": "shop/api", "state": "synced"}]}
    assert Redactor(["not-in-there"]).dumps(clean) == json.dumps(clean)


def test_the_log_filter_redacts_messages_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("geo_tui.test_redact")
    log_filter = Redactor([SECRET]).log_filter()
    logger.addFilter(log_filter)
    try:
        with caplog.at_level(logging.INFO, logger="geo_tui.test_redact"):
            logger.info("password %s in an argument", SECRET)
            try:
                raise ValueError(f"echoed {b64(SECRET)}")
            except ValueError:
                logger.exception("a failure")
    finally:
        logger.removeFilter(log_filter)
    assert "password [redacted] in an argument" in caplog.text
    assert "echoed [redacted]" in caplog.text
    assert SECRET not in caplog.text and b64(SECRET) not in caplog.text
