"""A loopback HTTP proxy in front of a real registry whose chosen listings never end: every answer to a
path matching `endless` carries a same-origin ``Link: <...>; rel="next"`` to a page it has never linked
before, as a faulty or hostile registry would. Everything else passes through unchanged.

    with EndlessListings(primary.url, endless=r"^/v2/_catalog$") as proxy:
        write_geo_config(..., primary_options={"registry": proxy.url})
        ...
    proxy.pages  # how many listing pages it served
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import httpx

__all__ = ["EndlessListings"]

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "link"}


class EndlessListings:
    """The proxy on a free 127.0.0.1 port; use as a context manager."""

    def __init__(self, upstream: str, *, endless: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.endless = re.compile(endless)
        self.pages = 0
        self._lock = threading.Lock()
        self._client = httpx.Client(base_url=self.upstream, timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy._forward(self)

            def do_HEAD(self) -> None:
                proxy._forward(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        path, _, query = handler.path.partition("?")
        endless = handler.command == "GET" and self.endless.search(path) is not None
        if endless:  # always the first page upstream; the link below is what never ends
            query = "&".join(p for p in query.split("&") if p and not p.startswith("last="))
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
        target = path + (f"?{query}" if query else "")
        upstream = self._client.request(handler.command, target, headers=headers)
        handler.send_response(upstream.status_code)
        for name, value in upstream.headers.items():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-encoding":
                handler.send_header(name, value)
        if endless and upstream.status_code == 200:
            with self._lock:
                self.pages += 1
                page = self.pages
            handler.send_header("Link", f'<{path}?n=100&last=page-{page:09d}>; rel="next"')
        body = upstream.content
        if handler.command == "HEAD":  # a manifest's HEAD tells its size in Content-Length
            handler.send_header("Content-Length", upstream.headers.get("content-length", "0"))
            handler.end_headers()
            return
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
