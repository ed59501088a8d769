"""The engine API's commands on the wire: every command round-trips as its dataclass, a field at its
default is not sent (an older engine reads the command as before), and a body an engine must refuse is an
InvalidCommand naming the field, never anything else."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geo_tui.engine import VerificationDepth
from geo_tui.engine.wire import (
    COMMANDS,
    Command,
    CommandAnswer,
    InvalidCommand,
    Pause,
    Resume,
    Resync,
    UnknownCommand,
    Verify,
    WireError,
    decode_answer,
    decode_command,
    encode_answer,
    encode_command,
)

SECONDARIES = ("eu", "us")


@pytest.mark.parametrize(
    "command",
    [
        Resync(),
        Resync(keys=(("eu", "shop/api"), ("us", "shop/web"))),
        Resync(failed=True, sites=("us",), blobs=True),
        Resync(keys=()),
        Verify(),
        Verify(keys=(("eu", "a"),), depth=VerificationDepth.DEEP),
        Verify(failed=True, sites=("eu", "us"), depth=VerificationDepth.CONTENT, sample=0.25),
        Pause(),
        Resume(),
    ],
)
def test_every_command_round_trips_through_json(command: Command) -> None:
    name, body = encode_command(command)
    assert name == command.name and COMMANDS[name] is type(command)
    assert decode_command(name, json.loads(json.dumps(body)), secondaries=SECONDARIES) == command


def test_fields_at_their_defaults_are_not_sent() -> None:
    assert encode_command(Resync()) == ("resync", {})
    assert encode_command(Verify(keys=(("eu", "a"),))) == ("verify", {"keys": [["eu", "a"]]})
    assert encode_command(Verify(depth=VerificationDepth.DEEP)) == ("verify", {"depth": "deep"})
    assert encode_command(Pause()) == ("pause", {})


@pytest.mark.parametrize(
    ("name", "body", "error"),
    [
        ("resync", {"failed": 1}, "failed: must be true or false"),
        ("resync", {"blobs": None}, "blobs: must be true or false"),
        (
            "resync",
            {"fialed": True},
            "fialed: unknown field; this command takes only keys, failed, sites, blobs",
        ),
        ("resync", {"sites": "eu"}, "sites: a list of secondaries (eu, us)"),
        ("resync", {"sites": []}, "sites: a list of secondaries (eu, us)"),
        ("resync", {"sites": ["mars"]}, "sites: a list of secondaries (eu, us)"),
        ("resync", {"keys": {"eu": "a"}}, "keys: must be a list of [site, repository] pairs"),
        ("resync", {"keys": [["eu", "a", "b"]]}, "keys: must be a list of [site, repository] pairs"),
        ("resync", {"keys": [["mars", "a"]]}, "keys: no secondary named 'mars'"),
        ("verify", {"depth": "deepest"}, "depth: one of checksum, deep, content"),
        ("verify", {"depth": None}, "depth: one of checksum, deep, content"),
        ("verify", {"sample": 0}, "sample: a number above 0 and at most 1"),
        ("verify", {"sample": True}, "sample: a number above 0 and at most 1"),
        (
            "verify",
            {"blobs": True},
            "blobs: unknown field; this command takes only keys, failed, sites, depth, sample",
        ),
        ("pause", {"now": True}, "now: unknown field; this command takes no fields"),
    ],
)
def test_a_body_an_engine_must_refuse_names_the_field(name: str, body: dict[str, object], error: str) -> None:
    with pytest.raises(InvalidCommand) as refused:
        decode_command(name, body, secondaries=SECONDARIES)
    assert str(refused.value) == error


def test_an_unknown_command_is_named() -> None:
    with pytest.raises(UnknownCommand, match="no command 'prune'"):
        decode_command("prune", {}, secondaries=SECONDARIES)


def test_absent_keys_and_sites_read_as_absent() -> None:
    assert decode_command("resync", {"keys": None, "sites": None}, secondaries=SECONDARIES) == Resync()


def test_answers_carry_only_what_they_have() -> None:
    resync = CommandAnswer(True, "resync queued for 1 repository", 1)
    assert encode_answer(resync) == {"ok": True, "count": 1, "message": "resync queued for 1 repository"}
    verify = CommandAnswer(False, "verified 1 (deep): 0 ok, 1 failed", 1, "deep")
    assert decode_answer(json.loads(json.dumps(encode_answer(verify)))) == verify
    older = decode_answer({"ok": True, "message": "verified 1 (checksum): 1 ok, 0 failed", "count": 1})
    assert older.depth is None  # an engine from before depths
    for bad in ({"message": "x"}, {"ok": "yes", "message": "x"}, {"ok": True, "message": 3}, [], None):
        with pytest.raises(WireError):
            decode_answer(bad)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@given(
    st.sampled_from(sorted(COMMANDS)),
    st.dictionaries(st.sampled_from(["keys", "failed", "sites", "blobs", "depth", "sample", "x"]), JSON),
)
def test_decoding_untrusted_bodies_raises_nothing_but_invalid_command(
    name: str, body: dict[str, object]
) -> None:
    try:
        command = decode_command(name, body, secondaries=SECONDARIES)
    except InvalidCommand:
        return
    assert decode_command(*encode_command(command), secondaries=SECONDARIES) == command
