"""The engine API's JSON: every type round-trips exactly; anything else is a WireError, never a crash."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geo_tui.engine import (
    BytesCopied,
    EngineSnapshot,
    EngineStatus,
    LogLine,
    LogRecord,
    RepositoryDetail,
    RepositoryRow,
    RepositoryUpdated,
    SiteCounts,
    SiteHealth,
    SiteSnapshot,
    SiteTags,
    SyncState,
    Update,
    VerificationState,
)
from geo_tui.engine.wire import (
    WIRE_VERSION,
    WireError,
    decode_detail,
    decode_message,
    decode_messages,
    decode_row,
    decode_rows,
    decode_snapshot,
    encode_batch,
    encode_detail,
    encode_message,
    encode_row,
    encode_rows,
    encode_snapshot,
    encode_update,
)

ROW = RepositoryRow(
    "eu", "group/app", SyncState.FAILED, 3, 2, 1700000100.5, None, 1700000000.0, "secondary: 500",
    4, 123456, VerificationState.SUCCEEDED, "sha256:ab", 1700000001.0, None, True, 1699999999.0,
)  # fmt: skip
RECORD = LogRecord(42, 1700000000.25, "error", "eu", "group/app", "failed (attempt 2): secondary: 500")
HEALTH = SiteHealth("eu", False, None, "ConnectError", 1700000000.0)
COUNTS = SiteCounts("eu", 10, 1, 2, 6, 1, 5, 1, 4, 999, 1699999990.0)
SNAPSHOT = EngineSnapshot(
    (
        SiteSnapshot("primary", "primary", "http://p", SiteHealth("primary", True, 0.002, None, 1.0), None,
                     0.0, (), None, None, 10),
        SiteSnapshot("eu", "secondary", "http://eu", HEALTH, COUNTS, 1024.5, (0.0, 512.0, 1024.5), 12.0, 3.5,
                     None),
    ),
    running=True,
    paused=False,
    in_flight=2,
)  # fmt: skip


def roundtrip(document: object) -> object:
    return json.loads(json.dumps(document))


def test_rows_snapshots_and_details_round_trip_exactly() -> None:
    assert decode_row(roundtrip(encode_row(ROW))) == ROW
    assert decode_snapshot(roundtrip(encode_snapshot(SNAPSHOT))) == SNAPSHOT
    detail = RepositoryDetail(
        "group/app",
        (SiteTags("primary", {"v1": "sha256:1"}), SiteTags("eu", None, "unreachable")),
        (ROW,),
        (RECORD,),
    )
    back = decode_detail(roundtrip(encode_detail(detail)))
    assert back == detail and back.differing_tags() == detail.differing_tags()


@pytest.mark.parametrize(
    "update",
    [
        RepositoryUpdated(ROW),
        LogLine(RECORD),
        BytesCopied("eu", 1 << 40, 1700000000.0),
        HEALTH,
        EngineStatus(running=True, paused=True),
    ],
)
def test_every_update_type_round_trips(update: Update) -> None:
    kind, back = decode_message(json.dumps(encode_update(update)))
    assert back == update and type(back) is type(update)
    assert kind in {"row", "log", "bytes", "health", "status"}


def test_other_messages_come_back_as_their_body_and_unknown_keys_are_ignored() -> None:
    kind, body = decode_message(encode_message("snapshot", snapshot=encode_snapshot(SNAPSHOT)))
    assert kind == "snapshot" and isinstance(body, dict)
    assert decode_snapshot(body["snapshot"]) == SNAPSHOT
    newer = encode_update(RepositoryUpdated(ROW))
    newer["row"]["a_field_from_the_future"] = 1
    assert decode_message(json.dumps(newer))[1] == RepositoryUpdated(ROW)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (json.dumps({"v": WIRE_VERSION + 1, "type": "row"}), f"wire version {WIRE_VERSION + 1}"),
        (json.dumps({"type": "row"}), "wire version None"),
        ("[1, 2]", "JSON object"),
        ("{", "not JSON"),
        (json.dumps({"v": WIRE_VERSION, "type": "row", "row": {"site": "eu"}}), "missing"),
        (
            json.dumps({"v": WIRE_VERSION, "type": "row", "row": {**encode_row(ROW), "state": "lost"}}),
            "state",
        ),
        (json.dumps({"v": WIRE_VERSION, "type": "log", "record": []}), "expected an object"),
        (json.dumps({"v": WIRE_VERSION}), "without a type"),
    ],
)
def test_what_a_console_cannot_read_is_one_wire_error(text: str, words: str) -> None:
    with pytest.raises(WireError, match=words):
        decode_message(text)


def test_a_batch_carries_its_messages_in_order_and_one_message_goes_alone() -> None:
    texts = [
        json.dumps(encode_update(RepositoryUpdated(ROW))),
        json.dumps(encode_update(LogLine(RECORD))),
        encode_message("reload"),
    ]
    assert encode_batch(texts[:1]) == texts[0]  # a lone message is not wrapped
    decoded = decode_messages(encode_batch(texts))
    assert [kind for kind, _ in decoded] == ["row", "log", "reload"]
    assert decoded[0][1] == RepositoryUpdated(ROW) and decoded[1][1] == LogLine(RECORD)
    assert decode_messages(texts[1]) == [("log", LogLine(RECORD))]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (json.dumps({"v": WIRE_VERSION, "type": "batch", "messages": {}}), "list of messages"),
        (json.dumps({"v": WIRE_VERSION, "type": "batch", "messages": [{"v": WIRE_VERSION + 1}]}), "version"),
        (json.dumps({"v": WIRE_VERSION - 1, "type": "batch", "messages": []}), "wire version"),
        (json.dumps({"v": WIRE_VERSION, "type": "batch", "messages": [[]]}), "JSON object"),
    ],
)
def test_a_batch_a_console_cannot_read_is_one_wire_error(text: str, words: str) -> None:
    with pytest.raises(WireError, match=words):
        decode_messages(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(
    kind=st.sampled_from(["row", "log", "bytes", "health", "status", "snapshot", "batch", "x"]),
    body=st.dictionaries(
        st.sampled_from(
            ["row", "record", "site", "nbytes", "at", "running", "paused", "healthy", "messages"]
        ),
        json_values,
        max_size=5,
    ),
)
def test_decoding_untrusted_messages_raises_nothing_but_wire_error(
    kind: str, body: dict[str, object]
) -> None:
    for decode in (decode_message, decode_messages):
        try:
            decode(json.dumps({"v": WIRE_VERSION, "type": kind, **body}))
        except WireError:
            pass


def test_a_page_of_rows_is_a_table_that_round_trips_and_tolerates_new_columns() -> None:
    other = ROW.__class__(**{**ROW.__dict__, "repository": "group/web", "state": SyncState.SYNCED})
    page = roundtrip(encode_rows([ROW, other]))
    assert decode_rows(page) == [ROW, other]
    assert isinstance(page, dict)
    page["columns"].insert(0, "from_the_future")
    page["values"] = [[None, *v] for v in page["values"]]
    assert decode_rows(page) == [ROW, other]
    del page["columns"][3]
    with pytest.raises(WireError, match="missing columns"):
        decode_rows(page)
    with pytest.raises(WireError, match="rows:"):
        decode_rows({"columns": list(encode_rows([ROW])["columns"]), "values": [[1, 2]]})


def test_tasks_down_travel_in_a_snapshot_and_an_older_engine_sends_none() -> None:
    down = dataclasses.replace(SNAPSHOT, tasks_down=("discovery", "verification"))
    assert decode_snapshot(roundtrip(encode_snapshot(down))) == down
    older = roundtrip(encode_snapshot(SNAPSHOT))
    assert isinstance(older, dict)
    del older["tasks_down"]  # an engine from before the supervisor
    assert decode_snapshot(older).tasks_down == ()
    with pytest.raises(WireError, match="tasks_down"):
        decode_snapshot({**encode_snapshot(SNAPSHOT), "tasks_down": 3})
