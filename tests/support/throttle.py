"""A slow link in front of a real registry: a TCP proxy on 127.0.0.1 that passes requests at once and
trickles responses at a set rate (a blob that takes seconds to stream, so a process can be killed in the
middle of it). It counts the response bytes it passed."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Self

__all__ = ["ThrottledProxy"]


class ThrottledProxy:
    def __init__(self, upstream_port: int, *, bytes_per_second: int, chunk: int = 16 * 1024) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._rate, self._chunk = bytes_per_second, chunk
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.passed = 0  # response bytes sent to clients
        self._lock = threading.Lock()
        self._closed = False
        self._sockets: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, slow: bool) -> None:
        try:
            while True:
                data = source.recv(self._chunk if slow else 65536)
                if not data:
                    break
                sink.sendall(data)
                if slow:
                    with self._lock:
                        self.passed += len(data)
                    time.sleep(len(data) / self._rate)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
