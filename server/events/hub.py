"""EventHub: routes server-sent events to the connections subscribed to their topic.

Every event is stored in the event log first, which gives it its id; ids increase across the log,
so they increase within every stream. Publication is serialised, so events leave in id order. A
reconnecting client names the last id it saw and first receives what it missed (or
``resync_required`` when that is older than retention), then the live stream, with no duplicates.

With several instances, the log is shared (one sequence of ids), and the broker relays each
event, with its id, to the other instances' subscribers. Events of one publisher arrive in order;
events published at the same moment on two instances may arrive a few ids out of order, so a
subscriber skips repeats by remembering recent ids rather than only the highest.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from crdt_store import Store

from .. import metrics
from ..auth import Principal
from ..broker import Broker
from ..connection import Connection

log = logging.getLogger(__name__)

TRIM_EVERY = 200  # events between retention trims
RECENT_IDS = 256  # ids each subscriber remembers to skip repeats


def agent_topic(agent_id: str) -> str:
    return f"agent:{agent_id}"


def workspace_topic(workspace_id: str) -> str:
    return f"workspace:{workspace_id}"


def agent_id_of(topic: str) -> str | None:
    """The agent of an agent topic, else None."""
    prefix, _, agent_id = topic.partition(":")
    return agent_id if prefix == "agent" else None


def frame(message_type: str, data: Any, **extra: Any) -> str:
    return json.dumps({"type": message_type, **extra, "data": data}, separators=(",", ":"), allow_nan=False)


def event_frame(event_id: int, message_type: str, data_json: str) -> str:
    """A server-sent event, around data already encoded as JSON (as stored in the event log)."""
    return f'{{"id":{event_id},"type":{json.dumps(message_type)},"data":{data_json}}}'


class Subscriber:
    """One event-channel connection: its topics and the event ids it was sent."""

    __slots__ = ("_held", "_recent", "conn", "floor", "kinds", "last_id", "topics", "user")

    def __init__(self, conn: Connection, user: Principal, kinds: frozenset[str]) -> None:
        self.conn = conn
        self.user = user
        self.kinds = kinds  # {"agent", "workspace"}: what this endpoint carries
        self.topics: set[str] = set()
        self.last_id = 0  # the highest id sent
        self.floor = 0  # ids at or below this one are never sent (the client had them)
        self._recent: dict[int, None] = {}  # ids sent lately, oldest first
        self._held: list[tuple[int, str]] | None = None  # live events held back during a replay

    def hold(self) -> None:
        """Hold live events back (while a replay is being sent)."""
        self._held = []

    def release(self) -> None:
        """Send the events held back, skipping any the replay already sent."""
        held, self._held = self._held, None
        for event_id, text in held or ():
            self.deliver(event_id, text)

    def deliver(self, event_id: int, text: str) -> None:
        if self._held is not None:
            self._held.append((event_id, text))
        elif self.wants(event_id):
            self.sent(event_id)
            self.conn.send(text)

    def wants(self, event_id: int) -> bool:
        """Not sent yet, and not older than the resume point."""
        return event_id > self.floor and event_id not in self._recent

    def sent(self, event_id: int) -> None:
        self.last_id = max(self.last_id, event_id)
        self._recent[event_id] = None
        if len(self._recent) > RECENT_IDS:
            del self._recent[next(iter(self._recent))]


class EventHub:
    def __init__(
        self,
        store: Store,
        broker: Broker,
        *,
        retention: int = 10_000,
        listeners: Sequence[Callable[[str, str, str], None]] = (),
    ) -> None:
        self.store = store
        self.broker = broker
        self.retention = retention
        self.listeners = tuple(listeners)  # (topic, type, event frame) of every event delivered here
        self._topics: dict[str, set[Subscriber]] = {}
        self._by_user: dict[str, set[Subscriber]] = {}
        self._lock = asyncio.Lock()
        self._since_trim = 0
        self._queue: asyncio.Queue[tuple[str, str, dict[str, Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventHub:
        if self._task is not None:
            raise RuntimeError("EventHub already running")
        self._task = asyncio.create_task(self._publish_queued(), name="event-hub")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await asyncio.wait_for(self._queue.join(), timeout=10)
        except TimeoutError:
            log.error("shutdown: %d queued events were not published", self._queue.qsize())
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    # -- subscribers ------------------------------------------------------------------------------

    def add(self, sub: Subscriber) -> None:
        self._by_user.setdefault(sub.user.user_id, set()).add(sub)

    def remove(self, sub: Subscriber) -> None:
        for topic in sub.topics:
            self._discard(topic, sub)
        sub.topics.clear()
        users = self._by_user.get(sub.user.user_id)
        if users is not None:
            users.discard(sub)
            if not users:
                del self._by_user[sub.user.user_id]

    def endpoints(self) -> dict[str, int]:
        """Event connections of this instance, by endpoint path (``/ws``, ``/ws/agents``, ...)."""
        counts: dict[str, int] = {}
        for subs in self._by_user.values():
            for sub in subs:
                path = sub.conn.channel.path.rstrip("/")
                counts[path] = counts.get(path, 0) + 1
        return counts

    def subscribe(self, sub: Subscriber, topic: str) -> None:
        sub.topics.add(topic)
        self._topics.setdefault(topic, set()).add(sub)

    def unsubscribe(self, sub: Subscriber, topic: str) -> None:
        sub.topics.discard(topic)
        self._discard(topic, sub)

    def _discard(self, topic: str, sub: Subscriber) -> None:
        subs = self._topics.get(topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._topics[topic]

    def subscribe_user(self, user_id: str, agent_id: str, *, subscribed: bool) -> None:
        """Apply a stored (REST) subscription change to every event connection of the user."""
        for sub in self._by_user.get(user_id, ()):
            if "agent" in sub.kinds:
                (self.subscribe if subscribed else self.unsubscribe)(sub, agent_topic(agent_id))

    # -- publishing -------------------------------------------------------------------------------

    async def publish(self, topic: str, message_type: str, data: dict[str, Any]) -> int:
        """Store the event, then send it to the topic's subscribers. Returns its id."""
        body = json.dumps(data, separators=(",", ":"), allow_nan=False)
        async with self._lock:
            event_id = await self.store.events.append(topic=topic, type=message_type, data=body)
            text = event_frame(event_id, message_type, body)
            self.deliver(topic, event_id, text, message_type)
            self.broker.publish_event(topic, event_id, text)
            self._since_trim += 1
            if self._since_trim >= TRIM_EVERY:
                self._since_trim = 0
                await self.store.events.trim(keep=self.retention)
        return event_id

    def deliver(self, topic: str, event_id: int, text: str, message_type: str | None = None) -> None:
        """Send a stored event (here, or relayed by another instance) to the topic's subscribers,
        and tell the listeners."""
        if self.listeners:
            kind = message_type or json.loads(text)["type"]
            for listener in self.listeners:
                try:
                    listener(topic, kind, text)
                except Exception:
                    log.exception("an event listener failed on %s", kind)
        for sub in self._topics.get(topic, ()):
            sub.deliver(event_id, text)

    def publish_soon(self, topic: str, message_type: str, data: dict[str, Any]) -> None:
        """Publish from code that cannot wait (connection open/close); queued events go out in
        the order they were queued."""
        self._queue.put_nowait((topic, message_type, data))

    async def _publish_queued(self) -> None:
        while True:
            topic, message_type, data = await self._queue.get()
            try:
                await self.publish(topic, message_type, data)
            except Exception:
                log.exception("publishing %s on %s failed", message_type, topic)
            finally:
                self._queue.task_done()

    async def resume(
        self, sub: Subscriber, after_id: int, *, on_gap: Callable[[], Awaitable[dict[str, Any]]]
    ) -> int:
        """Send ``sub`` every retained event after ``after_id`` on its topics, in order, then let
        live events through; live events arriving meanwhile are held, then sent without repeats.
        When events after ``after_id`` were already trimmed, send ``resync_required`` (its data
        from ``on_gap``) instead. Returns how many events were replayed."""
        sub.hold()
        replayed = 0
        try:
            oldest = await self.store.events.oldest_id()
            sub.floor = max(sub.floor, after_id)
            sub.last_id = max(sub.last_id, after_id)
            if oldest is not None and after_id < oldest - 1:
                sub.conn.send(frame("resync_required", await on_gap()))
            else:
                events = await self.store.events.after(after_id=after_id, topics=sub.topics)
                for event in events:
                    if sub.wants(event.id):
                        sub.sent(event.id)
                        sub.conn.send(event_frame(event.id, event.type, event.data))
                        replayed += 1
        finally:
            sub.release()
        metrics.REPLAY_EVENTS.observe(replayed)
        return replayed
