"""The y-websocket codec: strict decoding, and frames that pycrdt's own decoder reads back."""

from __future__ import annotations

import pytest
from pycrdt import Doc, Text, create_sync_message, create_update_message, handle_sync_message

from server import protocol
from server.protocol import MessageType, ProtocolError, SyncType


def test_decodes_what_pycrdt_encodes() -> None:
    doc = Doc()
    doc.get("t", type=Text).insert(0, "hi")
    step1 = protocol.decode(create_sync_message(doc))
    assert (step1.type, step1.sync_type) == (MessageType.SYNC, SyncType.STEP1)
    assert step1.payload == doc.get_state()
    update = protocol.decode(create_update_message(doc.get_update()))
    assert update.sync_type is SyncType.UPDATE and update.payload == doc.get_update()


def test_encoded_frames_apply_in_pycrdt() -> None:
    source = Doc()
    source.get("t", type=Text).insert(0, "copied")
    target = Doc()
    for frame in (protocol.sync_step2(source.get_update()), protocol.sync_update(source.get_update())):
        handle_sync_message(frame[1:], target)
    assert str(target.get("t", type=Text)) == "copied"
    reply = handle_sync_message(protocol.sync_step1(target.get_state())[1:], source)
    assert reply is not None and reply[:2] == bytes((MessageType.SYNC, SyncType.STEP2))


def test_awareness_round_trip() -> None:
    entries = protocol.decode_awareness(b"\x02\x05\x01\x02{}\x06\x03\x04null")
    assert [(e.client_id, e.clock, e.state) for e in entries] == [(5, 1, {}), (6, 3, None)]


@pytest.mark.parametrize(
    "frame",
    [b"", b"\x00", b"\x00\x00", b"\x00\x01\x05ab", b"\x04", b"\x01\x01", b"\x00\x02\x00\x00", b"\x80" * 9],
)
def test_rejects_malformed_frames(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode(frame)


@pytest.mark.parametrize(
    "update", [b"\x01\x05\x01\x02[]", b"\x01\x05\x01\x02{x", b"\x02\x05\x01\x02{}", b"\x01"]
)
def test_rejects_malformed_awareness(update: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode_awareness(update)


def test_keepalive_is_an_empty_awareness_update() -> None:
    message = protocol.decode(protocol.KEEPALIVE)
    assert message.type is MessageType.AWARENESS
    assert protocol.decode_awareness(message.payload) == []
