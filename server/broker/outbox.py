"""Everything this instance sends to Redis, in order, from one task, pipelined.

Sending never waits for Redis and never fails: while Redis is away a batch is dropped, not
retried (the state-vector exchange repairs documents once Redis is back, and events are in the
event log for a resume).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from redis.typing import EncodableT, FieldT

from .keys import Keys
from .link import FAILURES, RedisLink


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """An update accepted here, for the document's stream (``seq``: its write sequence number)."""

    document_id: int
    update: bytes
    seq: int


@dataclass(frozen=True, slots=True)
class Publish:
    """A pub/sub message."""

    channel: str
    payload: bytes | str


@dataclass(frozen=True, slots=True)
class Wake:
    """An entry on this instance's own wake stream: interrupts its blocking stream read."""


Item = StreamAppend | Publish | Wake


class Outbox:
    """Queues items and sends each batch in one pipeline, with the stored watermark.

    Arguments:
        link: the Redis connections.
        keys: where things go.
        instance_id: tags every stream entry (instances skip their own).
        stream_retention: seconds of updates kept in each document's stream.
    """

    def __init__(self, link: RedisLink, keys: Keys, instance_id: str, *, stream_retention: float) -> None:
        self.link = link
        self.keys = keys
        self.instance_id = instance_id
        self._me = instance_id.encode()
        self._trim_ms = int(stream_retention * 1000)
        self._items: list[Item] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._published_documents: set[int] = set()
        self.last_seq = 0  # the newest update accepted here
        self.watermark = 0  # every update up to this one is stored
        self._watermark_sent = 0

    def add(self, item: Item) -> None:
        if isinstance(item, StreamAppend):
            self.last_seq = item.seq
        self._items.append(item)
        self._idle.clear()
        self._ready.set()

    def stored(self, seq: int) -> None:
        self.watermark = seq
        self._idle.clear()
        self._ready.set()

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until everything added so far is sent (or dropped)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            items, self._items = self._items, []
            await self._send(items)
            if not self._items:
                self._idle.set()

    async def _send(self, items: list[Item]) -> None:
        watermark = self.watermark
        pipe = self.link.commands.pipeline(transaction=False)
        new_documents: set[int] = set()
        min_id = f"{int(time.time() * 1000) - self._trim_ms}-0"
        for item in items:
            if isinstance(item, StreamAppend):
                fields: dict[FieldT, EncodableT] = {"i": self._me, "s": item.seq, "u": item.update}
                pipe.xadd(self.keys.updates(item.document_id), fields, minid=min_id, approximate=True)
                if item.document_id not in self._published_documents:
                    new_documents.add(item.document_id)
            elif isinstance(item, Publish):
                pipe.publish(item.channel, item.payload)
            else:
                pipe.xadd(self.keys.wake(self.instance_id), {"w": 1}, maxlen=1, approximate=False)
        if new_documents:
            pipe.sadd(self.keys.instance_documents(self.instance_id), *new_documents)
        if watermark != self._watermark_sent:
            pipe.hset(self.keys.watermarks, self.instance_id, watermark)
        if len(pipe) == 0:
            return
        try:
            await pipe.execute()
        except FAILURES as exc:
            self.link.failed(exc)
        else:
            self.link.ok()
            self._published_documents |= new_documents
            self._watermark_sent = watermark
