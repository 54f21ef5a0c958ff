"""Document updates through Redis streams: one stream per document, read by every instance that
has the document loaded.

A room loaded here first reads the whole (time-trimmed) stream, so it gets what other instances
have accepted but perhaps not stored yet, then follows it from the last id read, with one
blocking read over all followed documents (woken by this instance's own wake stream when a
document is added). After a Redis outage the reader resumes from there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from redis.typing import KeyT, StreamIdT

from .keys import Keys
from .link import FAILURES, RedisLink, read_streams, stream_entries
from .outbox import Outbox, Wake

log = logging.getLogger("server.broker")

XREAD_BLOCK_MS = 10_000
XREAD_COUNT = 1_000


class DocumentStreams:
    def __init__(self, link: RedisLink, keys: Keys, outbox: Outbox, instance_id: str) -> None:
        self.link = link
        self.keys = keys
        self.outbox = outbox
        self.instance_id = instance_id
        self._me = instance_id.encode()
        self.following: dict[int, bytes] = {}  # document id -> last stream id read
        self._documents: dict[bytes, int] = {}  # stream key -> document id

    async def follow(self, document_id: int) -> list[bytes]:
        """Start reading the document's stream; return the updates other instances put there."""
        stream = self.keys.updates(document_id).encode()
        updates: list[bytes] = []
        last = b"0-0"
        try:
            entries = stream_entries(await self.link.commands.xrange(stream))
        except FAILURES as exc:
            self.link.failed(exc)  # the reader reads the whole stream once Redis is back
        else:
            for entry_id, fields in entries:
                last = entry_id
                if fields.get(b"i") != self._me:  # ours are stored: rooms unload after a flush
                    updates.append(fields[b"u"])
        self.following[document_id] = last
        self._documents[stream] = document_id
        self.outbox.add(Wake())  # the blocking read starts again, with this stream
        return updates

    def unfollow(self, document_id: int) -> None:
        self.following.pop(document_id, None)
        self._documents.pop(self.keys.updates(document_id).encode(), None)

    async def read(self, deliver: Callable[[int, bytes], None]) -> None:
        """The reading task: ``deliver(document id, update)`` for other instances' updates."""
        wake = self.keys.wake(self.instance_id)
        delay = 0.1
        while True:
            streams: dict[KeyT, StreamIdT] = {wake: "$"}
            for document_id, last in self.following.items():
                streams[self.keys.updates(document_id)] = last
            try:
                result = read_streams(
                    await self.link.reader.xread(streams, count=XREAD_COUNT, block=XREAD_BLOCK_MS)
                )
            except FAILURES as exc:
                delay = await self.link.wait_after(exc, delay)
                continue
            delay = 0.1
            self.link.ok()
            for stream, entries in result:
                followed = self._documents.get(stream)
                if followed is None or followed not in self.following:
                    continue
                for entry_id, fields in entries:
                    self.following[followed] = entry_id
                    if fields.get(b"i") != self._me:
                        try:
                            deliver(followed, fields[b"u"])
                        except Exception:
                            log.exception("applying a relayed update to document %s failed", followed)
