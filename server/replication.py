"""Keeping this instance's rooms in step with the same rooms on other instances.

Updates accepted here are published with their write sequence number; updates from elsewhere
are applied and relayed to this instance's clients but not stored again (the instance that
accepted an update stores it). Awareness crosses both ways; the presence of a client on another
instance is dropped when it has not been renewed for ``awareness_timeout`` (Yjs clients renew
every 15 s), so a dead instance's cursors do not stay.

Self-healing: every ``check_interval``, after loading a room and after a Redis outage, each
instance publishes its state vector and a digest of its delete set for every loaded room. An
instance that has something the sender lacks answers with exactly that (``UPDATE``); one that
lacks something answers with its own state (``REPLY``), which is answered with an ``UPDATE`` but
never replied to, so an exchange ends after at most four messages (``STATE``, ``UPDATE``,
``REPLY``, ``UPDATE``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

from .broker import Broker, RoomMessage
from .protocol import ProtocolError, decode_awareness
from .room import Room
from .yjs_format import decode_state_vector

log = logging.getLogger(__name__)

AWARENESS_TIMEOUT = 30.0  # as y-protocols' outdatedTimeout


def _lacks(have: dict[int, int], other: dict[int, int]) -> bool:
    """Does ``have`` lack anything ``other`` has?"""
    return any(have.get(client, 0) < clock for client, clock in other.items())


class Replication:
    def __init__(
        self,
        broker: Broker,
        *,
        check_interval: float = 30.0,
        awareness_timeout: float = AWARENESS_TIMEOUT,
    ) -> None:
        self.broker = broker
        self.check_interval = check_interval
        self.awareness_timeout = awareness_timeout
        self.rooms: dict[int, Room] = {}  # by document id
        self._task: asyncio.Task[None] | None = None
        self.repairs = 0  # updates sent because another instance lacked them

    @property
    def active(self) -> bool:
        return self.broker.relays

    async def __aenter__(self) -> Replication:
        if self.active:
            self._task = asyncio.create_task(self._check_periodically(), name="replication-check")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- rooms of this instance -------------------------------------------------------------------

    async def attach(self, room: Room) -> None:
        """A room was loaded here: apply what other instances have that the database may not,
        follow it, and ask the others for anything else (and for their clients' presence)."""
        self.rooms[room.document_id] = room
        if not self.active:
            return
        room.on_awareness = self._local_awareness
        for update in await self.broker.follow(room.document_id):
            self._apply(room, update)
        self.broker.publish_room_message(room.document_id, RoomMessage.HELLO, self._state(room))

    def detach(self, room: Room) -> None:
        if self.rooms.get(room.document_id) is room:
            del self.rooms[room.document_id]
            self.broker.unfollow(room.document_id)

    def local_update(self, document_id: int, update: bytes, seq: int) -> None:
        self.broker.publish_update(document_id, update, seq)

    def _local_awareness(self, room: Room, update: bytes) -> None:
        self.broker.publish_room_message(room.document_id, RoomMessage.AWARENESS, update)

    # -- from other instances ---------------------------------------------------------------------

    def remote_update(self, document_id: int, update: bytes) -> None:
        """An update another instance accepted, for a document loaded here."""
        room = self.rooms.get(document_id)
        if room is not None:
            self._apply(room, update)

    def _apply(self, room: Room, update: bytes) -> None:
        try:
            room.apply_remote(update)
        except ProtocolError as exc:
            log.error("document %s: dropped an invalid update from another instance: %s", room.key, exc)

    def room_message(self, document_id: int, kind: RoomMessage, payload: bytes) -> None:
        """Awareness or a state-vector exchange message from another instance."""
        room = self.rooms.get(document_id)
        if room is None:
            return
        if kind is RoomMessage.AWARENESS:
            room.apply_remote_awareness(payload, decode_awareness(payload))
        elif kind is RoomMessage.UPDATE:
            self._apply(room, payload)
        else:
            self._compare(room, payload, reply=kind is not RoomMessage.REPLY)
            if kind is RoomMessage.HELLO:
                local = room.local_awareness_update()
                if local is not None:
                    self._local_awareness(room, local)

    def _state(self, room: Room) -> bytes:
        state_vector = room.doc.get_state()
        return _digest(room) + state_vector

    def _compare(self, room: Room, payload: bytes, *, reply: bool) -> None:
        digest, state_vector = payload[:8], payload[8:]
        theirs = decode_state_vector(state_vector)
        ours = decode_state_vector(room.doc.get_state())
        same_deletions = digest == _digest(room)
        if _lacks(theirs, ours) or not same_deletions:
            self.repairs += 1
            self.broker.publish_room_message(
                room.document_id, RoomMessage.UPDATE, room.doc.get_update(state_vector)
            )
        if reply and (_lacks(ours, theirs) or not same_deletions):
            self.broker.publish_room_message(room.document_id, RoomMessage.REPLY, self._state(room))

    # -- periodic ---------------------------------------------------------------------------------

    def check_all(self) -> None:
        """Compare every loaded room with the other instances now."""
        for room in list(self.rooms.values()):
            self.broker.publish_room_message(room.document_id, RoomMessage.STATE, self._state(room))

    async def _check_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                self.check_all()
                cutoff = time.monotonic() - self.awareness_timeout
                for room in list(self.rooms.values()):
                    room.expire_remote_awareness(cutoff)
            except Exception:
                log.exception("comparing rooms with other instances failed")


def _digest(room: Room) -> bytes:
    """A short digest of the room's delete set: the update of nothing beyond our own state."""
    deletions = room.doc.get_update(room.doc.get_state())
    return hashlib.blake2b(deletions, digest_size=8).digest()
