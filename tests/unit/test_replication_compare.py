"""``server.replication``: comparing a room with the same room on another instance, and repairing.

Two instances are two ``Replication`` objects, each with a real ``Room`` over a real pycrdt
``Doc`` and a broker that records what it would publish; the test carries each published
message to the other instance by hand, so every step of an exchange can be checked."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

import pytest
from pycrdt import Doc, Text

from server import protocol
from server.broker import Broker, RoomMessage
from server.close_codes import CloseCode
from server.connection import Connection
from server.replication import Replication
from server.room import Room, RoomKey

DOC_ID = 7


class RecordingBroker(Broker):
    """A broker between several instances (``relays``), recording what it publishes."""

    def __init__(self, *, relays: bool = True, followed: list[bytes] | None = None) -> None:
        super().__init__("test")
        self._relays = relays
        self.followed = followed or []
        self.sent: list[tuple[int, RoomMessage, bytes]] = []
        self.follows: list[int] = []
        self.unfollows: list[int] = []

    @property
    def relays(self) -> bool:
        return self._relays

    async def follow(self, document_id: int) -> list[bytes]:
        self.follows.append(document_id)
        return self.followed

    def unfollow(self, document_id: int) -> None:
        self.unfollows.append(document_id)

    def publish_room_message(self, document_id: int, kind: RoomMessage, payload: bytes) -> None:
        self.sent.append((document_id, kind, payload))

    def take(self) -> list[tuple[int, RoomMessage, bytes]]:
        sent, self.sent = self.sent, []
        return sent


@dataclass
class Instance:
    replication: Replication
    broker: RecordingBroker
    room: Room
    broken: list[Room] = field(default_factory=list)

    @property
    def text(self) -> str:
        return str(self.room.doc.get("t", type=Text))

    def kinds(self) -> list[RoomMessage]:
        return [kind for _, kind, _ in self.broker.sent]


def make_room(doc: Doc, broken: list[Room], document_id: int = DOC_ID) -> Room:
    return Room(
        RoomKey("ws-repl", f"doc-{document_id}"),
        document_id,
        doc,
        on_update=lambda *_: None,
        on_broken=broken.append,
        loaded_bytes=len(doc.get_update()),
    )


async def instance(doc: Doc, *, followed: list[bytes] | None = None) -> Instance:
    broker = RecordingBroker(followed=followed)
    replication = Replication(broker)
    broken: list[Room] = []
    room = make_room(doc, broken)
    await replication.attach(room)
    return Instance(replication, broker, room, broken)


def text_doc(content: str, client_id: int) -> Doc:
    doc = Doc(client_id=client_id)
    doc.get("t", type=Text).insert(0, content)
    return doc


def copy_of(doc: Doc, client_id: int) -> Doc:
    copy = Doc(client_id=client_id)
    copy.apply_update(doc.get_update())
    return copy


def state_message(doc: Doc) -> bytes:
    """What ``Replication`` publishes for a room: a digest of its delete set, then its state vector."""
    digest = hashlib.blake2b(doc.get_update(doc.get_state()), digest_size=8).digest()
    return digest + doc.get_state()


def carry(source: Instance, target: Instance) -> list[RoomMessage]:
    """Deliver everything ``source`` published to ``target``; return the kinds carried."""
    kinds = []
    for document_id, kind, payload in source.broker.take():
        target.replication.room_message(document_id, kind, payload)
        kinds.append(kind)
    return kinds


def exchange(first: Instance, second: Instance) -> list[RoomMessage]:
    """``first`` sends its STATE (as its periodic check does); messages then go back and forth
    until nobody has anything to say. Returns every message kind, in order."""
    first.replication.check_all()
    trail: list[RoomMessage] = []
    for _ in range(10):  # an exchange is bounded; more rounds than this is a failure below
        moved = carry(first, second) + carry(second, first)
        if not moved:
            return trail
        trail += moved
    raise AssertionError(f"the exchange did not end: {trail}")


async def pair(a: Doc, b: Doc) -> tuple[Instance, Instance]:
    first, second = await instance(a), await instance(b)
    first.broker.take()  # the HELLO each published on attach
    second.broker.take()
    return first, second


# -- attaching ------------------------------------------------------------------------------------


async def test_attach_applies_followed_updates_and_says_hello_with_its_state() -> None:
    elsewhere = text_doc("from another instance", client_id=2)
    local = Doc(client_id=1)
    inst = await instance(local, followed=[elsewhere.get_update()])
    assert inst.broker.follows == [DOC_ID]
    assert inst.text == "from another instance"
    assert inst.broker.sent == [(DOC_ID, RoomMessage.HELLO, state_message(local))]
    payload = inst.broker.sent[0][2]
    assert payload[8:] == local.get_state()
    assert inst.replication.rooms == {DOC_ID: inst.room}


async def test_single_instance_neither_follows_nor_publishes() -> None:
    broker = RecordingBroker(relays=False)
    replication = Replication(broker)
    room = make_room(text_doc("alone", client_id=1), [])
    await replication.attach(room)
    replication.check_all()
    assert replication.active is False
    assert broker.follows == []
    assert [kind for _, kind, _ in broker.sent] == [RoomMessage.STATE]  # check_all is explicit
    assert replication.rooms == {DOC_ID: room}


async def test_check_all_publishes_each_rooms_state() -> None:
    broker = RecordingBroker()
    replication = Replication(broker)
    docs = {3: text_doc("three", client_id=3), 4: text_doc("four", client_id=4)}
    for document_id, doc in docs.items():
        await replication.attach(make_room(doc, [], document_id))
    broker.take()
    replication.check_all()
    assert sorted(broker.sent) == sorted(
        (document_id, RoomMessage.STATE, state_message(doc)) for document_id, doc in docs.items()
    )


async def test_detach_stops_following_and_ignores_later_messages() -> None:
    inst = await instance(text_doc("x", client_id=1))
    inst.replication.detach(inst.room)
    assert inst.broker.unfollows == [DOC_ID]
    inst.broker.take()
    other = text_doc("other", client_id=2)
    inst.replication.room_message(DOC_ID, RoomMessage.STATE, state_message(other))
    inst.replication.remote_update(DOC_ID, other.get_update())
    assert inst.broker.sent == []
    assert inst.text == "x"


# -- the comparison -------------------------------------------------------------------------------


async def test_equal_documents_exchange_nothing() -> None:
    a = text_doc("same", client_id=1)
    first, second = await pair(a, copy_of(a, client_id=2))
    assert exchange(first, second) == [RoomMessage.STATE]
    assert (first.replication.repairs, second.replication.repairs) == (0, 0)


async def test_the_instance_that_has_more_sends_exactly_what_the_other_lacks() -> None:
    a = text_doc("base", client_id=1)
    b = copy_of(a, client_id=2)
    behind_state = b.get_state()
    a.get("t", type=Text).insert(4, " and more")
    first, second = await pair(a, b)
    second.replication.check_all()  # the one behind asks
    carry(second, first)
    assert first.broker.sent == [(DOC_ID, RoomMessage.UPDATE, a.get_update(behind_state))]  # no REPLY
    assert first.replication.repairs == 1
    carry(first, second)
    assert second.text == "base and more"
    assert second.broker.sent == []  # an UPDATE is not answered


async def test_the_instance_that_lacks_replies_and_is_answered_once() -> None:
    a = text_doc("base", client_id=1)
    b = copy_of(a, client_id=2)
    b.get("t", type=Text).insert(0, ">> ")
    first, second = await pair(a, b)
    # `first` is behind: it receives the STATE of `second` (first.check_all would be the same).
    assert exchange(second, first) == [RoomMessage.STATE, RoomMessage.REPLY, RoomMessage.UPDATE]
    assert first.text == second.text == ">> base"
    assert (first.replication.repairs, second.replication.repairs) == (0, 1)


async def test_diverged_documents_repair_both_ways_and_never_reply_to_a_reply() -> None:
    a = text_doc("base", client_id=1)
    b = copy_of(a, client_id=2)
    a.get("t", type=Text).insert(4, " from a")
    b.get("t", type=Text).insert(0, "from b: ")
    first, second = await pair(a, b)
    assert exchange(first, second) == [
        RoomMessage.STATE,  # first's check
        RoomMessage.UPDATE,  # second has what first lacks
        RoomMessage.REPLY,  # and lacks something itself
        RoomMessage.UPDATE,  # first answers the reply, without replying
    ]
    assert first.text == second.text == "from b: base from a"
    assert first.room.doc.get_state() == second.room.doc.get_state()
    assert exchange(first, second) == [RoomMessage.STATE]  # now equal: quiet


async def test_a_reply_is_never_answered_with_a_reply() -> None:
    a = text_doc("base", client_id=1)
    b = copy_of(a, client_id=2)
    b.get("t", type=Text).insert(0, "only in b ")
    first, _ = await pair(a, b)
    # `first` lacks what b has; b's state arrives as a REPLY: no REPLY back, and nothing to send.
    first.replication.room_message(DOC_ID, RoomMessage.REPLY, state_message(b))
    assert first.broker.sent == []
    first.replication.room_message(DOC_ID, RoomMessage.STATE, state_message(b))
    assert first.kinds() == [RoomMessage.REPLY]  # as a STATE it would have been answered


@pytest.mark.parametrize("deleter_checks", [True, False], ids=["deleter-asks", "other-asks"])
async def test_a_deletion_alone_is_found_by_the_digest_and_repaired(deleter_checks: bool) -> None:
    """Deleting does not move a state vector: only the delete-set digest tells the documents
    apart."""
    a = text_doc("hello world", client_id=1)
    b = copy_of(a, client_id=2)
    del a.get("t", type=Text)[0:6]
    assert a.get_state() == b.get_state()
    first, second = await pair(a, b)
    trail = exchange(first, second) if deleter_checks else exchange(second, first)
    assert first.text == second.text == "world"
    assert second.room.doc.get_update(second.room.doc.get_state()) == a.get_update(a.get_state())
    if deleter_checks:
        # b answers with its (smaller) delete set and asks back; a's answer repairs b.
        assert trail == [RoomMessage.STATE, RoomMessage.UPDATE, RoomMessage.REPLY, RoomMessage.UPDATE]
    else:
        # a sees the digests differ: sends its deletions and its state; b now matches, so is quiet.
        assert trail == [RoomMessage.STATE, RoomMessage.UPDATE, RoomMessage.REPLY]
    assert exchange(first, second) == [RoomMessage.STATE]


async def test_equal_documents_built_in_different_orders_compare_equal() -> None:
    base = text_doc("0123456789", client_id=1)
    updates = [base.get_update()]
    for client_id in range(2, 7):
        doc = copy_of(base, client_id=client_id)
        before = doc.get_state()
        text = doc.get("t", type=Text)
        text.insert(client_id, f"<{client_id}>")
        del text[0:1]
        updates.append(doc.get_update(before))
    forward, backward = Doc(client_id=100), Doc(client_id=101)
    for update in updates:
        forward.apply_update(update)
    backward.apply_update(updates[0])
    for update in reversed(updates[1:]):
        backward.apply_update(update)
    assert str(forward.get("t", type=Text)) == str(backward.get("t", type=Text))
    first, second = await pair(forward, backward)
    assert state_message(forward) == state_message(backward)
    assert exchange(first, second) == [RoomMessage.STATE]


# -- HELLO and updates from elsewhere -------------------------------------------------------------


class SilentChannel:
    path = "/ws/workspaces/ws-repl"

    async def recv(self) -> bytes:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(self, data: bytes | str) -> None:
        pass

    async def close(self, close: CloseCode) -> None:
        pass


async def test_hello_is_answered_with_the_presence_of_local_clients() -> None:
    doc = text_doc("x", client_id=1)
    inst = await instance(doc)
    inst.broker.take()
    conn = Connection(SilentChannel(), max_queue=100)
    inst.room.join(conn)
    update = protocol.awareness_update([(4242, 1, {"user": {"name": "Alice"}})])
    frame = protocol.awareness(update)
    await inst.room.receive(conn, protocol.decode(frame), frame, None)
    inst.broker.take()  # the awareness change itself, published as AWARENESS

    inst.replication.room_message(DOC_ID, RoomMessage.STATE, state_message(doc))
    assert inst.broker.sent == []  # a STATE does not ask for presence
    inst.replication.room_message(DOC_ID, RoomMessage.HELLO, state_message(doc))
    assert [kind for _, kind, _ in inst.broker.sent] == [RoomMessage.AWARENESS]
    entries = protocol.decode_awareness(inst.broker.sent[0][2])
    assert [(e.client_id, e.clock, e.state) for e in entries] == [(4242, 1, {"user": {"name": "Alice"}})]


async def test_remote_updates_apply_to_loaded_rooms_only() -> None:
    inst = await instance(Doc(client_id=1))
    other = text_doc("remote", client_id=2)
    inst.replication.remote_update(DOC_ID + 1, other.get_update())  # not loaded here: ignored
    inst.replication.room_message(DOC_ID + 1, RoomMessage.UPDATE, other.get_update())
    assert inst.text == ""
    inst.replication.remote_update(DOC_ID, other.get_update())
    assert inst.text == "remote"


async def test_an_invalid_update_from_another_instance_is_dropped() -> None:
    inst = await instance(text_doc("intact", client_id=1))
    before = inst.room.doc.get_update()
    inst.replication.remote_update(DOC_ID, b"\x05\x01garbage")
    inst.replication.room_message(DOC_ID, RoomMessage.UPDATE, b"\xff\xff\xff")
    assert inst.room.doc.get_update() == before
    assert inst.text == "intact"
    assert inst.broken == []  # undecodable: refused whole, the room is not reloaded
