"""A notification endpoint for tests: a real HTTP server on 127.0.0.1 that records what a registry posts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Sink"]


class Sink:
    """An HTTP endpoint that records notification POSTs; it answers 500 to the first `fail_first`."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.refused = 0
        self.fail_first = fail_first
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with sink._lock:
                    refuse = sink.refused < sink.fail_first
                    if refuse:
                        sink.refused += 1
                    else:
                        sink.posts.append((dict(self.headers), body))
                self.send_response(500 if refuse else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [event for _, body in self.posts for event in json.loads(body)["events"]]

    def wait(
        self, probe: Callable[[list[dict[str, Any]]], bool], timeout: float = 10
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not probe(events := self.events()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert probe(events), f"events so far: {json.dumps(events, indent=1)}"
        return events

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
