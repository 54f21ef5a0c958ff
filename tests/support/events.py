"""A JSON event-channel client for tests: collects every message, waits on conditions."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed


class EventClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self._requests = 0

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                self.messages.append(json.loads(raw))
                self._changed.set()
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 10
    ) -> dict[str, Any]:
        """The first message (received so far or later) matching ``predicate``."""
        async with asyncio.timeout(timeout):
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                if self._reader.done():
                    raise ConnectionError(f"closed ({self.ws.close_code}) before a matching message arrived")
                self._changed.clear()
                await self._changed.wait()

    def events(self, *types: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if "id" in m and (not types or m["type"] in types)]

    async def command(
        self, message_type: str, data: dict[str, Any] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Send a command and return its ``ack`` or ``error`` (matched by request_id)."""
        self._requests += 1
        request_id = f"r{self._requests}"
        await self.ws.send(
            json.dumps({"type": message_type, "data": data or {}, "request_id": request_id, **extra})
        )
        return await self.wait_for(
            lambda m: m.get("request_id") == request_id and m["type"] in ("ack", "error", "pong")
        )

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


@contextlib.asynccontextmanager
async def event_client(url: str, **kwargs: Any) -> AsyncIterator[EventClient]:
    async with websockets.connect(url, open_timeout=10, **kwargs) as ws:
        client = EventClient(ws)
        await client.wait_for(lambda m: m["type"] == "welcome")
        try:
            yield client
        finally:
            client._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client._reader


class SseClient:
    """A ``text/event-stream`` reader: parses ``id:``/``data:`` messages and ``:`` comments
    (WHATWG HTML 9.2) as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.messages: list[dict[str, Any]] = []  # each {"sse_id": str | None, **JSON of data}
        self.comments: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        event_id: str | None = None
        data: list[str] = []
        with contextlib.suppress(httpx.HTTPError):
            async for line in self.response.aiter_lines():
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    self.messages.append({"sse_id": event_id, **json.loads("\n".join(data))})
                    event_id, data = None, []
                self._changed.set()
        self._changed.set()

    async def wait_for(self, predicate: Callable[[SseClient], bool], *, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                if self._reader.done():
                    raise ConnectionError("the stream ended before the condition was met")
                self._changed.clear()
                await self._changed.wait()

    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if "id" in m]


@contextlib.asynccontextmanager
async def sse_client(
    base_url: str, path: str, *, headers: dict[str, str] | None = None
) -> AsyncIterator[SseClient]:
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(10, read=None)) as http,
        http.stream("GET", path, headers=headers) as response,
    ):
        assert response.status_code == 200, (response.status_code, await response.aread())
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = SseClient(response)
        await stream.wait_for(lambda s: any(m["type"] == "welcome" for m in s.messages))
        try:
            yield stream
        finally:
            stream._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream._reader
