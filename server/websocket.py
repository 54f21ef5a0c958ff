"""The WebSocket protocol the server runs under uvicorn: uvicorn's ``websockets-sansio`` protocol, plus
a direct path for data frames.

Sending a frame through ASGI costs a message dict, a coroutine, the ``websockets`` frame machinery
and its output buffer, for every frame and every receiver. Server frames are unmasked, so a data
frame (binary, or text: the JSON event channel's messages) is a two-to-ten-byte header and the
payload: ``FrameWriter`` (offered to the application in ``scope["extensions"]["collab.frames"]``)
writes it to the transport at once. Everything else (handshake, pings, close) goes the ordinary
way, through the same transport, in order.

Received frames are queued for the application as uvicorn does, but reading from the socket pauses
only when ``READ_QUEUE_FRAMES`` frames wait or a large one (``READ_QUEUE_LARGE`` bytes) arrives, not
after every frame (each pause and resume is a system call).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

FRAMES_EXTENSION = "collab.frames"
READ_QUEUE_FRAMES = 32
READ_QUEUE_LARGE = 64 * 1024  # so a paused application holds at most 2 MiB of small frames, or one large


def binary_frame(payload: bytes, opcode: int = 0x82) -> bytes:
    """An unmasked, final WebSocket frame (RFC 6455 5.2) carrying ``payload``: binary (``0x82``),
    or text (``0x81``, the payload UTF-8)."""
    size = len(payload)
    if size < 126:
        return bytes((opcode, size)) + payload
    if size < 65536:
        return bytes((opcode, 126)) + size.to_bytes(2, "big") + payload
    return bytes((opcode, 127)) + size.to_bytes(8, "big") + payload


def text_frame(text: str) -> bytes:
    """An unmasked, final text frame carrying ``text`` (UTF-8, RFC 6455 5.6)."""
    return binary_frame(text.encode(), 0x81)


class FrameWriter:
    """Writes data frames (binary, or text for a ``str``) of one accepted WebSocket connection to
    its transport. The frames written during one turn of the event loop go out in one transport
    write at the end of that turn (``flush``): one system call for a whole batch of events or
    updates to this connection, not one per frame."""

    __slots__ = ("_loop", "_pending", "_protocol", "writable")

    def __init__(self, protocol: CollabWebSocketProtocol) -> None:
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] | None = None
        self.writable: asyncio.Event = protocol.writable  # cleared while the transport is paused

    def write(self, payload: bytes | str) -> bool:
        """Write ``payload`` as one frame (binary; text for a ``str``), at the end of this turn of
        the loop. False when the connection cannot send any more (closed, closing, or not
        accepted yet); nothing is written then."""
        protocol = self._protocol
        if (
            protocol.disconnected
            or protocol.close_sent
            or not protocol.handshake_complete
            or protocol.initial_response is not None
            or protocol.transport.is_closing()
        ):
            return False
        frame = text_frame(payload) if isinstance(payload, str) else binary_frame(payload)
        if self._pending is None:
            self._pending = [frame]
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(frame)
        return True

    def flush(self) -> None:
        """Write the frames of this turn now (before anything else is sent the ordinary way, such
        as a close frame, so that nothing overtakes them)."""
        pending, self._pending = self._pending, None
        if pending and not self._protocol.transport.is_closing():
            self._protocol.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))


class CollabWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with ``FrameWriter`` and batched read pauses."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][FRAMES_EXTENSION] = FrameWriter(self)

    def send_receive_event_to_app(self) -> None:
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # the application is past its close: the peer's close reply is awaited
        if self.curr_msg_data_type == "text":
            try:
                self.queue.put_nowait({"type": "websocket.receive", "text": data.decode()})
            except UnicodeDecodeError:
                self.logger.exception("Invalid UTF-8 sequence received from client.")
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused and (
            self.queue.qsize() >= READ_QUEUE_FRAMES or len(data) >= READ_QUEUE_LARGE
        ):
            self.read_paused = True
            self.transport.pause_reading()
