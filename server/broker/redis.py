"""RedisBroker: several instances sharing one PostgreSQL database and one Redis.

Composed of one part per concern, all under ``REDIS_PREFIX`` (``keys.Keys``):
- ``streams.DocumentStreams``: document updates, one Redis stream per document, with catch-up;
- ``bus.Bus``: pub/sub for awareness and the state-vector exchange, events and cluster commands;
- ``presence.ClusterPresence``: who is in each workspace on any instance;
- ``instances.Instances``: heartbeats, and the takeover of a stopped instance's unstored updates;
- ``outbox.Outbox`` sends everything, in order, from one task; ``link.RedisLink`` holds the
  connections and whether Redis answers.

Publishing never waits for Redis and never fails: while Redis is away, each instance goes on
serving its own clients, and the state-vector exchange repairs what was not relayed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .base import Broker, RoomMessage
from .bus import Bus
from .instances import Instances
from .keys import Keys
from .link import FAILURES, RedisLink
from .outbox import Outbox, StreamAppend
from .presence import ClusterPresence
from .streams import DocumentStreams

log = logging.getLogger("server.broker")

DRAIN_SECONDS = 2.0  # at shutdown, how long what is queued for Redis may take to go out
HEALTH_TIMEOUT = 2.0


class RedisBroker(Broker):
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "collab",
        instance_timeout: float = 10.0,
        stream_retention: float = 60.0,
        instance_id: str | None = None,
    ) -> None:
        super().__init__(instance_id)
        keys = Keys(prefix)
        self.link = RedisLink(url, on_restored=self._restored)
        self.outbox = Outbox(self.link, keys, self.instance_id, stream_retention=stream_retention)
        self.streams = DocumentStreams(self.link, keys, self.outbox, self.instance_id)
        self.bus = Bus(self.link, keys, self.outbox, self.instance_id)
        self.presence = ClusterPresence(self.link, keys, self.instance_id)
        self.instances = Instances(self.link, keys, self.presence, self.instance_id, timeout=instance_timeout)

    async def _start(self) -> None:
        try:
            await self.link.commands.ping()
        except FAILURES as exc:
            # Start anyway: the instance serves its own clients and joins when Redis answers.
            self.link.failed(exc)
        listener = self.listener
        self.link.spawn(self.outbox.run(), name="broker-outbox")
        self.link.spawn(self.streams.read(listener.remote_update), name="broker-streams")
        self.link.spawn(self.bus.listen(listener), name="broker-pubsub")
        self.link.spawn(self.presence.run(listener), name="broker-presence")
        self.link.spawn(self.instances.run(listener), name="broker-heartbeat")

    async def _stop(self) -> None:
        await self.outbox.drain(DRAIN_SECONDS)
        await self.link.stop_tasks()
        if self.outbox.watermark >= self.outbox.last_seq and not self.presence.users:
            # Everything accepted here is stored and nobody is left: leave the cluster now
            # instead of waiting for the others to notice. Otherwise they take over.
            try:
                await self.instances.forget(self.instance_id)
            except FAILURES as exc:
                log.warning("could not leave the cluster cleanly: %s", exc)
        await self.link.close()

    def _restored(self) -> None:
        self.presence.restate()

    @property
    def connected(self) -> bool:
        return self.link.up

    async def health(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self.link.commands.ping(), HEALTH_TIMEOUT)
        except (*FAILURES, TimeoutError) as exc:
            self.link.failed(exc)
            return {"status": "down", "instance": self.instance_id, "error": self.link.last_error}
        latency = round((time.perf_counter() - started) * 1000, 2)
        return {"status": "ok", "instance": self.instance_id, "latency_ms": latency}

    def status(self) -> dict[str, Any]:
        status = super().status()
        status.update(
            followed_documents=len(self.streams.following),
            last_error=None if self.link.up else self.link.last_error,
        )
        return status

    # -- documents --------------------------------------------------------------------------------

    @property
    def relays(self) -> bool:
        return True

    async def follow(self, document_id: int) -> list[bytes]:
        updates = await self.streams.follow(document_id)
        await self.bus.watch(document_id)
        return updates

    def unfollow(self, document_id: int) -> None:
        self.streams.unfollow(document_id)
        self.bus.unwatch(document_id)

    def publish_update(self, document_id: int, update: bytes, seq: int) -> None:
        self.outbox.add(StreamAppend(document_id, update, seq))

    def publish_room_message(self, document_id: int, kind: RoomMessage, payload: bytes) -> None:
        self.bus.publish_room_message(document_id, kind, payload)

    def note_stored(self, seq: int) -> None:
        self.outbox.stored(seq)

    # -- events and cluster commands --------------------------------------------------------------

    def publish_event(self, topic: str, event_id: int, text: str) -> None:
        self.bus.publish_event(topic, event_id, text)

    def publish_command(self, payload: dict[str, Any]) -> None:
        self.bus.publish_command(payload)

    # -- presence ---------------------------------------------------------------------------------

    def set_present(self, workspace_id: str, user_id: str, name: str, present: bool) -> None:
        self.presence.set_present(workspace_id, user_id, name, present)

    async def online(self, workspace_id: str) -> set[str] | None:
        return await self.presence.online(workspace_id)

    async def drain_presence(self, timeout: float = 2.0) -> None:
        await self.presence.drain(timeout)
