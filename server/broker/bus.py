"""Pub/sub: awareness and the state-vector exchange on a channel per followed document, events
of the event channel on one channel, cluster commands on another. Every message carries the
sending instance, and an instance skips its own."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from .base import BrokerListener, RoomMessage
from .keys import Keys
from .link import FAILURES, RedisLink
from .outbox import Outbox, Publish

log = logging.getLogger("server.broker")

PUBSUB_PING = 10.0  # seconds of pub/sub silence before a ping (a dead connection shows up)


class Bus:
    def __init__(self, link: RedisLink, keys: Keys, outbox: Outbox, instance_id: str) -> None:
        self.link = link
        self.keys = keys
        self.outbox = outbox
        self.instance_id = instance_id
        self._me = instance_id.encode()
        self._documents: dict[bytes, int] = {}  # room channel -> document id
        self._pubsub: Any = None

    # -- sending ----------------------------------------------------------------------------------

    def publish_room_message(self, document_id: int, kind: RoomMessage, payload: bytes) -> None:
        message = bytes((kind, len(self._me))) + self._me + payload
        self.outbox.add(Publish(self.keys.room(document_id), message))

    def publish_event(self, topic: str, event_id: int, text: str) -> None:
        message = json.dumps({"i": self.instance_id, "t": topic, "n": event_id, "x": text})
        self.outbox.add(Publish(self.keys.events, message))

    def publish_command(self, payload: dict[str, Any]) -> None:
        self.outbox.add(Publish(self.keys.commands, json.dumps({"i": self.instance_id, "c": payload})))

    # -- the rooms listened to --------------------------------------------------------------------

    async def watch(self, document_id: int) -> None:
        channel = self.keys.room(document_id).encode()
        self._documents[channel] = document_id
        if self._pubsub is not None:
            try:
                await self._pubsub.subscribe(channel)
            except FAILURES as exc:
                self.link.failed(exc)  # resubscribed with the rest on reconnect

    def unwatch(self, document_id: int) -> None:
        channel = self.keys.room(document_id).encode()
        self._documents.pop(channel, None)
        if self._pubsub is not None:
            self.link.spawn(self._unsubscribe(channel), name="broker-unsubscribe")

    async def _unsubscribe(self, channel: bytes) -> None:
        pubsub = self._pubsub
        if pubsub is None:  # the connection was lost meanwhile: a new one subscribes afresh
            return
        with contextlib.suppress(*FAILURES):
            await pubsub.unsubscribe(channel)

    # -- receiving --------------------------------------------------------------------------------

    async def listen(self, listener: BrokerListener) -> None:
        """The listening task. After each reconnection, ``listener.reconnected()``: messages sent
        meanwhile are lost."""
        delay = 0.1
        first = True
        while True:
            pubsub = self.link.reader.pubsub(ignore_subscribe_messages=True)
            try:
                channels = list(self._documents)
                await pubsub.subscribe(self.keys.events, self.keys.commands, *channels)
                self._pubsub = pubsub
                # Rooms loaded while we subscribed did not find a pub/sub to subscribe with.
                late = [channel for channel in self._documents if channel not in channels]
                if late:
                    await pubsub.subscribe(*late)
                self.link.ok()
                delay = 0.1
                if not first:
                    listener.reconnected()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=PUBSUB_PING)
                    if message is None:
                        await pubsub.ping()
                    elif message["type"] == "message":
                        self._dispatch(listener, message["channel"], message["data"])
            except FAILURES as exc:
                failure = exc  # the loop above only ends this way
            finally:
                self._pubsub = None
                await pubsub.aclose()
            first = False
            delay = await self.link.wait_after(failure, delay)

    def _dispatch(self, listener: BrokerListener, channel: bytes, data: bytes) -> None:
        try:
            if channel == self.keys.events.encode():
                event = json.loads(data)
                if event["i"] != self.instance_id:
                    listener.remote_event(event["t"], int(event["n"]), event["x"])
            elif channel == self.keys.commands.encode():
                command = json.loads(data)
                if command["i"] != self.instance_id:
                    listener.command(command["c"])
            else:
                document_id = self._documents.get(channel)
                if document_id is None or len(data) < 2:
                    return
                size = data[1]
                if data[2 : 2 + size] != self._me:
                    listener.room_message(document_id, RoomMessage(data[0]), data[2 + size :])
        except Exception:
            log.exception("handling a message on %r failed", channel)
