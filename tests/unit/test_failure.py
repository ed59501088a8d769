"""Failures are data: the metric label of a failure comes from its fields, never from its words."""

from __future__ import annotations

import pytest

from geo_tui.engine.failure import Failure, failure_of, joined
from geo_tui.registry import (
    DigestMismatch,
    InvalidManifest,
    NotFound,
    RegistryError,
    RegistryRejected,
    RegistryUnavailable,
    TransferTooSlow,
)


@pytest.mark.parametrize(
    ("exc", "label", "status"),
    [
        (RegistryUnavailable("eu", "PUT manifest", "app", status=503), "secondary_http_503", 503),
        (
            RegistryUnavailable("eu", "GET blob", "app", detail="connection refused"),
            "secondary_unreachable",
            None,
        ),
        (TransferTooSlow("eu", "upload blob", "app", detail="too slow"), "secondary_too_slow", None),
        (NotFound("main", "HEAD manifest", "app", status=404), "primary_http_404", 404),
        (DigestMismatch("main", "GET blob", "app", reference="sha256:ab"), "primary_digest", None),
        (
            RegistryRejected("eu", "DELETE manifest", "app", status=405, code="UNSUPPORTED"),
            "secondary_http_405",
            405,
        ),
        (InvalidManifest("sha256:ab", "not JSON"), "primary_invalid_manifest", None),
        (KeyError("boom"), "geo_tui_other", None),
        (TimeoutError(), "geo_tui_timed_out", None),
    ],
)
def test_the_label_comes_from_the_side_and_the_kind(
    exc: BaseException, label: str, status: int | None
) -> None:
    failure = failure_of(exc, "main")
    assert failure.label == label
    assert failure.status == status
    assert failure.text == str(exc)  # the words shown to people are the exception's, unchanged


def test_the_side_is_the_registry_the_error_names_not_a_word_in_its_text() -> None:
    # A secondary whose name starts with "primary" is still the secondary (the old regex said primary).
    exc = RegistryUnavailable("primary-dr", "PUT manifest", "app", status=500)
    assert failure_of(exc, "main").label == "secondary_http_500"
    # And words saying "primary" in a secondary's error change nothing.
    exc = RegistryError("eu", "PUT manifest", "app", detail="primary: timed out, digest, unreachable")
    assert failure_of(exc, "main").label == "secondary_other"


def test_words_change_and_the_label_does_not() -> None:
    failure = failure_of(RegistryUnavailable("eu", "GET blob", "app", status=502), "main")
    tagged = failure.within("tag v1: ").said(lambda text: text.replace("eu", "[secret]"))
    assert tagged.text.startswith("tag v1: [secret]: GET blob app: 502")
    assert (tagged.side, tagged.kind, tagged.status, tagged.label) == (
        "secondary",
        "http_502",
        502,
        "secondary_http_502",
    )
    assert str(tagged) == tagged.text


def test_a_side_given_wins_and_geo_tui_labels_are_metric_safe() -> None:
    exc = RegistryUnavailable("main", "GET tags", "app", detail="connection reset")
    assert failure_of(exc, "main", text="primary: x", side="primary").label == "primary_unreachable"
    assert Failure("geo-tui", "engine", "engine: OperationalError").label == "geo_tui_engine"


def test_joined_failures_keep_the_first_ones_fields_and_say_how_many_more() -> None:
    failures = [
        Failure("secondary", "refuses_deletes", "tag a: refuses deletes (405)", 405),
        *(Failure("primary", "http_500", f"tag {n}: 500", 500) for n in "bcde"),
    ]
    one = joined(failures)
    assert one.label == "secondary_refuses_deletes"
    assert one.status == 405
    assert one.text == "tag a: refuses deletes (405); tag b: 500; tag c: 500; and 2 more"
