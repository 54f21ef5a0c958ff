"""EventHub: stores server-sent events, and routes them to the connections that may see them.

Storing: events are written to the event log by group commit. ``publish`` queues an event; one
task stores everything queued in one transaction (with the agent states the events change),
then delivers the batch in id order and resolves each publisher's wait with its event's id, so
a publisher is answered only once its event is stored. Ids increase across the log, so they
increase within every stream.

Delivering: each subscriber receives an event of a topic it follows only when ``Audience``
allows it, decided once per subscriber and topic and kept until what it depended on changes (an
agent restarts: every instance sees its ``agent_execution_start``; a workspace's membership or
visibility changes: a cluster command reaches every instance). Events wait, in order, while a
decision is being made. A subscriber that may no longer read a workspace it joined leaves it and
is told (``on_topic_lost``).

Resuming: a reconnecting client names the last id it saw and first receives what it missed, in
pages that each wait for the connection to drain, then the live stream, with no duplicates;
``resync_required`` when what it missed is older than retention (``EVENT_RETENTION`` events).

With several instances, the log is shared (one sequence of ids), and the broker relays each
event, with its id, to the other instances' subscribers. Events of one publisher arrive in order;
events published at the same moment on two instances may arrive a few ids out of order, so a
subscriber skips repeats by remembering recent ids rather than only the highest.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from crdt_store import AgentChange, NewEvent, Store, StoreUnavailable

from .. import metrics
from ..audience import Audience, Verdict, agent_topic, topic_parts, workspace_topic
from ..auth import Principal
from ..broker import Broker
from ..channel import Channel

__all__ = ["EventHub", "Subscriber", "agent_id_of", "agent_topic", "event_frame", "frame", "workspace_topic"]

log = logging.getLogger(__name__)

RECENT_IDS = 256  # ids each subscriber remembers to skip repeats
MAX_BATCH = 2_000  # events stored in one transaction
MAX_PAGE = 500  # events read and sent per page of a replay
START = "agent_execution_start"


def agent_id_of(topic: str) -> str | None:
    """The agent of an agent topic, else None."""
    kind, name = topic_parts(topic)
    return name if kind == "agent" else None


def frame(message_type: str, data: Any, **extra: Any) -> str:
    return json.dumps({"type": message_type, **extra, "data": data}, separators=(",", ":"), allow_nan=False)


def event_frame(event_id: int, message_type: str, data_json: str) -> str:
    """A server-sent event, around data already encoded as JSON (as stored in the event log)."""
    return f'{{"id":{event_id},"type":{json.dumps(message_type)},"data":{data_json}}}'


class Outbox(Protocol):
    """What a subscriber needs of its connection."""

    @property
    def channel(self) -> Channel: ...

    @property
    def max_queue(self) -> int: ...

    def send(self, data: bytes | str) -> None: ...

    async def drained(self) -> None: ...


# An event on its way to a subscriber: (topic, id, frame); a frame of None only asks for the
# topic to be judged again.
Offer = tuple[str, int, str | None]


class Subscriber:
    """One event connection: its user, topics, decisions, and the event ids it was sent.

    Arguments:
        conn: where frames go.
        user: whose rights decide what it may see.
        kinds: ``{"agent", "workspace"}``, what its endpoint carries.
        on_topic_lost: told when the user may no longer read a workspace it follows.
    """

    __slots__ = (
        "_held",
        "_judging",
        "_recent",
        "conn",
        "floor",
        "kinds",
        "last_id",
        "on_topic_lost",
        "topics",
        "user",
        "verdicts",
        "waiting",
    )

    def __init__(
        self,
        conn: Outbox,
        user: Principal,
        kinds: frozenset[str],
        *,
        on_topic_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.conn = conn
        self.user = user
        self.kinds = kinds
        self.on_topic_lost = on_topic_lost
        self.topics: set[str] = set()
        self.verdicts: dict[str, Verdict] = {}  # topic -> may this user see it
        self.waiting: deque[Offer] = deque()  # events waiting, in order, for a decision
        self.last_id = 0  # the highest id sent
        self.floor = 0  # ids at or below this one are never sent (the client had them)
        self._recent: dict[int, None] = {}  # ids sent lately, oldest first
        self._held: list[Offer] | None = None  # live events held back during a replay
        self._judging: asyncio.Task[None] | None = None

    def wants(self, event_id: int) -> bool:
        """Not sent yet, and not older than the resume point."""
        return event_id > self.floor and event_id not in self._recent

    def send_event(self, event_id: int, text: str) -> bool:
        """Send an event unless it was sent already; returns whether it was sent."""
        if not self.wants(event_id):
            return False
        self.last_id = max(self.last_id, event_id)
        self._recent[event_id] = None
        if len(self._recent) > RECENT_IDS:
            del self._recent[next(iter(self._recent))]
        self.conn.send(text)
        return True

    def forget_workspace(self, workspace_id: str) -> None:
        """Drop the decisions that depended on the workspace's access."""
        stale = [topic for topic, verdict in self.verdicts.items() if verdict.workspace_id == workspace_id]
        for topic in stale:
            del self.verdicts[topic]


@dataclass(slots=True)
class _Queued:
    event: NewEvent
    done: asyncio.Future[int] | None  # None: nobody waits (publish_soon)


class EventHub:
    """Stores events and delivers them to the subscribers that may see them.

    Arguments:
        store: the event log (and agents' states, written with their events).
        broker: relays stored events to the other instances.
        audience: decides who may see what.
        retention: events kept in the log; older ones cannot be resumed from.
        trim_every: events stored between trims of the log (default: a tenth of ``retention``,
            at least 100).
        max_batch: events stored (then delivered) at once; kept well under a connection's send
            queue, so that a reader that keeps up is never cut off by one batch arriving at once.
        listeners: told ``(topic, type, event frame)`` of every event delivered here.
    """

    def __init__(
        self,
        store: Store,
        broker: Broker,
        audience: Audience,
        *,
        retention: int = 100_000,
        trim_every: int | None = None,
        max_batch: int = MAX_BATCH,
        listeners: Sequence[Callable[[str, str, str], None]] = (),
    ) -> None:
        self.store = store
        self.broker = broker
        self.audience = audience
        self.retention = retention
        self.trim_every = trim_every or max(100, retention // 10)
        self.max_batch = max(1, min(max_batch, MAX_BATCH))
        self.listeners = tuple(listeners)
        self._topics: dict[str, set[Subscriber]] = {}
        self._by_user: dict[str, set[Subscriber]] = {}
        self._subscribers: set[Subscriber] = set()
        self._queue: list[_Queued] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._since_trim = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventHub:
        if self._task is not None:
            raise RuntimeError("EventHub already running")
        self._task = asyncio.create_task(self._commit_forever(), name="event-hub")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=10)
        except TimeoutError:
            log.error("shutdown: %d queued events were not stored", len(self._queue))
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        for sub in list(self._subscribers):
            self.remove(sub)

    # -- subscribers ------------------------------------------------------------------------------

    def add(self, sub: Subscriber) -> None:
        self._subscribers.add(sub)
        self._by_user.setdefault(sub.user.user_id, set()).add(sub)

    def remove(self, sub: Subscriber) -> None:
        for topic in sub.topics:
            self._discard(topic, sub)
        sub.topics.clear()
        sub.waiting.clear()
        if sub._judging is not None:
            sub._judging.cancel()
        self._subscribers.discard(sub)
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

    def subscribe(self, sub: Subscriber, topic: str, verdict: Verdict | None = None) -> None:
        """Follow ``topic``; ``verdict`` is a decision already made for it."""
        sub.topics.add(topic)
        if verdict is not None:
            sub.verdicts[topic] = verdict
        self._topics.setdefault(topic, set()).add(sub)

    def unsubscribe(self, sub: Subscriber, topic: str) -> None:
        sub.topics.discard(topic)
        sub.verdicts.pop(topic, None)
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

    def access_changed(self, workspace_id: str, user_id: str | None, *, narrowed: bool) -> None:
        """Membership or visibility of a workspace changed (for ``user_id``, or for everyone):
        decisions that depended on it are made again. When access may have ``narrowed``, the
        workspace's subscribers are judged again at once (not at its next event)."""
        subs = self._by_user.get(user_id, set()) if user_id is not None else self._subscribers
        topic = workspace_topic(workspace_id)
        for sub in list(subs):
            sub.forget_workspace(workspace_id)
            if narrowed and topic in sub.topics:
                sub.verdicts.pop(topic, None)
                self._offer(sub, (topic, 0, None))

    def forget_decisions(self) -> None:
        """Every decision is made again (workspaces' subscribers at once): after a Redis outage,
        other instances' access changes and agent starts may not have reached this one."""
        self.audience.forget_all()
        for sub in list(self._subscribers):
            sub.verdicts.clear()
            for topic in [t for t in sub.topics if topic_parts(t)[0] == "workspace"]:
                self._offer(sub, (topic, 0, None))

    # -- publishing -------------------------------------------------------------------------------

    async def publish(
        self, topic: str, message_type: str, data: dict[str, Any], *, agent: AgentChange | None = None
    ) -> int:
        """Store the event (with the agent state it changes), then deliver it. Returns its id
        once it is stored. Raises ``StoreUnavailable`` when it could not be stored."""
        return await self.submit(topic, message_type, data, agent=agent)

    def submit(
        self, topic: str, message_type: str, data: dict[str, Any], *, agent: AgentChange | None = None
    ) -> asyncio.Future[int]:
        """Queue the event to be stored and delivered (in the order submitted). Returns a
        future of its id, resolved once it is stored (``StoreUnavailable`` if it could not be)."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._enqueue(topic, message_type, data, agent, done)
        return done

    def publish_soon(self, topic: str, message_type: str, data: dict[str, Any]) -> None:
        """Publish from code that cannot wait (connection open/close); events go out in the
        order they were queued."""
        self._enqueue(topic, message_type, data, None, None)

    def _enqueue(
        self,
        topic: str,
        message_type: str,
        data: dict[str, Any],
        agent: AgentChange | None,
        done: asyncio.Future[int] | None,
    ) -> None:
        body = json.dumps(data, separators=(",", ":"), allow_nan=False)
        self._queue.append(_Queued(NewEvent(topic, message_type, body, agent), done))
        self._idle.clear()
        self._wakeup.set()

    async def _commit_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                await self._commit(batch)
            self._idle.set()

    async def _commit(self, batch: list[_Queued]) -> None:
        try:
            ids = await self.store.events.append([queued.event for queued in batch])
        except Exception as exc:  # every publisher waiting on this batch is answered
            if isinstance(exc, StoreUnavailable):
                log.warning("storing %d events failed: %s", len(batch), exc)
            else:
                log.exception("storing %d events failed", len(batch))
            for queued in batch:
                if queued.done is not None and not queued.done.done():
                    queued.done.set_exception(exc)
            return
        for queued, event_id in zip(batch, ids, strict=True):
            event = queued.event
            text = event_frame(event_id, event.type, event.data)
            self.deliver(event.topic, event_id, text, event.type)
            self.broker.publish_event(event.topic, event_id, text)
            if queued.done is not None and not queued.done.done():
                queued.done.set_result(event_id)
        self._since_trim += len(batch)
        if self._since_trim >= self.trim_every:
            self._since_trim = 0
            try:
                await self.store.events.trim(keep=self.retention)
            except StoreUnavailable as exc:
                log.warning("trimming the event log failed: %s", exc)

    # -- delivering -------------------------------------------------------------------------------

    def deliver(self, topic: str, event_id: int, text: str, message_type: str | None = None) -> None:
        """Send a stored event (here, or relayed by another instance) to the topic's subscribers
        that may see it, and tell the listeners."""
        kind = message_type or json.loads(text)["type"]
        if kind == START:
            # The agent's owners may have changed: every decision about it is made again.
            agent_id = agent_id_of(topic)
            if agent_id is not None:
                self.audience.forget(agent_id)
            for sub in self._topics.get(topic, ()):
                sub.verdicts.pop(topic, None)
        for listener in self.listeners:
            try:
                listener(topic, kind, text)
            except Exception:
                log.exception("an event listener failed on %s", kind)
        for sub in self._topics.get(topic, ()):
            self._offer(sub, (topic, event_id, text))

    def _offer(self, sub: Subscriber, offer: Offer) -> None:
        if sub._held is not None:
            sub._held.append(offer)
            return
        if not sub.waiting:
            topic, event_id, text = offer
            verdict = sub.verdicts.get(topic)
            if verdict is not None:
                if text is not None and verdict.admits(event_id):
                    sub.send_event(event_id, text)
                return
        sub.waiting.append(offer)
        if sub._judging is None or sub._judging.done():
            sub._judging = asyncio.create_task(self._judge_waiting(sub), name="event-judge")

    async def _judge_waiting(self, sub: Subscriber) -> None:
        """Send the events waiting for a decision, in order, deciding as needed."""
        while sub.waiting:
            topic, event_id, text = sub.waiting[0]
            verdict = await self.verdict(sub, topic)
            sub.waiting.popleft()
            if text is not None and verdict.admits(event_id) and topic in sub.topics:
                sub.send_event(event_id, text)

    async def verdict(self, sub: Subscriber, topic: str) -> Verdict:
        """The subscriber's decision for ``topic``, made now if there is none. A workspace it
        may no longer read is left (and it is told)."""
        verdict = sub.verdicts.get(topic)
        if verdict is not None:
            return verdict
        try:
            verdict = await self.audience.topic(sub.user, topic)
        except StoreUnavailable as exc:  # refuse this once, decide again later
            log.warning("could not decide whether %s may see %s: %s", sub.user.user_id, topic, exc)
            return Verdict(False)
        if topic not in sub.topics:
            return verdict
        sub.verdicts[topic] = verdict
        if not verdict.allowed and topic_parts(topic)[0] == "workspace":
            self.unsubscribe(sub, topic)
            if sub.on_topic_lost is not None:
                sub.on_topic_lost(topic)
        return verdict

    # -- resuming ---------------------------------------------------------------------------------

    async def resume(
        self, sub: Subscriber, after_id: int, *, on_gap: Callable[[], Awaitable[dict[str, Any]]]
    ) -> int:
        """Send ``sub`` every retained event after ``after_id`` on its topics that it may see, in
        order, in pages that wait for its connection to drain; then let live events through.
        Live events arriving meanwhile are held (while they fit in a page; beyond that they are
        read back from the log), then sent without repeats. When events after ``after_id`` were
        already trimmed, send ``resync_required`` (its data from ``on_gap``) instead. Returns how
        many events were replayed."""
        sub.floor = max(sub.floor, after_id)
        sub.last_id = max(sub.last_id, after_id)
        oldest = await self.store.events.oldest_id()
        if oldest is not None and after_id < oldest - 1:
            sub.conn.send(frame("resync_required", await on_gap()))
            return 0
        page = max(1, min(MAX_PAGE, sub.conn.max_queue // 2))
        already = set(sub._recent)  # sent live on this connection before the replay
        replayed: set[int] = set()
        cursor = after_id
        sub._held = []
        try:
            while True:
                events = await self.store.events.after(after_id=cursor, topics=sub.topics, limit=page)
                for event in events:
                    cursor = event.id
                    if event.id in already:
                        continue
                    if (await self.verdict(sub, event.topic)).admits(event.id) and event.topic in sub.topics:
                        text = event_frame(event.id, event.type, event.data)
                        if sub.send_event(event.id, text):
                            replayed.add(event.id)
                await sub.conn.drained()
                if len(events) < page and len(sub._held) <= page:
                    break  # caught up: what was stored after this read is held
                if len(sub._held) > page:
                    sub._held = []  # too many to hold: they are in the log, read them from there
        finally:
            held, sub._held = sub._held, None
            for offer in held:
                if offer[1] not in replayed:
                    self._offer(sub, offer)
        metrics.REPLAY_EVENTS.observe(len(replayed))
        return len(replayed)
