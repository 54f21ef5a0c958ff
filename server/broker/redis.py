"""RedisBroker: several instances sharing one PostgreSQL database and one Redis.

- Document updates go to a Redis stream per document, tagged with the publishing instance and
  its write sequence number. A room loaded here first reads the whole (time-trimmed) stream, so
  it gets what other instances have accepted but perhaps not stored yet, then follows it from
  the last id read; after a Redis outage the reader resumes from there.
- Awareness and the state-vector exchange travel on a pub/sub channel per document; events of
  the event channel and access changes on one pub/sub channel.
- Presence is one hash per workspace counting the instances where a user is connected, kept
  with one hash per instance, so the survivors can subtract a dead instance's users.
- Every instance writes a heartbeat and the sequence number up to which its updates are stored.
  When an instance's heartbeat is older than ``instance_timeout``, one survivor (under a lock)
  stores that instance's stream entries after its watermark and withdraws its users.

Publishing never waits for Redis and never fails: while Redis is away, each instance goes on
serving its own clients, and the state-vector exchange repairs what was not relayed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from crdt_store import Store, StoreError

from .base import Broker, RoomMessage
from .keys import Keys

log = logging.getLogger(__name__)

_FAILURES = (RedisError, OSError)
MAX_BACKOFF = 2.0
XREAD_BLOCK_MS = 10_000
PUBSUB_PING = 10.0  # seconds of pub/sub silence before a ping (a dead connection shows up)
READER_TIMEOUT = 20.0  # longer than XREAD_BLOCK_MS and PUBSUB_PING
XREAD_COUNT = 1_000
TAKEOVER_LOCK_SECONDS = 60

# KEYS: instance presence hash, workspace presence hash. ARGV: field, user id, 1|0, name.
# Idempotent: returns -1 when this instance's contribution does not change, else the number of
# instances where the user is now connected.
_SET_PRESENT = """
local had = redis.call('HEXISTS', KEYS[1], ARGV[1])
local want = tonumber(ARGV[3])
if had == want then return -1 end
if want == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], want == 1 and 1 or -1)
if n <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  n = 0
end
return n
"""


def _presence_field(workspace_id: str, user_id: str) -> str:
    return f"{workspace_id}\x00{user_id}"


class RedisBroker(Broker):
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        store: Store,
        prefix: str = "collab",
        instance_timeout: float = 10.0,
        stream_retention: float = 60.0,
        instance_id: str | None = None,
    ) -> None:
        super().__init__(instance_id)
        self.keys = Keys(prefix)
        self.store = store
        self.instance_timeout = instance_timeout
        self.stream_retention = stream_retention
        self._me = self.instance_id.encode()
        # Commands and publishing; the stream reader and pub/sub get their own connections (no
        # silent retries there: a lost connection must be seen, to catch up after it).
        self._redis = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self._reader = Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=READER_TIMEOUT, retry=Retry(NoBackoff(), 0)
        )
        self._set_present = self._redis.register_script(_SET_PRESENT)
        self._up = True
        self._last_error: str | None = None
        # Documents followed here: document id -> last stream id read.
        self._following: dict[int, bytes] = {}
        self._stream_documents: dict[bytes, int] = {}
        self._channel_documents: dict[bytes, int] = {}
        self._pubsub: Any = None
        # Outgoing, sent by one task in order.
        self._out: list[tuple[str, Any, Any, Any]] = []
        self._out_ready = asyncio.Event()
        self._published_documents: set[int] = set()
        self._last_seq = 0
        self._watermark = 0
        self._watermark_sent = 0
        # Presence: what this instance has, and what Redis has not been told yet.
        self._present: dict[tuple[str, str], str] = {}
        self._presence_dirty: dict[tuple[str, str], tuple[str, bool]] = {}
        self._presence_ready = asyncio.Event()
        self._presence_idle = asyncio.Event()
        self._presence_idle.set()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> RedisBroker:
        try:
            await self._redis.ping()
        except _FAILURES as exc:
            # Start anyway: the instance serves its own clients and joins when Redis answers.
            self._failed(exc)
        for name, run in (
            ("broker-publish", self._publish),
            ("broker-streams", self._read_streams),
            ("broker-pubsub", self._listen),
            ("broker-presence", self._sync_presence),
            ("broker-heartbeat", self._heartbeat),
        ):
            self._tasks.append(asyncio.create_task(run(), name=name))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await asyncio.wait_for(self._drain_out(), timeout=2)
        except TimeoutError:
            pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._watermark >= self._last_seq and not self._present:
            # Everything accepted here is stored and nobody is left: leave the cluster now
            # instead of waiting for the others to notice. Otherwise they take over.
            try:
                await self._forget_instance(self.instance_id)
            except _FAILURES as exc:
                log.warning("could not leave the cluster cleanly: %s", exc)
        if self._pubsub is not None:
            await self._pubsub.aclose()
        await self._reader.aclose()
        await self._redis.aclose()

    # -- connection state -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._up

    async def ping(self) -> None:
        await self._redis.ping()

    def _ok(self) -> None:
        if not self._up:
            self._up = True
            log.warning("Redis is reachable again: catching up with the other instances")
            self._presence_resync()

    def _failed(self, exc: BaseException) -> None:
        self._last_error = f"{exc.__class__.__name__}: {exc}"
        if self._up:
            self._up = False
            log.error("Redis is unreachable, serving this instance's clients alone: %s", self._last_error)

    async def _wait_after(self, exc: BaseException, delay: float) -> float:
        """Note a failure, wait ``delay`` seconds, and return the next (doubled, bounded) delay."""
        self._failed(exc)
        await asyncio.sleep(delay)
        return min(delay * 2, MAX_BACKOFF)

    def status(self) -> dict[str, Any]:
        status = super().status()
        status.update(
            followed_documents=len(self._following), last_error=None if self._up else self._last_error
        )
        return status

    # -- documents --------------------------------------------------------------------------------

    async def follow(self, document_id: int) -> list[bytes]:
        stream = self.keys.updates(document_id).encode()
        channel = self.keys.room(document_id).encode()
        updates: list[bytes] = []
        last = b"0-0"
        try:
            entries = await self._redis.xrange(stream)
        except _FAILURES as exc:
            self._failed(exc)  # read the whole stream once Redis is back
        else:
            for entry_id, fields in entries:
                last = entry_id
                if fields.get(b"i") != self._me:  # ours are stored: rooms unload after a flush
                    updates.append(fields[b"u"])
        self._following[document_id] = last
        self._stream_documents[stream] = document_id
        self._channel_documents[channel] = document_id
        if self._pubsub is not None:
            try:
                await self._pubsub.subscribe(channel)
            except _FAILURES as exc:
                self._failed(exc)  # resubscribed with the rest on reconnect
        self._wake_reader()
        return updates

    def unfollow(self, document_id: int) -> None:
        self._following.pop(document_id, None)
        self._stream_documents.pop(self.keys.updates(document_id).encode(), None)
        channel = self.keys.room(document_id).encode()
        self._channel_documents.pop(channel, None)
        if self._pubsub is not None:
            self._spawn(self._unsubscribe(channel))

    async def _unsubscribe(self, channel: bytes) -> None:
        try:
            await self._pubsub.unsubscribe(channel)
        except _FAILURES:
            pass

    def publish_update(self, document_id: int, update: bytes, seq: int) -> None:
        self._last_seq = seq
        self._send("update", document_id, update, seq)

    def publish_room_message(self, document_id: int, kind: RoomMessage, payload: bytes) -> None:
        message = bytes((kind, len(self._me))) + self._me + payload
        self._send("publish", self.keys.room(document_id), message, None)

    def stored(self, seq: int) -> None:
        self._watermark = seq
        self._out_ready.set()

    # -- events and cluster-wide changes ----------------------------------------------------------

    def publish_event(self, topic: str, event_id: int, text: str) -> None:
        message = json.dumps({"i": self.instance_id, "t": topic, "n": event_id, "x": text})
        self._send("publish", self.keys.events, message, None)

    def publish_control(self, operation: str, arguments: dict[str, Any]) -> None:
        message = json.dumps({"i": self.instance_id, "o": operation, "a": arguments})
        self._send("publish", self.keys.events, message, None)

    # -- presence ---------------------------------------------------------------------------------

    def set_present(self, workspace_id: str, user_id: str, name: str, present: bool) -> None:
        key = (workspace_id, user_id)
        if present:
            self._present[key] = name
        else:
            self._present.pop(key, None)
        self._presence_dirty[key] = (name, present)
        self._presence_idle.clear()
        self._presence_ready.set()

    async def online(self, workspace_id: str) -> set[str] | None:
        try:
            users = await self._redis.hkeys(self.keys.workspace_presence(workspace_id))
        except _FAILURES as exc:
            self._failed(exc)
            return None
        return {user.decode() for user in users}

    async def drain_presence(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until Redis knows of every presence change made here."""
        try:
            await asyncio.wait_for(self._presence_idle.wait(), timeout=timeout)
        except TimeoutError:
            log.warning("shutdown: %d presence changes not sent to Redis", len(self._presence_dirty))

    def _presence_resync(self) -> None:
        """After an outage (Redis may have restarted empty): restate everything we have."""
        for key, name in self._present.items():
            self._presence_dirty.setdefault(key, (name, True))
        self._spawn(self._forget_stale_presence())
        self._presence_idle.clear()
        self._presence_ready.set()

    async def _forget_stale_presence(self) -> None:
        try:
            fields = await self._redis.hgetall(self.keys.instance_presence(self.instance_id))
        except _FAILURES:
            return
        for field, name in fields.items():
            workspace_id, _, user_id = field.decode().partition("\x00")
            if (workspace_id, user_id) not in self._present:
                self._presence_dirty.setdefault((workspace_id, user_id), (name.decode(), False))
        self._presence_idle.clear()
        self._presence_ready.set()

    async def _sync_presence(self) -> None:
        delay = 0.1
        while True:
            await self._presence_ready.wait()
            self._presence_ready.clear()
            while self._presence_dirty:
                key, (name, present) = next(iter(self._presence_dirty.items()))
                try:
                    count = await self._apply_presence(self.instance_id, *key, name, present)
                except _FAILURES as exc:
                    delay = await self._wait_after(exc, delay)
                    continue
                delay = 0.1
                self._ok()
                if self._presence_dirty.get(key) == (name, present):
                    del self._presence_dirty[key]
                self._announce_presence(key[0], key[1], name, present, count)
            self._presence_idle.set()

    async def _apply_presence(
        self, instance_id: str, workspace_id: str, user_id: str, name: str, present: bool
    ) -> int:
        keys = [self.keys.instance_presence(instance_id), self.keys.workspace_presence(workspace_id)]
        args = [_presence_field(workspace_id, user_id), user_id, int(present), name]
        return int(await self._set_present(keys=keys, args=args))

    def _announce_presence(
        self, workspace_id: str, user_id: str, name: str, present: bool, count: int
    ) -> None:
        if (present and count == 1) or (not present and count == 0):
            self.on_presence(workspace_id, user_id, name, present)

    # -- sending ----------------------------------------------------------------------------------

    def _send(self, what: str, target: Any, payload: Any, seq: Any) -> None:
        self._out.append((what, target, payload, seq))
        self._out_ready.set()

    async def _drain_out(self) -> None:
        while self._out or self._out_ready.is_set():
            await asyncio.sleep(0.01)

    async def _publish(self) -> None:
        trim_ms = int(self.stream_retention * 1000)
        while True:
            await self._out_ready.wait()
            out, self._out = self._out, []
            watermark = self._watermark
            pipe = self._redis.pipeline(transaction=False)
            new_documents: set[int] = set()
            min_id = f"{int(time.time() * 1000) - trim_ms}-0"
            for what, target, payload, seq in out:
                if what == "update":
                    pipe.xadd(
                        self.keys.updates(target),
                        {"i": self._me, "s": seq, "u": payload},
                        minid=min_id,
                        approximate=True,
                    )
                    if target not in self._published_documents:
                        new_documents.add(target)
                elif what == "wake":
                    pipe.xadd(self.keys.wake(self.instance_id), {"w": 1}, maxlen=1, approximate=False)
                else:
                    pipe.publish(target, payload)
            if new_documents:
                pipe.sadd(self.keys.instance_documents(self.instance_id), *new_documents)
            if watermark != self._watermark_sent:
                pipe.hset(self.keys.watermarks, self.instance_id, watermark)
            if len(pipe) == 0:
                self._out_ready.clear()
                continue
            try:
                await pipe.execute()
            except _FAILURES as exc:
                # Dropped, not retried: the state-vector exchange repairs documents once Redis
                # is back, and events are in the event log for a resume.
                self._failed(exc)
            else:
                self._ok()
                self._published_documents |= new_documents
                self._watermark_sent = watermark
            if not self._out:
                self._out_ready.clear()

    # -- receiving --------------------------------------------------------------------------------

    def _wake_reader(self) -> None:
        self._send("wake", None, None, None)

    async def _read_streams(self) -> None:
        wake = self.keys.wake(self.instance_id)
        delay = 0.1
        while True:
            streams: dict[Any, Any] = {wake: "$"}
            for document_id, last in self._following.items():
                streams[self.keys.updates(document_id)] = last
            try:
                result = await self._reader.xread(streams, count=XREAD_COUNT, block=XREAD_BLOCK_MS)
            except _FAILURES as exc:
                delay = await self._wait_after(exc, delay)
                continue
            delay = 0.1
            self._ok()
            for stream, entries in result or ():
                document_id = self._stream_documents.get(stream)
                if document_id is None or document_id not in self._following:
                    continue
                for entry_id, fields in entries:
                    self._following[document_id] = entry_id
                    if fields.get(b"i") != self._me:
                        self._deliver_update(document_id, fields[b"u"])

    def _deliver_update(self, document_id: int, update: bytes) -> None:
        try:
            self.on_update(document_id, update)
        except Exception:
            log.exception("applying a relayed update to document %s failed", document_id)

    async def _listen(self) -> None:
        delay = 0.1
        first = True
        while True:
            pubsub = self._reader.pubsub(ignore_subscribe_messages=True)
            try:
                channels = list(self._channel_documents)
                await pubsub.subscribe(self.keys.events, *channels)
                self._pubsub = pubsub
                # Rooms loaded while we subscribed did not find a pub/sub to subscribe with.
                late = [channel for channel in self._channel_documents if channel not in channels]
                if late:
                    await pubsub.subscribe(*late)
                self._ok()
                delay = 0.1
                if not first:
                    # Messages sent while we were away are lost: compare states now.
                    self.on_reconnect()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=PUBSUB_PING)
                    if message is None:
                        await pubsub.ping()
                    elif message["type"] == "message":
                        self._dispatch(message["channel"], message["data"])
            except _FAILURES as exc:
                failure = exc  # the loop above only ends this way
            finally:
                self._pubsub = None
                await pubsub.aclose()
            first = False
            delay = await self._wait_after(failure, delay)

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        try:
            if channel == self.keys.events.encode():
                message = json.loads(data)
                if message["i"] == self.instance_id:
                    return
                if "o" in message:
                    self.on_control(message["o"], message["a"])
                else:
                    self.on_event(message["t"], int(message["n"]), message["x"])
                return
            document_id = self._channel_documents.get(channel)
            if document_id is None or len(data) < 2:
                return
            size = data[1]
            if data[2 : 2 + size] == self._me:
                return
            self.on_room_message(document_id, RoomMessage(data[0]), data[2 + size :])
        except Exception:
            log.exception("handling a message on %r failed", channel)

    # -- instances --------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        period = self.instance_timeout / 3
        while True:
            try:
                await self._beat()
            except _FAILURES as exc:
                self._failed(exc)
            await asyncio.sleep(period)

    async def _beat(self) -> None:
        now_ms = int(time.time() * 1000)
        await self._redis.zadd(self.keys.instances, {self.instance_id: now_ms})
        self._ok()
        dead = await self._redis.zrangebyscore(
            self.keys.instances, "-inf", now_ms - int(self.instance_timeout * 1000)
        )
        for instance in dead:
            instance_id = instance.decode()
            if instance_id == self.instance_id:
                continue
            if await self._redis.set(
                self.keys.takeover(instance_id), self.instance_id, nx=True, ex=TAKEOVER_LOCK_SECONDS
            ):
                await self._take_over(instance_id)

    async def _take_over(self, instance_id: str) -> None:
        """Store what a dead instance accepted but did not store, and withdraw its users."""
        me = instance_id.encode()
        watermark = int(await self._redis.hget(self.keys.watermarks, instance_id) or 0)
        rows: list[tuple[int, bytes]] = []
        for document in await self._redis.smembers(self.keys.instance_documents(instance_id)):
            for _, fields in await self._redis.xrange(self.keys.updates(int(document))):
                if fields.get(b"i") == me and int(fields[b"s"]) > watermark:
                    rows.append((int(document), fields[b"u"]))
        try:
            await self.store.append_updates(rows)
        except StoreError as exc:
            log.error("storing the updates of stopped instance %s failed, will retry: %s", instance_id, exc)
            await self._redis.delete(self.keys.takeover(instance_id))
            return
        fields = await self._redis.hgetall(self.keys.instance_presence(instance_id))
        for field, name in fields.items():
            workspace_id, _, user_id = field.decode().partition("\x00")
            count = await self._apply_presence(instance_id, workspace_id, user_id, name.decode(), False)
            self._announce_presence(workspace_id, user_id, name.decode(), False, count)
        await self._forget_instance(instance_id)
        log.warning(
            "instance %s stopped: stored %d of its updates, withdrew %d of its users",
            instance_id,
            len(rows),
            len(fields),
        )

    async def _forget_instance(self, instance_id: str) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(
            self.keys.instance_documents(instance_id),
            self.keys.instance_presence(instance_id),
            self.keys.wake(instance_id),
        )
        pipe.hdel(self.keys.watermarks, instance_id)
        pipe.zrem(self.keys.instances, instance_id)
        await pipe.execute()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)
