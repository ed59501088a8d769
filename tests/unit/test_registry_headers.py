"""Parsers of untrusted headers (Link, WWW-Authenticate, Retry-After) and of names."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geo_tui.registry import (
    Challenge,
    is_valid_repository_name,
    is_valid_tag,
    parse_link_next,
    parse_retry_after,
    parse_www_authenticate,
    validate_repository_name,
)

BASE = "https://reg.test/v2/_catalog?n=2"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('</v2/_catalog?last=b&n=2>; rel="next"', "https://reg.test/v2/_catalog?last=b&n=2"),
        ("</v2/_catalog?last=a%2Fone&n=1>; rel=next", "https://reg.test/v2/_catalog?last=a%2Fone&n=1"),
        ('<https://other.test/v2/x?last=1>; rel="next"', "https://other.test/v2/x?last=1"),
        ('<?last=c>; rel="next"', "https://reg.test/v2/_catalog?last=c"),
        ('<p1>; rel="prev", <p3>; rel="next last"', "https://reg.test/v2/p3"),
        ('<a,b;c>; title="x, rel=next"; rel="NEXT"', "https://reg.test/v2/a,b;c"),
        ('<x>; rel="prev"', None),
        ("", None),
        (None, None),
        ("garbage", None),
        ('</v2/x>; rel="next', None),
    ],
)
def test_parse_link_next(header: str | None, expected: str | None) -> None:
    assert parse_link_next(header, BASE) == expected


def test_link_next_ignores_a_rel_hidden_in_another_parameter() -> None:
    assert parse_link_next('<x>; title="rel=next"', BASE) is None


def test_www_authenticate_docker_bearer() -> None:
    value = (
        'Bearer realm="https://auth.test/token",service="registry.test",'
        'scope="repository:group/app:pull,push",error="insufficient_scope"'
    )
    [challenge] = parse_www_authenticate(value)
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.test/token"
    assert challenge.service == "registry.test"
    assert challenge.scopes == ("repository:group/app:pull,push",)
    assert challenge.params["error"] == "insufficient_scope"


def test_www_authenticate_several_challenges_escapes_and_token68() -> None:
    value = 'Basic realm="a \\"quoted\\", realm", NEWAUTH a=b, c="d,e", Negotiate abc==, Digest'
    challenges = parse_www_authenticate(value)
    assert [c.scheme for c in challenges] == ["basic", "newauth", "negotiate", "digest"]
    assert challenges[0].realm == 'a "quoted", realm'
    assert challenges[1].params == {"a": "b", "c": "d,e"}
    assert challenges[2].params == {"token68": "abc=="}
    assert challenges[3].params == {}


def test_www_authenticate_parameter_names_are_case_insensitive() -> None:
    [challenge] = parse_www_authenticate('bEaReR Realm="r", SCOPE="a b"')
    assert challenge.realm == "r"
    assert challenge.scopes == ("a", "b")


@pytest.mark.parametrize("value", ["", "   ", ",,,", '"quoted"', "=x", "(bad)", "\x00"])
def test_www_authenticate_garbage_is_empty(value: str) -> None:
    assert parse_www_authenticate(value) == []


def test_www_authenticate_keeps_what_came_before_a_syntax_error() -> None:
    assert parse_www_authenticate('Basic realm="x", Bearer realm="unterminated') == [
        Challenge("basic", {"realm": "x"})
    ]


def test_challenge_is_hashable() -> None:
    assert len({Challenge("bearer", {"realm": "a"}), Challenge("bearer", {"realm": "a"})}) == 1


@pytest.mark.parametrize(
    ("value", "now", "expected"),
    [
        ("1", 0.0, 1.0),
        (" 120 ", 0.0, 120.0),
        ("0", 5.0, 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0, 10.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412490.0, 0.0),  # in the past: do not wait
        ("Wednesday, 21-Oct-15 07:28:00 GMT", 1445412470.0, 10.0),  # RFC 850
        ("-5", 0.0, None),
        ("1.5", 0.0, None),
        ("soon", 0.0, None),
        ("", 0.0, None),
        (None, 0.0, None),
        ("9" * 5000, 0.0, 1e11),
    ],
)
def test_parse_retry_after(value: str | None, now: float, expected: float | None) -> None:
    assert parse_retry_after(value, now) == expected


@given(st.text(), st.text())
def test_parse_link_next_never_raises(header: str, base: str) -> None:
    result = parse_link_next(header, base)
    assert result is None or isinstance(result, str)


_link_alphabet = st.sampled_from([*'<>;,="\\ \tabrelnxt/?&:.', "rel", "next", "http://h/"])


@given(st.lists(_link_alphabet).map("".join))
def test_parse_link_next_never_raises_on_link_like_text(header: str) -> None:
    parse_link_next(header, "http://reg.test/v2/_catalog")


@given(st.text())
def test_parse_www_authenticate_never_raises(value: str) -> None:
    for challenge in parse_www_authenticate(value):
        assert challenge.scheme == challenge.scheme.lower()
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in challenge.params.items())


_auth_alphabet = st.sampled_from([*'="\\, \tabBr', "Bearer ", "realm", "scope", "Basic "])


@given(st.lists(_auth_alphabet).map("".join))
def test_parse_www_authenticate_never_raises_on_challenge_like_text(value: str) -> None:
    parse_www_authenticate(value)


@given(
    st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(lambda k: k != "token68"),
        st.text(st.characters(blacklist_categories=("Cs", "Cc"))),
        max_size=5,
    ),
)
def test_www_authenticate_round_trip(scheme: str, params: dict[str, str]) -> None:
    quoted = ", ".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in params.items()
    )
    [challenge] = parse_www_authenticate(f"{scheme.upper()} {quoted}")
    assert challenge == Challenge(scheme, params)


@given(st.text(), st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12))
def test_parse_retry_after_never_raises_and_never_negative(value: str, now: float) -> None:
    result = parse_retry_after(value, now)
    assert result is None or (result >= 0 and math.isfinite(result))


@pytest.mark.parametrize("name", ["a", "group/app", "a.b_c__d---e/f0", "library/ubuntu", "a/b/c/d"])
def test_valid_repository_names(name: str) -> None:
    assert is_valid_repository_name(name)
    validate_repository_name(name)


@pytest.mark.parametrize(
    "name", ["", "../x", "a/../b", "A", "a/", "/a", "a//b", "a-", "_a", "a b", "a%2fb", "a\n", "a?x", "a#b"]
)
def test_invalid_repository_names(name: str) -> None:
    assert not is_valid_repository_name(name)
    with pytest.raises(ValueError, match="invalid repository name"):
        validate_repository_name(name)


def test_tags() -> None:
    assert is_valid_tag("latest") and is_valid_tag("_v1.2-rc") and is_valid_tag("a" * 128)
    assert not any(is_valid_tag(t) for t in ("", ".x", "-x", "a" * 129, "a/b", "a:b", "a\n", "../x"))
