"""Instances watching each other: every instance writes a heartbeat (and, through the outbox, the
sequence number up to which its updates are stored). When an instance's heartbeat is older than
``instance_timeout``, one survivor (under a Redis lock) has that instance's stream entries after
its watermark stored, withdraws its users, and forgets it."""

from __future__ import annotations

import asyncio
import logging
import time

from .base import BrokerListener
from .keys import Keys
from .link import FAILURES, RedisLink, byte_strings, stream_entries
from .presence import ClusterPresence

log = logging.getLogger("server.broker")

TAKEOVER_LOCK_SECONDS = 60


class Instances:
    def __init__(
        self, link: RedisLink, keys: Keys, presence: ClusterPresence, instance_id: str, *, timeout: float
    ) -> None:
        self.link = link
        self.keys = keys
        self.presence = presence
        self.instance_id = instance_id
        self.timeout = timeout

    async def run(self, listener: BrokerListener) -> None:
        """The heartbeat task."""
        period = self.timeout / 3
        while True:
            try:
                await self._beat(listener)
            except FAILURES as exc:
                self.link.failed(exc)
            await asyncio.sleep(period)

    async def _beat(self, listener: BrokerListener) -> None:
        now_ms = int(time.time() * 1000)
        redis = self.link.commands
        await redis.zadd(self.keys.instances, {self.instance_id: now_ms})
        self.link.ok()
        dead = byte_strings(
            await redis.zrangebyscore(self.keys.instances, "-inf", now_ms - int(self.timeout * 1000))
        )
        for instance in dead:
            instance_id = instance.decode()
            if instance_id == self.instance_id:
                continue
            lock = self.keys.takeover(instance_id)
            if await redis.set(lock, self.instance_id, nx=True, ex=TAKEOVER_LOCK_SECONDS):
                await self._take_over(instance_id, listener)

    async def _take_over(self, instance_id: str, listener: BrokerListener) -> None:
        """Store what a stopped instance accepted but did not store, and withdraw its users."""
        redis = self.link.commands
        me = instance_id.encode()
        watermark = int(await redis.hget(self.keys.watermarks, instance_id) or 0)
        rows: list[tuple[int, bytes]] = []
        for document in byte_strings(await redis.smembers(self.keys.instance_documents(instance_id))):
            for _, fields in stream_entries(await redis.xrange(self.keys.updates(int(document)))):
                if fields.get(b"i") == me and int(fields[b"s"]) > watermark:
                    rows.append((int(document), fields[b"u"]))
        try:
            await listener.orphaned_updates(rows)
        except Exception as exc:  # noqa: BLE001 - logged; the lock is released and it is retried
            log.error("storing the updates of stopped instance %s failed, will retry: %s", instance_id, exc)
            await redis.delete(self.keys.takeover(instance_id))
            return
        users = await self.presence.withdraw(instance_id, listener)
        await self.forget(instance_id)
        log.warning(
            "instance %s stopped: stored %d of its updates, withdrew %d of its users",
            instance_id,
            len(rows),
            users,
        )

    async def forget(self, instance_id: str) -> None:
        pipe = self.link.commands.pipeline(transaction=False)
        pipe.delete(
            self.keys.instance_documents(instance_id),
            self.keys.instance_presence(instance_id),
            self.keys.wake(instance_id),
        )
        pipe.hdel(self.keys.watermarks, instance_id)
        pipe.zrem(self.keys.instances, instance_id)
        await pipe.execute()
