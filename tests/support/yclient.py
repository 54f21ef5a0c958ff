"""Python Yjs clients: pycrdt's own ``Provider`` over a real WebSocket, and a raw protocol client."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import websockets
from pycrdt import Doc, Provider, Text
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

SYNC_UPDATE = b"\x00\x02"  # y-websocket: a sync message (0) carrying an update (2)


class WebsocketChannel:
    """pycrdt's ``Channel`` on a ``websockets`` client connection.

    pycrdt's ``Provider`` sends every change of its document, the updates it received included:
    each update another client makes comes back from every pycrdt client in the room. With
    ``echo=False`` an update message identical to one received is not sent back, as y-websocket's
    ``WebsocketProvider`` does (it skips changes whose origin is itself)."""

    def __init__(self, ws: ClientConnection, path: str, *, echo: bool = True) -> None:
        self._ws = ws
        self._path = path
        self._received: deque[bytes] | None = None if echo else deque(maxlen=1024)

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> WebsocketChannel:
        return self

    async def __anext__(self) -> bytes:
        return await self.recv()

    async def recv(self) -> bytes:
        while True:
            try:
                message = await self._ws.recv()
            except ConnectionClosed:
                raise StopAsyncIteration from None
            if isinstance(message, bytes):
                if self._received is not None and message[:2] == SYNC_UPDATE:
                    self._received.append(message)
                return message

    async def send(self, message: bytes) -> None:
        if self._received is not None and message[:2] == SYNC_UPDATE and message in self._received:
            self._received.remove(message)
            return
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(message)


@dataclass
class YClient:
    doc: Doc
    ws: ClientConnection
    provider: Provider

    def text(self, name: str = "text") -> Text:
        return self.doc.get(name, type=Text)


@contextlib.asynccontextmanager
async def yclient(
    url: str, doc: Doc | None = None, *, sync_timeout: float = 10, echo: bool = True
) -> AsyncIterator[YClient]:
    """Connect a pycrdt document to the server and wait until the first sync completed
    (``echo``: see ``WebsocketChannel``)."""
    doc = doc if doc is not None else Doc()
    async with websockets.connect(url, max_size=None, open_timeout=10) as ws:
        async with Provider(doc, WebsocketChannel(ws, url, echo=echo)) as provider:
            await asyncio.wait_for(provider.synced.wait(), sync_timeout)
            yield YClient(doc, ws, provider)


async def text_of(url: str, name: str = "text") -> str:
    """Open the document in a fresh client and return one text's content."""
    async with yclient(url) as client:
        return str(client.text(name))
