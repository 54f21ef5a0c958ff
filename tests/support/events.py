"""A JSON event-channel client for tests: collects every message, waits on conditions."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

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
