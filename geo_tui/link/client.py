"""`EngineClient`: the one client of the engine API (service/api.py), for the console link and the CLI alike.

One method per read and one per command (the commands of wire.py); each returns typed values or raises
an `EngineApiError` whose ``str()`` is one line to show:

    EngineApiError
     ├── EngineUnreachable   nothing answered at the target (or the connection broke)
     └── EngineRefused       the engine answered, but no: 401, 403, 400 naming a field, ...

``target`` is an http(s):// URL or the path of a unix socket.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Self
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import InvalidStatus, WebSocketException

from geo_tui.config import Secret
from geo_tui.engine.deep import VerificationDepth
from geo_tui.engine.describe import describe_error
from geo_tui.engine.model import EngineSnapshot, RepositoryDetail, WorkersView
from geo_tui.engine.tracking import LogRecord, RepositoryRow
from geo_tui.engine.wire import (
    Command,
    CommandAnswer,
    Pause,
    Resume,
    Resync,
    Verify,
    decode_answer,
    decode_detail,
    decode_log,
    decode_rows,
    decode_snapshot,
    decode_workers,
    encode_command,
)

__all__ = [
    "EngineApiError",
    "EngineClient",
    "EngineRefused",
    "EngineUnreachable",
    "is_unix_target",
]

PAGE_SIZE = 5000
REQUEST_TIMEOUT = 30.0
STREAM_MAX_SIZE = 16 * 1024 * 1024
_UNIX_HOST = "http://geo-tui"  # any host will do over a unix socket


def is_unix_target(target: str) -> bool:
    """Whether ``target`` names a unix socket (a path) rather than an http(s):// URL."""
    return not target.startswith(("http://", "https://"))


class EngineApiError(Exception):
    """A call to an engine's API failed; ``str(e)`` is one line to show."""


class EngineUnreachable(EngineApiError):
    """Nothing answered at the target, or the connection broke."""


class EngineRefused(EngineApiError):
    """The engine answered, and refused: ``status`` is its HTTP status."""

    def __init__(self, target: str, status: int, error: str | None = None) -> None:
        self.status = status
        if status == 401:
            message = f"the engine at {target} refused the token (401): check [api] token"
        elif status == 403:
            message = f"the engine at {target} lets this token only read (403): use [api] token"
        else:
            message = f"the engine at {target} answered {status}: {error or 'no detail'}"
        super().__init__(message)


class EngineClient:
    """The API of the engine at ``target``. Requests wait at most ``timeout`` seconds (None: no limit),
    but for a verify, which takes as long as its registries do."""

    def __init__(self, target: str, *, token: Secret | None = None, timeout: float | None = REQUEST_TIMEOUT):
        self.target = target
        self._headers = {"Authorization": f"Bearer {token.reveal()}"} if token is not None else {}
        self._timeout = timeout
        if is_unix_target(target):
            transport = httpx.AsyncHTTPTransport(uds=target)
            self._http = httpx.AsyncClient(
                transport=transport, base_url=_UNIX_HOST, headers=self._headers, trust_env=False
            )
        else:
            self._http = httpx.AsyncClient(
                base_url=target.rstrip("/"), headers=self._headers, trust_env=False
            )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- reads ------------------------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        return await self._request("GET", "info")

    async def rows(
        self, *, offset: int = 0, limit: int = PAGE_SIZE
    ) -> tuple[list[RepositoryRow], int | None]:
        """One page of rows and the offset of the next (None: the last page)."""
        page = await self._request("GET", "rows", params={"offset": offset, "limit": limit})
        next_offset = page.get("next_offset")
        return decode_rows(page.get("rows")), int(next_offset) if next_offset is not None else None

    async def all_rows(self, page_size: int = PAGE_SIZE) -> list[RepositoryRow]:
        """Every row, page by page."""
        rows: list[RepositoryRow] = []
        offset: int | None = 0
        while offset is not None:
            page, offset = await self.rows(offset=offset, limit=page_size)
            rows.extend(page)
        return rows

    async def logs(self, limit: int = 500) -> list[LogRecord]:
        """The most recent event log lines, oldest first."""
        document = await self._request("GET", "logs", params={"limit": limit})
        return [decode_log(r) for r in document.get("records") or []]

    async def snapshot(self) -> EngineSnapshot:
        return decode_snapshot(await self._request("GET", "snapshot"))

    async def detail(self, repository: str) -> RepositoryDetail:
        return decode_detail(await self._request("GET", "detail", params={"repository": repository}))

    async def workers(self) -> WorkersView:
        """Every worker sharing the engine's tracking database, as of now."""
        return decode_workers(await self._request("GET", "workers"))

    @contextlib.asynccontextmanager
    async def updates(self) -> AsyncIterator[ClientConnection]:
        """The update stream (messages for wire.decode_messages), open while the block runs."""
        options: dict[str, Any] = {
            "additional_headers": self._headers,
            "open_timeout": 10,
            "ping_interval": 5,
            "ping_timeout": 10,
            "max_size": STREAM_MAX_SIZE,
            "compression": None,
        }
        try:
            if is_unix_target(self.target):
                ws = await unix_connect(self.target, uri="ws://geo-tui/api/v1/updates", **options)
            else:
                parts = urlsplit(self.target)
                scheme = "wss" if parts.scheme == "https" else "ws"
                ws = await connect(f"{scheme}://{parts.netloc}/api/v1/updates", proxy=None, **options)
        except InvalidStatus as exc:
            raise EngineRefused(self.target, exc.response.status_code, "to the update stream") from None
        except (OSError, WebSocketException, TimeoutError) as exc:
            raise self._unreachable(exc) from None
        try:
            yield ws
        finally:
            await ws.close()

    # -- commands: one method each, named as in wire.py --------------------------------------------

    async def resync(self, command: Resync) -> CommandAnswer:
        return await self._command(command)

    async def verify(self, command: Verify) -> CommandAnswer:
        answer = await self._command(command, patient=True)  # a full verify takes a while
        # An engine from before depths ignores the depth and verifies checksums only: say so, never pass.
        if command.depth is not VerificationDepth.CHECKSUM and answer.depth != str(command.depth):
            message = f"the engine did not run a {command.depth} verification (it is older than this console)"
            return CommandAnswer(False, message, answer.count, answer.depth)
        return answer

    async def pause(self) -> CommandAnswer:
        return await self._command(Pause())

    async def resume(self) -> CommandAnswer:
        return await self._command(Resume())

    # -- HTTP -------------------------------------------------------------------------------------

    async def _command(self, command: Command, *, patient: bool = False) -> CommandAnswer:
        name, body = encode_command(command)
        return decode_answer(await self._request("POST", f"commands/{name}", json=body, patient=patient))

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        patient: bool = False,
    ) -> dict[str, Any]:
        """The JSON object the engine answered with 200; EngineRefused for any other answer. A `patient`
        request waits as long as the engine takes."""
        try:
            response = await self._http.request(
                method,
                f"/api/v1/{path}",
                params=params,
                json=json,
                timeout=None if patient else self._timeout,
            )
        except (httpx.HTTPError, OSError) as exc:
            raise self._unreachable(exc) from None
        try:
            document = response.json()
        except ValueError:
            document = None
        if response.status_code != 200 or not isinstance(document, dict):
            error = document.get("error") if isinstance(document, dict) else None
            if response.status_code == 200:
                error = "an answer that is not a JSON object"
            raise EngineRefused(self.target, response.status_code, error)
        return document

    def _unreachable(self, exc: BaseException) -> EngineUnreachable:
        return EngineUnreachable(f"the engine at {self.target} is not reachable: {describe_error(exc)}")
