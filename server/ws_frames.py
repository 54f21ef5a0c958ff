"""The frame layer of an accepted WebSocket connection, server side (RFC 6455 sections 5 to 7):
``ServerFrames`` does what uvicorn's WebSocket protocol asks of ``websockets.ServerProtocol`` once
the opening handshake is answered (here the handshake is not its business: see ``websocket``).

``websockets`` parses with a generator per connection reading from a stream reader, and names
each connection with a UUID: about 1.3 KB per idle connection, and a UUID drawn from the OS for
each join. This parser keeps what one read left unparsed (a partial frame, usually nothing) and
the state of a fragmented message. It keeps ``websockets``' rules and answers: the same events
(``websockets.frames.Frame``), the same close codes and reasons for the same faults (1002 for a
protocol error, 1009 for a frame over ``max_size``, 1007 for a close reason that is not UTF-8),
the same frames written back (pongs, the echoed close), the same exceptions for a send in the
wrong state (``InvalidState``); ``tests/unit/test_ws_frames.py`` holds it to that.

Server frames are unmasked, so one message's frame is the same bytes for every receiver:
``binary_frame`` writes one, ``Framed`` holds several framed once for any number of receivers.
"""

from __future__ import annotations

import email.utils
import http
from collections.abc import Callable
from itertools import accumulate

from websockets.datastructures import Headers
from websockets.exceptions import InvalidState, PayloadTooBig, ProtocolError
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import CLOSING, OPEN, State

try:
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask as _apply_mask

apply_mask: Callable[[bytes | bytearray, bytes | bytearray], bytes] = _apply_mask

# Opcodes (RFC 6455 section 5.2) by value; any other value is a protocol error.
_OPCODES = {opcode.value: opcode for opcode in Opcode}
_CONTROL = 0x8  # opcodes from here on are control frames (5.5): final, at most 125 bytes


def binary_frame(payload: bytes, opcode: int = 0x82) -> bytes:
    """An unmasked, final WebSocket frame (RFC 6455 5.2) carrying ``payload``: binary (``0x82``),
    or text (``0x81``, the payload UTF-8)."""
    size = len(payload)
    if size < 126:
        return bytes((opcode, size)) + payload
    if size < 65536:
        return bytes((opcode, 126)) + size.to_bytes(2, "big") + payload
    return bytes((opcode, 127)) + size.to_bytes(8, "big") + payload


class ServerFrames:
    """The part of ``websockets.ServerProtocol``'s API uvicorn's ``WebSocketsSansIOProtocol``
    uses after the handshake: ``receive_data``, ``events_received``, ``data_to_send``,
    ``send_text``/``send_binary``/``send_ping``/``send_pong``/``send_close``, ``fail``,
    ``reject``/``send_response`` (for an answer before the upgrade is accepted) and the
    ``close_rcvd``, ``close_sent``, ``parser_exc`` and ``state`` attributes.

    ``max_size``: the largest message in bytes (a fragmented message counts whole), or None."""

    __slots__ = (
        "_fragmented",
        "_unparsed",
        "close_rcvd",
        "close_sent",
        "events",
        "max_size",
        "parser_exc",
        "state",
        "writes",
    )

    def __init__(self, max_size: int | None) -> None:
        self.max_size = max_size
        self.state: State = OPEN
        self.events: list[Frame] = []
        self.writes: list[bytes] = []
        self.close_rcvd: Close | None = None
        self.close_sent: Close | None = None
        self.parser_exc: Exception | None = None
        # The start of a frame a later read completes (a bytearray, or b"" for none); None once
        # closed or failed: nothing more is read.
        self._unparsed: bytes | bytearray | None = b""
        self._fragmented: int | None = None  # bytes so far of a fragmented message, if one is open

    # -- receiving ------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """Parse ``data`` (what one read brought) into frames: ``events_received`` has them.
        A fault fails the connection (``fail``: a close frame is written, ``parser_exc`` set)
        and everything received afterwards is ignored, as after a close frame. A frame that
        arrives over many reads is collected in one buffer, each read appended once."""
        unparsed = self._unparsed
        if unparsed is None:  # closed or failed: discarding
            return
        if unparsed:
            unparsed += data  # our own bytearray: grows in place
            data = unparsed
        try:
            end = self._parse(data)
        except ProtocolError as exc:
            self._failed(exc, CloseCode.PROTOCOL_ERROR, str(exc))
        except PayloadTooBig as exc:
            exc.set_current_size(self._fragmented)
            self._failed(exc, CloseCode.MESSAGE_TOO_BIG, str(exc))
        except UnicodeDecodeError as exc:
            self._failed(exc, CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
        else:
            if self._unparsed is None:  # a close frame: nothing after it is read
                return
            if end == len(data):
                self._unparsed = b""
            elif isinstance(data, bytearray) and data is unparsed:
                del data[:end]  # from the front of a bytearray: no copy of the rest
                self._unparsed = data
            else:  # the caller's: copied
                self._unparsed = bytearray(data[end:])

    def _parse(self, data: bytes | bytearray) -> int:
        """Parse the whole frames at the start of ``data``; returns where the first incomplete one
        starts. Stops after a close frame."""
        pos, size = 0, len(data)
        while self._unparsed is not None:  # until a close frame
            header = self._header(data, pos, size)
            if header is None:
                break
            head1, opcode, start, length = header
            end = start + 4 + length
            if end > size:
                break
            payload = apply_mask(data[start + 4 : end], data[start : start + 4])
            pos = end
            if head1 & 0x70:
                raise ProtocolError("reserved bits must be 0")  # no extension is negotiated
            fin = bool(head1 & 0x80)
            if opcode >= _CONTROL:
                if length > 125:
                    raise ProtocolError("control frame too long")
                if not fin:
                    raise ProtocolError("fragmented control frame")
            self._received(Frame(opcode, payload, fin))
        return pos

    def _header(self, data: bytes | bytearray, pos: int, size: int) -> tuple[int, Opcode, int, int] | None:
        """The frame header at ``pos`` (5.2): its first byte, opcode, where its mask starts and its
        payload length; None while incomplete. Faults the header shows are raised at once."""
        if size - pos < 2:
            return None
        head1, head2 = data[pos], data[pos + 1]
        opcode = _OPCODES.get(head1 & 0x0F)
        if opcode is None:
            raise ProtocolError("invalid opcode")
        if not head2 & 0x80:
            raise ProtocolError("incorrect masking")  # every client frame is masked (5.3)
        length = head2 & 0x7F
        start = pos + 2
        if length >= 126:
            width = 2 if length == 126 else 8
            if size - start < width:
                return None
            length = int.from_bytes(data[start : start + width], "big")
            start += width
        limit = self.max_size
        if limit is not None:
            if self._fragmented is not None:
                limit -= self._fragmented
            if length > limit:
                raise PayloadTooBig(length, limit)
        return head1, opcode, start, length

    def _received(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if self._fragmented is not None:
                raise ProtocolError("expected a continuation frame")
            if not frame.fin:
                self._fragmented = len(frame.data)
        elif opcode is Opcode.CONT:
            if self._fragmented is None:
                raise ProtocolError("unexpected continuation frame")
            self._fragmented = None if frame.fin else self._fragmented + len(frame.data)
        elif opcode is Opcode.PING:
            self._send(Opcode.PONG, bytes(frame.data))  # 5.5.2: answered with its payload
        elif opcode is Opcode.CLOSE:
            self.close_rcvd = Close.parse(frame.data)
            if self._fragmented is not None:
                raise ProtocolError("incomplete fragmented message")
            if self.state is OPEN:  # 5.5.1: answered with the same payload
                self._send(Opcode.CLOSE, bytes(frame.data))
                self.close_sent = self.close_rcvd
                self.state = CLOSING
            self._unparsed = None  # 1.4: anything received after a close frame is discarded
        self.events.append(frame)

    def _failed(self, exc: Exception, code: CloseCode, reason: str) -> None:
        self.fail(code, reason)
        self.parser_exc = exc

    def events_received(self) -> list[Frame]:
        """The frames parsed since the last call, in order."""
        events, self.events = self.events, []
        return events

    # -- sending --------------------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """The bytes to write since the last call (frames, or an HTTP response)."""
        writes, self.writes = self.writes, []
        return writes

    def _send(self, opcode: Opcode, payload: bytes) -> None:
        if opcode >= _CONTROL and len(payload) > 125:
            raise ProtocolError("control frame too long")  # 5.5: nothing is written
        self.writes.append(binary_frame(payload, 0x80 | opcode))

    def _sending(self, control: bool = False) -> None:
        if not (self.state is OPEN or (control and self.state is CLOSING)):
            raise InvalidState(f"connection is {self.state.name.lower()}")

    def send_text(self, data: bytes) -> None:
        """A text frame (``data`` UTF-8). ``InvalidState`` once closing."""
        self._sending()
        self._send(Opcode.TEXT, data)

    def send_binary(self, data: bytes) -> None:
        """A binary frame. ``InvalidState`` once closing."""
        self._sending()
        self._send(Opcode.BINARY, data)

    def send_ping(self, data: bytes) -> None:
        self._sending(control=True)
        self._send(Opcode.PING, data)

    def send_pong(self, data: bytes) -> None:
        self._sending(control=True)
        self._send(Opcode.PONG, data)

    def send_close(self, code: int | None = None, reason: str = "") -> None:
        """Start the closing handshake (7.1.2): a close frame with ``code`` and ``reason``
        (``ProtocolError`` for a code a close frame may not carry). ``InvalidState`` once closing."""
        self._sending()
        if code is None:
            if reason:
                raise ProtocolError("cannot send a reason without a code")
            close, payload = Close(CloseCode.NO_STATUS_RCVD, ""), b""
        else:
            close = Close(code, reason)
            payload = close.serialize()
        self._send(Opcode.CLOSE, payload)
        self.close_sent = close
        self.state = CLOSING

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (7.1.7): a close frame with ``code`` unless one was sent already
        (or ``code`` is 1006, which is never sent); nothing received afterwards is read."""
        if self.state is OPEN and code != CloseCode.ABNORMAL_CLOSURE:
            close = Close(code, reason)
            self._send(Opcode.CLOSE, close.serialize())
            self.close_sent = close
            self.state = CLOSING
        self._unparsed = None

    # -- an HTTP answer instead of the upgrade --------------------------------------------------

    def reject(self, status: int, text: str) -> Response:
        """An HTTP response refusing the upgrade (as ``websockets.ServerProtocol.reject``)."""
        status = http.HTTPStatus(status)
        body = text.encode()
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Connection", "close"),
                ("Content-Length", str(len(body))),
                ("Content-Type", "text/plain; charset=utf-8"),
            ]
        )
        return Response(status.value, status.phrase, headers, body)

    def send_response(self, response: Response) -> None:
        """Write ``response``; the connection ends with it, nothing more is read."""
        self.writes.append(response.serialize())
        self._unparsed = None


class Framed:
    """Binary messages framed once for any number of receivers: ``wire`` holds their WebSocket
    frames back to back (``binary_frame``; server frames are unmasked, so the bytes are the same
    for every receiver, RFC 6455 5.1), ``messages`` the messages themselves, for a channel that
    frames what it sends, ``payload_bytes`` their total size (counted once, not per receiver).
    ``len()`` is the size of ``wire``. ``without`` gives the same messages less some of them
    (a sender's own, which it is not sent back) from slices of ``wire``, not framed again."""

    __slots__ = ("_starts", "messages", "payload_bytes", "wire")

    def __init__(
        self, messages: list[bytes], wire: bytes | None = None, payload_bytes: int | None = None
    ) -> None:
        self.messages = messages
        self._starts: list[int] | None = None  # where each message's frame starts in ``wire``
        if wire is None:
            frames = list(map(binary_frame, messages))
            wire = b"".join(frames)
            self._starts = list(accumulate(map(len, frames), initial=0))
        self.wire = wire
        self.payload_bytes = sum(map(len, messages)) if payload_bytes is None else payload_bytes

    def __len__(self) -> int:
        return len(self.wire)

    def without(self, skip: list[int]) -> Framed:
        """These messages but those at the indices ``skip`` (ascending, at least one kept): a
        slice of ``wire`` and of ``messages`` per run of kept messages, so the Python steps grow
        with ``len(skip)``, not with the messages kept."""
        starts = self._starts
        if starts is None:
            starts = self._starts = list(accumulate((len(binary_frame(m)) for m in self.messages), initial=0))
        wire = memoryview(self.wire)
        messages = self.messages
        kept_wire: list[memoryview] = []
        kept: list[bytes] = []
        dropped = 0
        at = 0
        for i in skip:
            if i > at:
                kept_wire.append(wire[starts[at] : starts[i]])
                kept += messages[at:i]
            dropped += len(messages[i])
            at = i + 1
        kept_wire.append(wire[starts[at] :])
        kept += messages[at:]
        return Framed(kept, b"".join(kept_wire), self.payload_bytes - dropped)
