"""``server.room.Room``: the updates accepted in one turn of the event loop are relayed at its end,
each as the message its client sent, in the order accepted, never back to their sender, framed
once and written to each receiver in one piece (``server.ws_frames.Framed``)."""

from __future__ import annotations

import asyncio

from pycrdt import Doc, Text

from server import protocol
from server.close_codes import CloseCode
from server.connection import Connection
from server.room import Room, RoomKey
from server.ws_frames import Framed, binary_frame
from server.yjs_format import check_update


class RecordingChannel:
    """A ``Channel`` without a direct frame writer: what the connection's writer sends."""

    path = "/ws/workspaces/ws-relay"

    def __init__(self) -> None:
        self.sent: list[bytes | str | Framed] = []

    async def recv(self) -> bytes:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(self, data: bytes | str | Framed) -> None:
        self.sent.append(data)

    async def close(self, close: CloseCode) -> None:
        pass


def an_update(client_id: int, text: str) -> bytes:
    doc = Doc(client_id=client_id)
    doc.get("t", type=Text).insert(0, text)
    return doc.get_update()


def messages_of(sent: list[bytes | str | Framed]) -> list[bytes]:
    out: list[bytes] = []
    for data in sent:
        assert isinstance(data, Framed), data
        assert data.wire == b"".join(binary_frame(m) for m in data.messages)
        out.extend(data.messages)
    return out


async def joined(room: Room) -> tuple[Connection, RecordingChannel]:
    channel = RecordingChannel()
    conn = Connection(channel, max_queue=100)
    room.join(conn)  # the server's sync step 1 goes out first
    await until_written(channel)
    assert channel.sent == [protocol.sync_step1(room.doc.get_state())]
    channel.sent.clear()
    return conn, channel


def a_room() -> Room:
    """A room that relays every update at once (no storage to wait for)."""
    return Room(
        RoomKey("ws-relay", "doc"),
        1,
        Doc(),
        on_update=lambda _doc, _update, relay: relay(),
        on_broken=lambda _room: None,
        loaded_bytes=0,
    )


async def until_written(*channels: RecordingChannel) -> None:
    for _ in range(10):  # the relay runs at the end of the turn, the writers after it
        await asyncio.sleep(0)
        if all(channel.sent for channel in channels):
            return


async def test_one_turn_of_updates_reaches_every_other_connection_in_order_without_echo() -> None:
    room = a_room()
    (a, a_channel), (b, b_channel), (_, c_channel) = [await joined(room) for _ in range(3)]
    from_a, from_b, from_server = an_update(11, "a"), an_update(12, "b"), an_update(13, "s")
    frame_a = protocol.sync_update(from_a)
    frame_b = protocol.sync_update(from_b)

    # Accepted in one turn: a's, b's, then one without a connection (REST, another instance).
    await room.apply_update(from_a, check_update(from_a), origin=a, frame=frame_a)
    await room.apply_update(from_b, check_update(from_b), origin=b, frame=frame_b)
    await room.apply_update(from_server, check_update(from_server))
    assert a_channel.sent == b_channel.sent == c_channel.sent == []  # relayed at the end of the turn
    await until_written(a_channel, b_channel, c_channel)

    expected_from_server = protocol.sync_update(from_server)
    assert messages_of(c_channel.sent) == [frame_a, frame_b, expected_from_server]
    assert messages_of(a_channel.sent) == [frame_b, expected_from_server]
    assert messages_of(b_channel.sent) == [frame_a, expected_from_server]
    assert len(c_channel.sent) == len(a_channel.sent) == len(b_channel.sent) == 1  # one write each
    assert str(room.doc.get("t", type=Text)) != ""  # and the document holds all three


async def test_a_sender_of_several_updates_in_a_turn_gets_everyone_elses_in_order() -> None:
    room = a_room()
    (a, a_channel), (b, b_channel), (_, c_channel) = [await joined(room) for _ in range(3)]
    # a, a, b, server, a, b, a: runs of a sender's own at the start, in the middle and at the end.
    order = [a, a, b, None, a, b, a]
    frames = []
    for n, origin in enumerate(order):
        update = an_update(30 + n, f"u{n}")
        frame = protocol.sync_update(update)
        frames.append(frame)
        await room.apply_update(update, check_update(update), origin=origin, frame=frame if origin else None)
    await until_written(a_channel, b_channel, c_channel)

    assert messages_of(c_channel.sent) == frames
    assert messages_of(a_channel.sent) == [f for f, o in zip(frames, order, strict=True) if o is not a]
    assert messages_of(b_channel.sent) == [f for f, o in zip(frames, order, strict=True) if o is not b]
    for channel in (a_channel, b_channel, c_channel):
        (sent,) = channel.sent  # one write each
        assert isinstance(sent, Framed) and sent.payload_bytes == sum(map(len, sent.messages))


async def test_a_lone_update_is_relayed_as_its_client_sent_it() -> None:
    room = a_room()
    (a, a_channel), (_, b_channel), (_, c_channel) = [await joined(room) for _ in range(3)]
    update = an_update(21, "x")
    frame = protocol.sync_update(update)
    await room.apply_update(update, check_update(update), origin=a, frame=frame)
    await until_written(b_channel, c_channel)
    assert messages_of(b_channel.sent) == messages_of(c_channel.sent) == [frame]
    assert b_channel.sent[0] is c_channel.sent[0]  # framed once for both
    assert a_channel.sent == []


async def test_each_joiner_gets_the_state_vector_the_document_has_when_it_joins() -> None:
    room = a_room()
    _, first = await joined(room)
    before = protocol.sync_step1(room.doc.get_state())
    room.apply_remote(an_update(7, "x"))
    await until_written(first)  # relayed to the first: the update is in the document
    await joined(room)  # asserts the sync step 1 of the document as it is now
    assert protocol.sync_step1(room.doc.get_state()) != before
    await joined(room)
