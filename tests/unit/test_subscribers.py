"""``server.events.hub``: the event log as the source of ids, each event once per subscriber,
resuming after ``last_event_id``, and ``resync_required`` when the gap was trimmed.

The real ``EventHub`` on a real store (a SQLite file) and the in-process broker (recording what it
would relay). Subscribers' connections are fakes that record the frames they are given."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from crdt_store import Store, StoredEvent, open_store
from server.audience import Verdict
from server.auth import Principal
from server.broker import Broker, open_broker
from server.config import Settings
from server.events.hub import EventHub, Subscriber, agent_topic, event_frame, workspace_topic
from tests.support.wait import wait_until

DEADLINE = 5.0


class RecordingBroker(Broker):
    """The in-process broker, remembering what it was asked to relay to other instances."""

    def __init__(self) -> None:
        super().__init__("test-instance")
        self.events: list[tuple[str, int, str]] = []

    def publish_event(self, topic: str, event_id: int, text: str) -> None:
        self.events.append((topic, event_id, text))


class FakeConnection:
    """What a ``Subscriber`` uses of its connection: ``send``, ``max_queue`` and ``drained``."""

    def __init__(self, max_queue: int = 1_000) -> None:
        self.frames: list[str] = []
        self.max_queue = max_queue
        self.drains = 0

    def send(self, data: bytes | str) -> None:
        assert isinstance(data, str)
        self.frames.append(data)

    async def drained(self) -> None:
        self.drains += 1

    def ids(self) -> list[int | None]:
        return [json.loads(text).get("id") for text in self.frames]


class GatedEvents:
    """The store's event log, with ``after`` stopping at a gate (before or after its query), so a
    test can publish while a resume is in progress."""

    def __init__(self, events: Any, *, gate_before_query: bool) -> None:
        self._events = events
        self.gate_before_query = gate_before_query
        self.reached = asyncio.Event()
        self.gate = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._events, name)

    async def after(self, *, after_id: int, topics: Iterable[str], limit: int) -> list[StoredEvent]:
        topics = list(topics)
        if self.gate_before_query:
            self.reached.set()
            await self.gate.wait()
            return await self._events.after(after_id=after_id, topics=topics, limit=limit)
        found = await self._events.after(after_id=after_id, topics=topics, limit=limit)
        self.reached.set()
        await self.gate.wait()
        return found


class GatedStore:
    def __init__(self, store: Store, *, gate_before_query: bool) -> None:
        self.events = GatedEvents(store.events, gate_before_query=gate_before_query)


class OpenAudience:
    """Decides as ``Audience`` is asked to: every topic is allowed unless ``refused``; a topic in
    ``gates`` is decided only once its gate opens."""

    def __init__(self) -> None:
        self.refused: set[str] = set()
        self.gates: dict[str, asyncio.Event] = {}
        self.asked: list[str] = []
        self.forgotten: list[str] = []
        self.forgot_all = False

    async def topic(self, _principal: Principal, topic: str) -> Verdict:
        self.asked.append(topic)
        gate = self.gates.get(topic)
        if gate is not None:
            await gate.wait()
        workspace = topic.partition(":")[2] if topic.startswith("workspace:") else None
        return Verdict(topic not in self.refused, workspace)

    def forget(self, agent_id: str) -> None:
        self.forgotten.append(agent_id)

    def forget_all(self) -> None:
        self.forgot_all = True


def make_hub(store: Any, broker: Broker, audience: OpenAudience | None = None, **options: Any) -> EventHub:
    return EventHub(store, broker, audience or OpenAudience(), **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
async def store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Store]:
    path: Path = tmp_path_factory.mktemp("events") / "events.db"
    async with open_store(f"sqlite+aiosqlite:///{path}") as opened:
        yield opened


@pytest.fixture
def broker() -> RecordingBroker:
    return RecordingBroker()


@pytest.fixture
async def hub(store: Store, broker: RecordingBroker) -> AsyncIterator[EventHub]:
    async with make_hub(store, broker, retention=10_000) as running:
        yield running


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


BOTH_KINDS = frozenset({"agent", "workspace"})


def subscriber(
    *topics: str, hub: EventHub | None = None, user: str = "alice", decided: bool = True
) -> Subscriber:
    """A subscriber to ``topics``; ``decided``: already allowed to see them (else each topic is
    judged at its first event)."""
    principal = Principal(user_id=user, name=user.title())
    sub = Subscriber(FakeConnection(), principal, BOTH_KINDS)  # type: ignore[arg-type]
    if hub is not None:
        hub.add(sub)
        for topic in topics:
            hub.subscribe(sub, topic, Verdict(True) if decided else None)
    return sub


def sent(sub: Subscriber) -> FakeConnection:
    conn = sub.conn
    assert isinstance(conn, FakeConnection)
    return conn


async def no_gap() -> dict[str, Any]:
    raise AssertionError("resync_required was not expected")


# -- publishing -----------------------------------------------------------------------------------


async def test_in_process_broker_is_what_the_settings_give_without_redis() -> None:
    broker = open_broker(Settings(_env_file=None, redis_url=None))  # type: ignore[call-arg]
    assert type(broker) is Broker
    assert broker.relays is False


async def test_publish_stores_first_and_sends_the_stored_id(
    store: Store, hub: EventHub, broker: RecordingBroker
) -> None:
    topic = agent_topic(unique("agent"))
    heard: list[tuple[str, str, str]] = []
    hub.listeners = (lambda *args: heard.append(args),)
    sub = subscriber(topic, hub=hub)
    event_id = await hub.publish(topic, "agent_execution_update", {"agent_id": "a-1", "progress": 60.5})
    expected = (
        f'{{"id":{event_id},"type":"agent_execution_update","data":{{"agent_id":"a-1","progress":60.5}}}}'
    )
    assert sent(sub).frames == [expected]
    assert await store.events.after(after_id=event_id - 1, topics=[topic], limit=10) == [
        StoredEvent(event_id, topic, "agent_execution_update", '{"agent_id":"a-1","progress":60.5}')
    ]
    assert broker.events == [(topic, event_id, expected)]
    assert heard == [(topic, "agent_execution_update", expected)]
    assert sub.last_id == event_id


async def test_ids_increase_across_topics(hub: EventHub) -> None:
    a, b = agent_topic(unique("agent")), workspace_topic(unique("ws"))
    ids = [await hub.publish(topic, "x", {"n": n}) for n, topic in enumerate([a, b, a, b])]
    assert ids == sorted(ids)
    assert len(set(ids)) == 4


async def test_a_failing_listener_does_not_stop_delivery(hub: EventHub) -> None:
    topic = agent_topic(unique("agent"))

    def broken(*_: object) -> None:
        raise RuntimeError("listener bug")

    hub.listeners = (broken,)
    sub = subscriber(topic, hub=hub)
    event_id = await hub.publish(topic, "x", {})
    assert sent(sub).ids() == [event_id]


async def test_publish_soon_publishes_in_order_and_shutdown_waits_for_the_queue(
    store: Store, broker: RecordingBroker
) -> None:
    topic = workspace_topic(unique("ws"))
    async with make_hub(store, broker) as hub:
        sub = subscriber(topic, hub=hub)
        for n in range(5):
            hub.publish_soon(topic, "user_joined", {"n": n})
    stored = await store.events.after(after_id=0, topics=[topic], limit=1_000)
    assert [json.loads(event.data)["n"] for event in stored] == [0, 1, 2, 3, 4]
    assert [event.id for event in stored] == sorted(event.id for event in stored)
    assert sent(sub).ids() == [event.id for event in stored]


# -- each event once ------------------------------------------------------------------------------


async def test_each_event_once_across_several_topics_and_relays(hub: EventHub) -> None:
    agent, workspace = agent_topic(unique("agent")), workspace_topic(unique("ws"))
    both = subscriber(agent, workspace, hub=hub)
    only_agent = subscriber(agent, hub=hub, user="bob")
    first = await hub.publish(agent, "agent_execution_start", {"n": 1})
    second = await hub.publish(workspace, "workspace_update", {"n": 2})
    first_text = sent(both).frames[0]
    # The same event again: under the subscriber's other topic, and echoed by another instance.
    hub.deliver(workspace, first, first_text)
    hub.deliver(agent, first, first_text)
    hub.deliver(workspace, second, sent(both).frames[1])
    assert sent(both).ids() == [first, second]
    assert sent(only_agent).ids() == [first]


async def test_ids_a_few_out_of_order_are_delivered_not_mistaken_for_repeats(hub: EventHub) -> None:
    topic = agent_topic(unique("agent"))
    sub = subscriber(topic, hub=hub)
    for event_id in (10, 9, 12, 10, 11, 9, 12):
        hub.deliver(topic, event_id, event_frame(event_id, "x", "{}"))
    assert sent(sub).ids() == [10, 9, 12, 11]
    assert sub.last_id == 12


async def test_unsubscribed_and_removed_subscribers_get_nothing(hub: EventHub) -> None:
    a, b = agent_topic(unique("agent")), agent_topic(unique("agent"))
    sub = subscriber(a, b, hub=hub)
    hub.unsubscribe(sub, a)
    await hub.publish(a, "x", {})
    kept = await hub.publish(b, "x", {})
    hub.remove(sub)
    await hub.publish(b, "x", {})
    assert sent(sub).ids() == [kept]
    assert sub.topics == set()


async def test_subscribe_user_applies_to_agent_endpoints_only(hub: EventHub) -> None:
    user = unique("user")
    agent_id = unique("agent")
    on_agents = Subscriber(FakeConnection(), Principal(user, user), frozenset({"agent"}))  # type: ignore[arg-type]
    on_workspaces = Subscriber(FakeConnection(), Principal(user, user), frozenset({"workspace"}))  # type: ignore[arg-type]
    other_user = Subscriber(FakeConnection(), Principal("someone-else", "S"), frozenset({"agent"}))  # type: ignore[arg-type]
    for sub in (on_agents, on_workspaces, other_user):
        hub.add(sub)
    hub.subscribe_user(user, agent_id, subscribed=True)
    assert on_agents.topics == {agent_topic(agent_id)}
    assert on_workspaces.topics == set()
    assert other_user.topics == set()
    event_id = await hub.publish(agent_topic(agent_id), "x", {})
    assert sent(on_agents).ids() == [event_id]
    hub.subscribe_user(user, agent_id, subscribed=False)
    assert on_agents.topics == set()
    await hub.publish(agent_topic(agent_id), "x", {})
    assert sent(on_agents).ids() == [event_id]
    for sub in (on_agents, on_workspaces, other_user):
        hub.remove(sub)


# -- resume ---------------------------------------------------------------------------------------


async def test_resume_replays_exactly_the_missed_events_in_order(hub: EventHub) -> None:
    a, b, other = agent_topic(unique("agent")), workspace_topic(unique("ws")), agent_topic(unique("agent"))
    before = subscriber(a, b, hub=hub)  # the connection that will drop
    seen = await hub.publish(a, "x", {"n": 1})
    hub.remove(before)
    missed_1 = await hub.publish(b, "x", {"n": 2})
    await hub.publish(other, "x", {"n": 3})  # not on the subscriber's topics
    missed_2 = await hub.publish(a, "x", {"n": 4})
    missed_3 = await hub.publish(b, "x", {"n": 5})
    again = subscriber(a, b, hub=hub)  # the reconnection
    replayed = await hub.resume(again, seen, on_gap=no_gap)
    assert replayed == 3
    assert sent(again).ids() == [missed_1, missed_2, missed_3]
    assert [json.loads(text)["data"]["n"] for text in sent(again).frames] == [2, 4, 5]
    live = await hub.publish(a, "x", {"n": 6})
    hub.deliver(a, missed_2, sent(again).frames[1])  # a late relay of a replayed event
    assert sent(again).ids() == [missed_1, missed_2, missed_3, live]
    assert again.last_id == live


async def test_resume_when_nothing_was_missed_replays_nothing(hub: EventHub) -> None:
    topic = agent_topic(unique("agent"))
    last = await hub.publish(topic, "x", {})
    sub = subscriber(topic, hub=hub)
    assert await hub.resume(sub, last, on_gap=no_gap) == 0
    assert sent(sub).frames == []
    assert sub.floor == last


async def test_events_at_or_before_the_resume_point_are_never_sent(hub: EventHub) -> None:
    topic = agent_topic(unique("agent"))
    first = await hub.publish(topic, "x", {})
    second = await hub.publish(topic, "x", {})
    sub = subscriber(topic, hub=hub)
    assert await hub.resume(sub, second, on_gap=no_gap) == 0
    hub.deliver(topic, first, event_frame(first, "x", "{}"))  # relayed late by another instance
    hub.deliver(topic, second, event_frame(second, "x", "{}"))
    assert sent(sub).frames == []


@pytest.mark.parametrize("gate_before_query", [True, False], ids=["live-before-query", "live-after-query"])
async def test_live_events_during_a_resume_are_held_then_sent_once_in_order(
    store: Store, broker: RecordingBroker, gate_before_query: bool
) -> None:
    """An event published while the replay is being read is held, then sent after the replay,
    and only if the replay did not already include it."""
    topic = agent_topic(unique("agent"))
    gated = GatedStore(store, gate_before_query=gate_before_query)
    async with make_hub(store, broker) as publisher:
        seen = await publisher.publish(topic, "x", {"n": 1})
        missed = [await publisher.publish(topic, "x", {"n": n}) for n in (2, 3)]
    async with make_hub(gated, broker) as hub:
        sub = subscriber(topic, hub=hub)
        resuming = asyncio.create_task(hub.resume(sub, seen, on_gap=no_gap))
        await asyncio.wait_for(gated.events.reached.wait(), DEADLINE)
        live = await hub.publish(topic, "x", {"n": 4})
        assert sent(sub).frames == []  # held while the replay is in progress
        gated.events.gate.set()
        replayed = await asyncio.wait_for(resuming, DEADLINE)
        assert sent(sub).ids() == [*missed, live]
        assert replayed == (3 if gate_before_query else 2)
        after = await hub.publish(topic, "x", {"n": 5})
        assert sent(sub).ids() == [*missed, live, after]


# -- resume older than retention ------------------------------------------------------------------


async def test_resume_older_than_the_retained_log_gets_resync_required(store: Store, hub: EventHub) -> None:
    topic = agent_topic(unique("agent"))
    ids = [await hub.publish(topic, "x", {"n": n}) for n in range(6)]
    await store.events.trim(keep=3)  # keeps ids[3:]
    assert await store.events.oldest_id() == ids[3]
    gap_data = {"reason": "events after last_event_id are older than retention", "last_event_id": ids[1]}
    asked: list[int] = []

    async def on_gap() -> dict[str, Any]:
        asked.append(1)
        return gap_data

    late = subscriber(topic, hub=hub)
    assert await hub.resume(late, ids[1], on_gap=on_gap) == 0  # ids[2] was trimmed: a gap
    assert asked == [1]
    assert sent(late).frames == [
        '{"type":"resync_required","data":{"reason":"events after last_event_id are older than '
        f'retention","last_event_id":{ids[1]}}}}}'
    ]
    live = await hub.publish(topic, "x", {"n": 6})  # the live stream follows the resync
    assert sent(late).ids() == [None, live]

    just_in_time = subscriber(topic, hub=hub, user="bob")
    assert await hub.resume(just_in_time, ids[2], on_gap=no_gap) == 4  # ids[2] itself was seen
    assert sent(just_in_time).ids() == [*ids[3:], live]


async def test_hub_trims_the_log_to_its_retention(store: Store, broker: RecordingBroker) -> None:
    topic = agent_topic(unique("agent"))
    async with make_hub(store, broker, retention=5, trim_every=12) as hub:
        ids = [await hub.publish(topic, "x", {"n": n}) for n in range(11)]
        assert await store.events.oldest_id() <= ids[0]  # not trimmed before the 12th event
        ids.append(await hub.publish(topic, "x", {"n": 11}))  # trims, after storing it
    assert await store.events.oldest_id() == ids[-5]
    assert [e.id for e in await store.events.after(after_id=0, topics=[topic], limit=1_000)] == ids[-5:]


# -- who may see what -----------------------------------------------------------------------------


async def test_events_wait_in_order_while_a_decision_is_made(store: Store, broker: RecordingBroker) -> None:
    audience = OpenAudience()
    slow, quick = agent_topic(unique("agent")), agent_topic(unique("agent"))
    audience.gates[slow] = asyncio.Event()
    hub = make_hub(store, broker, audience)
    sub = subscriber(slow, quick, hub=hub, decided=False)
    sub.verdicts[quick] = Verdict(True)
    for event_id, topic in ((1, slow), (2, quick), (3, slow)):
        hub.deliver(topic, event_id, event_frame(event_id, "x", "{}"))
    assert sent(sub).frames == []  # the first waits for its decision, the others behind it
    audience.gates[slow].set()
    await wait_until(lambda: sent(sub).ids() == [1, 2, 3])
    assert audience.asked == [slow]  # decided once, then kept


async def test_a_refused_topic_gets_nothing_until_the_agent_starts_again(
    store: Store, broker: RecordingBroker
) -> None:
    audience = OpenAudience()
    agent_id = unique("agent")
    topic = agent_topic(agent_id)
    audience.refused.add(topic)
    async with make_hub(store, broker, audience) as hub:
        sub = subscriber(topic, hub=hub, decided=False)
        await hub.publish(topic, "agent_execution_update", {})
        await wait_until(lambda: audience.asked == [topic])
        audience.refused.clear()
        await hub.publish(topic, "agent_execution_update", {})  # the refusal is kept...
        started = await hub.publish(topic, "agent_execution_start", {})  # ...until a start
        await wait_until(lambda: sent(sub).ids() == [started])
    assert audience.forgotten == [agent_id]


async def test_narrowed_access_leaves_the_workspace_at_once(store: Store, broker: RecordingBroker) -> None:
    audience = OpenAudience()
    workspace_id = unique("ws")
    topic = workspace_topic(workspace_id)
    lost: list[str] = []
    hub = make_hub(store, broker, audience)
    principal = Principal("carol", "Carol")
    sub = Subscriber(FakeConnection(), principal, BOTH_KINDS, on_topic_lost=lost.append)  # type: ignore[arg-type]
    hub.add(sub)
    hub.subscribe(sub, topic, Verdict(True, workspace_id))
    hub.access_changed(workspace_id, "someone-else", narrowed=True)  # not this user
    assert sub.verdicts[topic] == Verdict(True, workspace_id)
    audience.refused.add(topic)
    hub.access_changed(workspace_id, "carol", narrowed=True)
    await wait_until(lambda: lost == [topic])
    assert topic not in sub.topics
    hub.deliver(topic, 7, event_frame(7, "workspace_update", "{}"))
    assert sent(sub).frames == []


async def test_an_access_change_forgets_the_decisions_that_depended_on_it(
    store: Store, broker: RecordingBroker
) -> None:
    hub = make_hub(store, broker)
    sub = subscriber(hub=hub)
    sub.verdicts = {"agent:a": Verdict(False, "w1"), "agent:b": Verdict(True, "w2"), "agent:c": Verdict(True)}
    hub.access_changed("w1", None, narrowed=False)
    assert sub.verdicts == {"agent:b": Verdict(True, "w2"), "agent:c": Verdict(True)}


# -- resume in pages ------------------------------------------------------------------------------


async def test_resume_beyond_the_send_queue_goes_in_pages_that_wait_for_the_connection(
    hub: EventHub,
) -> None:
    topic = agent_topic(unique("agent"))
    seen = await hub.publish(topic, "x", {})
    missed = [await hub.publish(topic, "x", {"n": n}) for n in range(9)]
    conn = FakeConnection(max_queue=4)  # pages of 2
    sub = Subscriber(conn, Principal("dave", "Dave"), BOTH_KINDS)  # type: ignore[arg-type]
    hub.add(sub)
    hub.subscribe(sub, topic)
    assert await hub.resume(sub, seen, on_gap=no_gap) == 9
    assert conn.ids() == missed
    assert conn.drains == 5  # after each page of 2, the last one short


async def test_live_events_beyond_a_page_during_a_resume_are_read_from_the_log(
    store: Store, broker: RecordingBroker
) -> None:
    topic = agent_topic(unique("agent"))
    async with make_hub(store, broker) as publisher:
        seen = await publisher.publish(topic, "x", {})
        missed = [await publisher.publish(topic, "x", {"n": n}) for n in range(3)]
    gated = GatedStore(store, gate_before_query=False)
    async with make_hub(gated, broker) as hub:
        conn = FakeConnection(max_queue=4)
        sub = Subscriber(conn, Principal("erin", "Erin"), BOTH_KINDS)  # type: ignore[arg-type]
        hub.add(sub)
        hub.subscribe(sub, topic)
        resuming = asyncio.create_task(hub.resume(sub, seen, on_gap=no_gap))
        await asyncio.wait_for(gated.events.reached.wait(), DEADLINE)
        live = [await hub.publish(topic, "x", {"n": n}) for n in range(3, 8)]  # more than a page
        gated.events.gate.set()
        await asyncio.wait_for(resuming, DEADLINE)
        assert conn.ids() == [*missed, *live]
        after = await hub.publish(topic, "x", {})
        assert conn.ids() == [*missed, *live, after]


async def test_events_sent_live_before_a_resume_are_not_sent_again_however_long_the_replay(
    hub: EventHub,
) -> None:
    topic = agent_topic(unique("agent"))
    seen = await hub.publish(topic, "x", {})
    missed = [await hub.publish(topic, "x", {"n": n}) for n in range(400)]  # more than RECENT_IDS
    sub = subscriber(topic, hub=hub)
    live = await hub.publish(topic, "x", {"n": "live"})  # arrives before the client asks to resume
    assert sent(sub).ids() == [live]
    assert await hub.resume(sub, seen, on_gap=no_gap) == len(missed)
    assert sent(sub).ids() == [live, *missed]


async def test_after_a_redis_outage_every_decision_is_made_again(
    store: Store, broker: RecordingBroker
) -> None:
    audience = OpenAudience()
    workspace_id = unique("ws")
    topic, agent = workspace_topic(workspace_id), agent_topic(unique("agent"))
    lost: list[str] = []
    hub = make_hub(store, broker, audience)
    sub = Subscriber(FakeConnection(), Principal("bob", "Bob"), BOTH_KINDS, on_topic_lost=lost.append)  # type: ignore[arg-type]
    hub.add(sub)
    hub.subscribe(sub, topic, Verdict(True, workspace_id))
    hub.subscribe(sub, agent, Verdict(True))
    audience.refused.add(topic)  # bob was removed while this instance could not hear of it
    hub.forget_decisions()
    assert audience.forgot_all
    assert agent not in sub.verdicts
    await wait_until(lambda: lost == [topic])
    assert sub.topics == {agent}
