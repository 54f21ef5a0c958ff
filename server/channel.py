"""The transport seen by the core: a ``Channel`` of binary frames. ``StarletteChannel`` adapts a
FastAPI/Starlette WebSocket; tests may supply any object with the same methods."""

from __future__ import annotations

from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .close_codes import CLOSE_1003_UNSUPPORTED_DATA, CLOSE_1009_MESSAGE_TOO_BIG, CloseCode


class ChannelClosed(Exception):
    """The peer went away."""

    def __init__(self, code: int = 1000) -> None:
        super().__init__(code)
        self.code = code


class FrameRejected(Exception):
    """The peer sent a frame the protocol does not allow; the channel must close with ``close``."""

    def __init__(self, close: CloseCode, detail: str = "") -> None:
        super().__init__(close.reason if not detail else f"{close.reason}: {detail}")
        self.close = close


class Channel(Protocol):
    path: str

    async def recv(self) -> bytes:
        """The next binary frame. Raises ``ChannelClosed`` or ``FrameRejected``."""
        ...

    async def send(self, data: bytes) -> None: ...

    async def close(self, close: CloseCode) -> None: ...


class StarletteChannel:
    __slots__ = ("websocket", "path", "max_message_size")

    def __init__(self, websocket: WebSocket, *, max_message_size: int) -> None:
        self.websocket = websocket
        self.path = websocket.url.path
        self.max_message_size = max_message_size

    async def recv(self) -> bytes:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise ChannelClosed(message.get("code", 1000))
        data = message.get("bytes")
        if data is None:
            raise FrameRejected(CLOSE_1003_UNSUPPORTED_DATA)
        if len(data) > self.max_message_size:
            raise FrameRejected(CLOSE_1009_MESSAGE_TOO_BIG, f"{len(data)} > {self.max_message_size} bytes")
        return data

    async def send(self, data: bytes) -> None:
        try:
            await self.websocket.send({"type": "websocket.send", "bytes": data})
        except (WebSocketDisconnect, RuntimeError) as exc:
            raise ChannelClosed(getattr(exc, "code", 1006)) from exc

    async def close(self, close: CloseCode) -> None:
        ws = self.websocket
        if ws.application_state is WebSocketState.CONNECTED and ws.client_state is WebSocketState.CONNECTED:
            try:
                await self.websocket.close(code=close.code, reason=close.reason)
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                raise ChannelClosed(getattr(exc, "code", 1006)) from exc
