"""The registry client's connection pool (`ConnectionPool`): httpcore's HTTP/1.1 connections, handed
out behind a semaphore instead of httpcore's request queue; `_network.DirectTransport` runs it over its
own sockets."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable

import httpcore

__all__ = ["ConnectionPool"]


_OriginKey = tuple[bytes, bytes, int]  # scheme, host, port (httpcore's Origin is not hashable)


class ConnectionPool:
    """HTTP/1.1 connections (httpcore's own) to the origins of one registry: at most `connections`
    requests at a time, each on an idle connection of its origin if one is open, else on a new one.

    httpcore's AsyncConnectionPool queues every request it cannot serve yet and, at each request and
    each response closed, walks the whole queue against every connection (and every idle connection
    against all the others, polling each socket): with the engine's ~100 HEADs in flight on 16
    connections, that walk was ~13% of a no-op compare's CPU (bench/backfill.py, 400 repositories).
    Here a request waits on a semaphore instead, and only the connection it takes is looked at.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        connections: int,
        keepalive_expiry: float,
        backend: httpcore.AsyncNetworkBackend,
    ) -> None:
        self._ssl_context = ssl_context
        self._max = max(1, connections)
        self._keepalive_expiry = keepalive_expiry
        self._backend = backend
        self._slots = asyncio.Semaphore(self._max)
        self._idle: dict[_OriginKey, list[httpcore.AsyncHTTPConnection]] = {}
        self._open = 0  # connections open, idle or busy
        self._closed = False

    async def handle_async_request(
        self, request: httpcore.Request, connected: Callable[[], None] | None = None
    ) -> httpcore.Response:
        """The response of `request` on a connection of this pool; `connected()` is called once the
        request has its connection (its slot taken, the connection chosen, before it connects)."""
        await self._slots.acquire()
        try:
            origin = request.url.origin
            key = (origin.scheme, origin.host, origin.port)
            while True:
                connection = await self._connection_for(origin, key)
                if connected is not None:
                    connected()
                    connected = None
                try:
                    response = await connection.handle_async_request(request)
                except httpcore.ConnectionNotAvailable:
                    await self._returned(connection, key)  # closed meanwhile: another one
                    continue
                except BaseException:
                    await self._returned(connection, key)
                    raise
                break
        except BaseException:
            self._slots.release()
            raise
        assert isinstance(response.stream, AsyncIterable)
        # The connection's own response, its headers checked once already: only its body is wrapped.
        response.stream = _HeldConnection(response.stream, self, connection, key)
        return response

    async def _connection_for(self, origin: httpcore.Origin, key: _OriginKey) -> httpcore.AsyncHTTPConnection:
        """An idle connection to `origin` still open (the last one returned), or a new one; past the
        cap on connections, an idle one to another origin is closed first."""
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.is_available() and not connection.has_expired():
                return connection
            await self._drop(connection)
        if self._open >= self._max:
            for others in self._idle.values():
                if others:
                    await self._drop(others.pop(0))
                    break
        self._open += 1
        return httpcore.AsyncHTTPConnection(
            origin,
            ssl_context=self._ssl_context,
            keepalive_expiry=self._keepalive_expiry,
            network_backend=self._backend,
        )

    async def _drop(self, connection: httpcore.AsyncHTTPConnection) -> None:
        self._open -= 1
        with contextlib.suppress(Exception):
            await connection.aclose()

    async def _returned(self, connection: httpcore.AsyncHTTPConnection, key: _OriginKey) -> None:
        """A request is done with `connection`: kept while idle and open, else closed (a connection
        that failed to connect counts as idle to httpcore, and as closed)."""
        if not self._closed and connection.is_idle() and not connection.is_closed():
            self._idle.setdefault(key, []).append(connection)
        else:
            await self._drop(connection)

    async def release(self, connection: httpcore.AsyncHTTPConnection, key: _OriginKey) -> None:
        """A response was closed: its connection goes back, and its slot to the next request."""
        try:
            await self._returned(connection, key)
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                await self._drop(idle.pop())


class _HeldConnection:
    """A response body that gives its connection back to the pool once closed (or once it fails)."""

    def __init__(
        self,
        stream: AsyncIterable[bytes],
        pool: ConnectionPool,
        connection: httpcore.AsyncHTTPConnection,
        key: _OriginKey,
    ) -> None:
        self._stream = stream
        self._pool = pool
        self._key = key
        self._connection: httpcore.AsyncHTTPConnection | None = connection

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            closing = getattr(self._stream, "aclose", None)
            if closing is not None:
                await closing()
        finally:
            await self._pool.release(connection, self._key)
