"""``server.ws_frames.ServerFrames`` behaves as ``websockets.ServerProtocol`` after the handshake:
for any bytes a client sends, cut into reads anywhere, and any sends of the server's in between,
the same frames come out, the same bytes go back (pongs, close frames), the same faults fail the
connection with the same close code and reason, and the same sends are refused (RFC 6455 5-7)."""

from __future__ import annotations

import itertools
import os
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import InvalidState, ProtocolError
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from server.ws_frames import Framed, ServerFrames, binary_frame

CLOSE_CODES = [1000, 1001, 1002, 1003, 1005, 1006, 1007, 1009, 1011, 1012, 1015, 2999, 3000, 4999, 5000]


def client_frame(head1: int, payload: bytes, *, masked: bool = True, width: int = 0) -> bytes:
    """A client frame: ``head1`` (FIN, RSV, opcode) as given, its length in the shortest form or
    in ``width`` bytes (2 or 8), masked unless told not to be."""
    size = len(payload)
    if width == 0 and size < 126:
        length = bytes((size | (0x80 if masked else 0),))
    elif width == 8 or size >= 65536:
        length = bytes((127 | (0x80 if masked else 0),)) + size.to_bytes(8, "big")
    else:
        length = bytes((126 | (0x80 if masked else 0),)) + size.to_bytes(2, "big")
    if not masked:
        return bytes((head1,)) + length + payload
    mask = os.urandom(4)
    return bytes((head1,)) + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes) -> bytes:
    return code.to_bytes(2, "big") + reason


# Sizes around every limit: 125/126 (control frames, the 2-byte length form), 64 and 200 (the
# ``max_size`` values below, alone and summed over fragments).
payloads = st.one_of(
    st.binary(max_size=16),
    st.sampled_from([30, 40, 63, 64, 65, 100, 125, 126, 127, 140, 199, 200, 201]).flatmap(
        lambda size: st.binary(min_size=size, max_size=size)
    ),
)
close_payloads = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=1),
    st.builds(
        close_payload, st.sampled_from(CLOSE_CODES), st.sampled_from([b"", b"bye", b"\xff\xfe", "é".encode()])
    ),
)


# Mostly valid frames (a fault ends the parse, so faults are rare enough for what follows them to
# be reached): fragments, pings and pongs between them, closes, and now and then a fault.
def rare(value: Any, common: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from([common] * 30 + [value])


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    opcode = draw(st.sampled_from([0x0, 0x0, 0x0, 0x1, 0x2, 0x2, 0x8, 0x9, 0x9, 0xA]))
    opcode = draw(rare(draw(st.sampled_from([0x3, 0x7, 0xB, 0xF])), opcode))
    payload = draw(close_payloads if opcode == 0x8 and draw(st.booleans()) else payloads)
    fin = draw(st.booleans()) if opcode in (0x0, 0x1, 0x2) else draw(rare(False, True))
    rsv = draw(rare(draw(st.sampled_from([0x40, 0x20, 0x10])), 0))
    masked = draw(rare(False, True))
    width = draw(st.sampled_from([0] * 8 + [2, 8]))
    return client_frame((0x80 if fin else 0) | rsv | opcode, payload, masked=masked, width=width)


control_payloads = st.one_of(st.binary(max_size=8), st.binary(min_size=124, max_size=127))
reasons = st.sampled_from(["", "done", "é" * 62, "x" * 124])  # a close payload is 2 + the reason
sends = st.one_of(
    st.tuples(st.just("send_binary"), payloads),
    st.tuples(st.just("send_text"), payloads),
    st.tuples(st.just("send_ping"), control_payloads),
    st.tuples(st.just("send_pong"), control_payloads),
    st.tuples(
        st.just("send_close"), st.tuples(st.sampled_from([1000, 1001, 1011, 1012, 4000, 1005, 999]), reasons)
    ),
    st.tuples(st.just("fail"), st.tuples(st.sampled_from([1002, 1006, 1007, 1009, 1011]), reasons)),
)


def outcome(protocol: Any) -> tuple[Any, ...]:
    events = [(frame.opcode, bytes(frame.data), frame.fin) for frame in protocol.events_received()]
    exc = protocol.parser_exc
    return (
        events,
        b"".join(protocol.data_to_send()),
        protocol.close_rcvd,
        protocol.close_sent,
        protocol.state is OPEN,
        (type(exc), str(exc)) if exc is not None else None,
    )


def call(protocol: Any, method: str, argument: Any) -> Any:
    try:
        if method in ("send_close", "fail"):
            code, reason = argument
            getattr(protocol, method)(code, "" if code == 1005 else reason)
        else:
            getattr(protocol, method)(argument)
    except (InvalidState, ProtocolError) as exc:
        return type(exc)
    return None


@settings(max_examples=1000, deadline=None)
@example(  # a close in the middle of a fragmented message
    stream=client_frame(0x01, b"ab") + client_frame(0x88, close_payload(1000, b"")),
    cuts=[],
    interleaved=[],
    max_size=None,
    as_bytearray=False,
)
@example(  # a ping of 126 bytes, in the 2-byte length form
    stream=client_frame(0x89, bytes(126)), cuts=[3], interleaved=[], max_size=None, as_bytearray=False
)
@given(
    stream=st.lists(frames(), max_size=12).map(b"".join),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
    interleaved=st.lists(st.tuples(st.integers(0, 6), sends), max_size=3),
    max_size=st.sampled_from([None, 64, 200]),
    as_bytearray=st.booleans(),
)
def test_frames_are_parsed_and_answered_as_websockets_does(
    stream: bytes,
    cuts: list[int],
    interleaved: list[tuple[int, tuple[str, Any]]],
    max_size: int | None,
    as_bytearray: bool,
) -> None:
    ours = ServerFrames(max_size)
    theirs = ServerProtocol(state=OPEN, max_size=max_size)
    bounds = sorted({0, len(stream), *(cut for cut in cuts if cut < len(stream))})
    reads = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    for index, read in enumerate(reads):
        for at, (method, argument) in interleaved:
            if at == index:
                assert call(ours, method, argument) == call(theirs, method, argument)
                assert outcome(ours) == outcome(theirs)
        if as_bytearray:  # the caller's buffer, reused once read: neither may keep it
            ours_read, theirs_read = bytearray(read), bytearray(read)
            ours.receive_data(ours_read)
            theirs.receive_data(theirs_read)
            ours_read[:] = theirs_read[:] = b"\xff" * len(read)
        else:
            ours.receive_data(read)
            theirs.receive_data(read)
        assert outcome(ours) == outcome(theirs)


def test_a_frame_in_many_reads_comes_out_once_whole() -> None:
    payload = bytes(range(256)) * 300  # 76,800 bytes: the 8-byte length form
    stream = client_frame(0x82, payload) + client_frame(0x89, b"hi")
    frames = ServerFrames(None)
    for start in range(0, len(stream), 1000):
        frames.receive_data(stream[start : start + 1000])
    events = frames.events_received()
    assert [(e.opcode.value, bytes(e.data)) for e in events] == [(0x2, payload), (0x9, b"hi")]
    assert frames.data_to_send() == [binary_frame(b"hi", 0x8A)]  # the pong


def test_a_frame_over_the_limit_fails_as_soon_as_its_header_is_read() -> None:
    frames = ServerFrames(1000)
    frames.receive_data(client_frame(0x82, b"x" * 2000)[:8])  # the header, not the payload
    assert frames.close_sent is not None and frames.close_sent.code == 1009
    assert str(frames.parser_exc) == "frame with 2000 bytes exceeds limit of 1000 bytes"
    frames.receive_data(client_frame(0x82, b"later"))
    assert frames.events_received() == []  # nothing is read after a failure


@given(
    st.lists(st.binary(max_size=300) | st.just(b"x" * 70_000), min_size=1, max_size=12),
    st.data(),
)
@settings(max_examples=200)
def test_framed_without_some_messages_is_them_framed_anew(messages: list[bytes], data: st.DataObject) -> None:
    skip = data.draw(st.sets(st.integers(0, len(messages) - 1), max_size=len(messages) - 1).map(sorted))
    kept = [m for i, m in enumerate(messages) if i not in skip]
    for framed in (Framed(messages), Framed(messages, b"".join(map(binary_frame, messages)))):
        less = framed.without(skip)
        assert less.messages == kept
        assert less.wire == b"".join(map(binary_frame, kept))
        assert less.payload_bytes == sum(map(len, kept))
