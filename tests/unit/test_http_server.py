"""The limits every geo-tui uvicorn server runs with: a request head has a deadline, and accept()'s
resource errors are logged once a minute. The first test also fails if uvicorn's h11 protocol stops
exposing what HeaderDeadlineProtocol reads (``conn``, ``transport``, ``loop``)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from geo_tui._http_server import LimitedServer, server_limits, throttle_accept_errors


async def _hello(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def serving(header_timeout: float) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    config = uvicorn.Config(_hello, log_config=None, lifespan="off", **server_limits(header_timeout))
    server = LimitedServer(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), seconds) == b""
    except ConnectionResetError:  # closed with bytes of ours unread: the kernel answers RST
        return True
    except TimeoutError:
        return False


def test_a_request_head_that_never_ends_is_closed_after_the_deadline_and_others_are_answered() -> None:
    async def scenario() -> None:
        async with serving(header_timeout=0.5) as port:
            silent = await asyncio.open_connection("127.0.0.1", port)  # connects, sends nothing
            partial = await asyncio.open_connection("127.0.0.1", port)
            partial[1].write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never ends
            trickle = await asyncio.open_connection("127.0.0.1", port)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(reader.readuntil(b"ok"), 2)
            assert answer.startswith(b"HTTP/1.1 200")
            started = time.monotonic()

            async def drip() -> None:  # a byte every 0.1 s: progress, but the head is never done in time
                with contextlib.suppress(OSError):
                    for _ in range(30):
                        trickle[1].write(b"X")
                        await trickle[1].drain()
                        await asyncio.sleep(0.1)

            dripping = asyncio.ensure_future(drip())
            for connection in (silent, partial, trickle):
                assert await closed_within(connection[0], 1.5)
            assert time.monotonic() - started < 1.5
            dripping.cancel()
            # The kept-alive connection that finished its request is uvicorn's keep-alive timer's (5 s),
            # not the header deadline's: it still answers a second request after the deadline.
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await asyncio.wait_for(reader.readuntil(b"ok"), 2)).startswith(b"HTTP/1.1 200")
            # A second request whose head stops half-way gets the deadline again.
            writer.write(b"GET / HTTP/1.1\r\n")
            assert await closed_within(reader, 1.5)
            for connection in (silent, partial, trickle, (reader, writer)):
                connection[1].close()

    asyncio.run(scenario())


def test_accept_resource_errors_are_logged_once_a_minute_and_other_errors_pass_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    passed: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    try:
        loop.set_exception_handler(lambda _loop, context: passed.append(context))
        throttle_accept_errors(loop, clock=lambda: now[0])
        throttle_accept_errors(loop, clock=lambda: now[0])  # twice: still one throttle
        emfile = {
            "message": "socket.accept() out of system resource",
            "exception": OSError(errno.EMFILE, "Too many open files"),
        }
        with caplog.at_level(logging.ERROR, logger="geo_tui.http"):
            for _ in range(2048):  # what one retry of asyncio's accept loop reports (uvicorn's backlog)
                loop.call_exception_handler(emfile)
            now[0] += 59.0
            loop.call_exception_handler(emfile)
            now[0] += 1.0
            loop.call_exception_handler(emfile)
            loop.call_exception_handler({"message": "something else"})
        lines = [r.getMessage() for r in caplog.records if r.name == "geo_tui.http"]
        assert lines == [
            "cannot accept connections: Too many open files; they wait in the queue until descriptors "
            "free up (logged at most once a minute; raise `ulimit -n`?)",
            "cannot accept connections: Too many open files (2048 more since the last such line); they "
            "wait in the queue until descriptors free up (logged at most once a minute; raise `ulimit -n`?)",
        ]
        assert [c["message"] for c in passed] == ["something else"]
    finally:
        loop.close()


# A LimitedServer in a child process with 64 file descriptors: it listens, and stops when told to, then keeps
# its event loop running for a while (as `serve` does while the engine closes).
_OUT_OF_DESCRIPTORS_CHILD = """
import asyncio, logging, resource, socket, sys, time
import uvicorn
from geo_tui._http_server import LimitedServer, server_limits
from tests.unit.test_http_server import _hello

logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

async def main() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    server = LimitedServer(uvicorn.Config(_hello, log_level="warning", **server_limits()))
    server.install_signal_handlers = lambda: None
    task = asyncio.ensure_future(server.serve(sockets=[listener]))
    print(listener.getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    asked = time.monotonic()
    server.should_exit = True
    await task
    print(f"stopped in {time.monotonic() - asked:.1f} s", flush=True)
    await asyncio.sleep(2.5)  # every accept retry still pending fires now

asyncio.run(main())
"""


def test_a_server_stopped_while_out_of_descriptors_stops_at_once_without_a_traceback() -> None:
    """asyncio retries accept() a second after EMFILE, once per backlog slot: thousands of timers. A
    server stopped meanwhile closes its listener, and every pending retry failed on it with a traceback
    (10,548 in one run, holding the loop for seconds). Also fails if asyncio renames that retry."""
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", _OUT_OF_DESCRIPTORS_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    sockets: list[socket.socket] = []
    try:
        port = int(child.stdout.readline())
        for _ in range(150):  # more than the child can hold: the kernel queues the rest
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a head: kept until its deadline
            sockets.append(sock)
        time.sleep(1.5)  # an accept round ran out of descriptors; its retries are pending
        child.stdin.write("stop\n")
        child.stdin.flush()
        output, _ = child.communicate(timeout=60)
    finally:
        for sock in sockets:
            sock.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, output[-3000:]
    assert "cannot accept connections: Too many open files" in output, output[-3000:]
    assert "Traceback" not in output and "Invalid file descriptor" not in output, output[-3000:]
    assert len(output.splitlines()) < 10, output[-3000:]
