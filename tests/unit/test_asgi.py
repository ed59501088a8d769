"""The shared ASGI toolkit (geo_tui._asgi) under the engine API, the receiver and the lab registry, and the
one way a listen address is printed (an IPv6 one in brackets) by serve, and so by the console's engine."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from geo_tui._asgi import (
    BodyTooLarge,
    ClientGone,
    Message,
    body_chunks,
    declared_length,
    header,
    read_body,
    send_json,
    send_response,
)
from geo_tui.config import load_config
from geo_tui.service.receiver import ReceiverApp
from geo_tui.service.serve import ListenError, asgi_server, bind_tcp, serve


def receiver_of(chunks: Iterable[bytes], *, disconnect: bool = False) -> tuple[Any, list[int]]:
    """An ASGI `receive` giving `chunks` (then a disconnect, if asked); and how many messages were read."""
    pieces = list(chunks)
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(pieces) - 1 or disconnect}
        for i, chunk in enumerate(pieces)
    ]
    if disconnect:
        messages.append({"type": "http.disconnect"})
    read = [0]

    async def receive() -> Message:
        read[0] += 1
        return messages[read[0] - 1]

    return receive, read


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_read_body_joins_the_chunks_up_to_the_cap() -> None:
    receive, _ = receiver_of([b"ab", b"", b"cd"])
    assert run(read_body(receive, 4)) == b"abcd"


def test_read_body_stops_at_the_cap_or_at_a_declared_length_over_it() -> None:
    receive, read = receiver_of([b"abc", b"def", b"ghi"])
    with pytest.raises(BodyTooLarge, match="body over 5 bytes"):
        run(read_body(receive, 5))
    assert read[0] == 2  # nothing read past the chunk that crossed the cap
    receive, read = receiver_of([b"a"])
    with pytest.raises(BodyTooLarge):
        run(read_body(receive, 5, declared=6))
    assert read[0] == 0


def test_read_body_with_drain_reads_the_rest_before_refusing() -> None:
    receive, read = receiver_of([b"abc", b"def", b"ghi"])
    with pytest.raises(BodyTooLarge):
        run(read_body(receive, 5, declared=9, drain=True))
    assert read[0] == 3


def test_a_client_that_leaves_mid_body_is_client_gone_a_connection_error() -> None:
    receive, _ = receiver_of([b"abc"], disconnect=True)
    with pytest.raises(ClientGone):
        run(read_body(receive, 100))
    assert issubclass(ClientGone, ConnectionError)  # the lab registry's handler catches ConnectionError

    async def collect() -> list[bytes]:
        return [chunk async for chunk in body_chunks(receiver_of([b"x", b"", b"y"])[0])]

    assert run(collect()) == [b"x", b"y"]


def test_headers_and_declared_length() -> None:
    scope = {"headers": [(b"content-length", b"12"), (b"authorization", b"a"), (b"authorization", b"b")]}
    assert declared_length(scope) == 12 and header(scope, b"authorization") == b"b"
    assert header(scope, b"missing") == b"" and header({}, b"authorization") == b""
    assert declared_length({"headers": [(b"content-length", b"-1")]}) is None
    assert declared_length({"headers": [(b"content-length", "²".encode())]}) is None


def test_replies_carry_their_length_and_type() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    run(
        send_json(
            send, 405, {"error": "use POST"}, [(b"allow", b"POST")], dumps=lambda d: json.dumps(d) + " "
        )
    )
    start, body = sent
    assert start["status"] == 405 and body["body"] == b'{"error": "use POST"} '
    assert start["headers"] == [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body["body"])).encode()),
        (b"allow", b"POST"),
    ]
    sent.clear()
    run(send_response(send, 200, b"m 1\n", b"text/plain"))
    assert sent[0]["headers"][:2] == [(b"content-type", b"text/plain"), (b"content-length", b"4")]


def test_no_server_sends_lifespan_so_the_receiver_ignores_it() -> None:
    """The receiver's lifespan handling was dropped: serve runs every app with lifespan off."""
    assert asgi_server(ReceiverApp(_Engine(), None)).config.lifespan == "off"  # type: ignore[arg-type]
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        raise AssertionError("a lifespan scope must not be read")

    run(ReceiverApp(_Engine(), None)({"type": "lifespan"}, receive, send))  # type: ignore[arg-type]
    assert sent == []


# --- listen addresses are printed with brackets around IPv6 ----------------------------------------------


def test_a_busy_ipv6_address_is_named_in_brackets() -> None:
    taken = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        taken.bind(("::1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=rf"cannot listen on \[::1\]:{port}: "):
            bind_tcp("::1", port)
    finally:
        taken.close()


class _Engine:
    """Enough of an engine to build a receiver that is never called with a request."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def log(self, level: str, text: str) -> None:
        self.lines.append((level, text))


def test_the_receiver_line_prints_an_ipv6_address_in_brackets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """serve's, which is also the console's engine (its child runs serve)."""
    probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    probe.bind(("::1", 0))
    port = probe.getsockname()[1]
    probe.close()
    path = tmp_path / "config.toml"
    path.write_text(
        tomli_w.dumps(
            {
                "engine": {"database": str(tmp_path / "tracking.db")},
                "primary": {"name": "primary", "registry": "http://127.0.0.1:1"},
                "secondaries": [{"name": "secondary", "registry": "http://127.0.0.1:2"}],
                "notifications": {"listen": f"[::1]:{port}", "secret": "s" * 32},
            }
        )
    )
    caplog.set_level(logging.INFO, logger="geo_tui")

    async def serve_until_ready() -> None:
        stop = asyncio.Event()
        await serve(load_config(path), on_ready=lambda engine, api: stop.set(), stop=stop)

    run(serve_until_ready())
    assert (
        f"receiving notifications on http://[::1]:{port}/api/v4/container_registry_event/events"
        in caplog.text
    )
