"""The transport seen by the core: a ``Channel`` of binary frames.

``AsgiChannel`` speaks the ASGI WebSocket protocol directly (no framework objects per connection:
the sync endpoint is the hot path, and every layer costs memory and time per frame). Tests may
supply any object with the same methods.
"""

from __future__ import annotations

from typing import Any, Protocol

from . import metrics
from .close_codes import CLOSE_1003_UNSUPPORTED_DATA, CLOSE_1009_MESSAGE_TOO_BIG, CloseCode
from .websocket import FRAMES_EXTENSION, FrameWriter
from .ws_frames import Framed

Receive = Any  # ASGI callables; kept loose to avoid importing a framework here
Send = Any


class ChannelClosed(Exception):
    """The peer went away."""

    def __init__(self, code: int = 1000) -> None:
        super().__init__(code)
        self.code = code


class FrameRejected(Exception):
    """The peer sent a frame the protocol does not allow; the channel must close with ``close``."""

    def __init__(self, close: CloseCode, detail: str = "") -> None:
        self.close = close.because(detail) if detail else close
        super().__init__(self.close.reason)


class Channel(Protocol):
    path: str

    async def recv(self) -> bytes:
        """The next binary frame. Raises ``ChannelClosed`` or ``FrameRejected``."""
        ...

    async def send(self, data: bytes | str | Framed) -> None:
        """Send a frame: binary, text (``str``), or several binary ones framed once (``Framed``)."""
        ...

    async def close(self, close: CloseCode) -> None: ...


def frame_writer(scope: Any) -> FrameWriter | None:
    """The connection's direct frame writer, when the server runs under ``CollabWebSocketProtocol``."""
    writer: FrameWriter | None = scope.get("extensions", {}).get(FRAMES_EXTENSION)
    return writer


class AsgiChannel:
    """A WebSocket connection as ASGI ``receive``/``send``, after the handshake. With a
    ``FrameWriter`` (``frame_writer(scope)``), data frames (binary and text) bypass ASGI and are
    written to the transport directly."""

    __slots__ = ("_frames", "_open", "_receive", "_send", "max_message_size", "path")

    def __init__(
        self,
        receive: Receive,
        send: Send,
        *,
        path: str,
        max_message_size: int,
        frames: FrameWriter | None = None,
    ) -> None:
        self.path = path
        self.max_message_size = max_message_size
        self._receive = receive
        self._send = send
        self._frames = frames
        self._open = True

    async def recv(self) -> bytes:
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.disconnect":
            self._open = False
            raise ChannelClosed(message.get("code", 1000))
        data: bytes | None = message.get("bytes")
        if data is None:
            raise FrameRejected(CLOSE_1003_UNSUPPORTED_DATA)
        if len(data) > self.max_message_size:
            raise FrameRejected(CLOSE_1009_MESSAGE_TOO_BIG, f"{len(data)} > {self.max_message_size} bytes")
        metrics.message_in(data)
        return data

    async def recv_any(self) -> bytes | str:
        """The next frame, text or binary (for the JSON event channel)."""
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            self._open = False
            raise ChannelClosed(message.get("code", 1000))
        data: bytes | str | None = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        if len(data) > self.max_message_size:
            raise FrameRejected(CLOSE_1009_MESSAGE_TOO_BIG, f"{len(data)} > {self.max_message_size} bytes")
        metrics.message_in(data)
        return data

    def send_now(self, data: bytes | str | Framed) -> bool:
        """Write a frame at once, if the transport takes it without waiting. False when it cannot
        (no frame writer, the transport paused, or closed): send it with ``send`` instead."""
        frames = self._frames
        if frames is None or not frames.writable.is_set():
            return False
        if not frames.write(data):
            return False
        metrics.message_out(data)
        return True

    async def send(self, data: bytes | str | Framed) -> None:
        metrics.message_out(data)
        frames = self._frames
        if frames is not None:
            if not frames.writable.is_set():
                await frames.writable.wait()
            if not frames.write(data):
                self._open = False
                raise ChannelClosed(1006)
            return
        try:
            if isinstance(data, str):
                await self._send({"type": "websocket.send", "text": data})
            elif isinstance(data, Framed):
                for message in data.messages:
                    await self._send({"type": "websocket.send", "bytes": message})
            else:
                await self._send({"type": "websocket.send", "bytes": data})
        except OSError as exc:  # uvicorn's ClientDisconnected is an OSError
            self._open = False
            raise ChannelClosed(1006) from exc

    async def close(self, close: CloseCode) -> None:
        if not self._open:
            return
        self._open = False
        if self._frames is not None:
            self._frames.flush()  # the frames written directly go before the close frame
        try:
            await self._send({"type": "websocket.close", "code": close.code, "reason": close.reason})
        except (OSError, RuntimeError) as exc:
            raise ChannelClosed(1006) from exc
