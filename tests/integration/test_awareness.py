"""Presence: relayed to others, removed as soon as a connection closes, idle clients kept alive."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from pycrdt import Doc

from server.config import Settings
from tests.support.rawclient import awareness_update, parse_awareness, raw_client, step1_frame
from tests.support.server import RunningServer, run_server
from tests.support.wait import wait_until

AWARENESS = 1


async def test_presence_reaches_others_and_joiners(server: RunningServer, workspace: str) -> None:
    url = server.doc_url(workspace)
    async with raw_client(url) as alice, raw_client(url) as bob:
        await alice.send(awareness_update(111, 1, {"user": {"name": "Alice"}, "cursor": 4}))
        seen = parse_awareness(await bob.next_frame(kind=AWARENESS))
        assert seen == {111: {"user": {"name": "Alice"}, "cursor": 4}}
        async with raw_client(url) as carol:
            # A joiner gets everyone's presence right after the server's sync step 1.
            assert parse_awareness(await carol.next_frame(kind=AWARENESS))[111]["user"]["name"] == "Alice"


async def test_presence_is_removed_when_a_connection_drops(server: RunningServer, workspace: str) -> None:
    url = server.doc_url(workspace)
    async with raw_client(url) as watcher:
        async with raw_client(url) as leaving:
            await leaving.send(awareness_update(222, 3, {"user": {"name": "Gone soon"}}))
            assert 222 in parse_awareness(await watcher.next_frame(kind=AWARENESS))
            # No goodbye message: the socket is cut, as when a laptop lid closes.
            leaving.ws.transport.abort()
        removed = parse_awareness(await watcher.next_frame(kind=AWARENESS, timeout=5))
    assert removed == {222: None}
    assert server.services.rooms.rooms == {} or all(
        222 not in room.awareness.states for room in server.services.rooms.rooms.values()
    )


async def test_idle_client_receives_keepalives_and_stays_connected(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    interval = 0.4
    async with run_server(make_settings(heartbeat_interval=interval)) as server:
        async with raw_client(server.doc_url(workspace)) as idle:
            await idle.send(step1_frame(Doc()))
            loop = asyncio.get_running_loop()
            arrivals = []
            while len(arrivals) < 4:
                frame = await idle.next_frame(kind=AWARENESS, timeout=interval * 4)
                assert parse_awareness(frame) == {}  # an empty awareness update: ignored by clients
                arrivals.append(loop.time())
            gaps = [b - a for a, b in itertools.pairwise(arrivals)]
            assert max(gaps) < interval * 2
            assert len(server.services.rooms.rooms[next(iter(server.services.rooms.rooms))].connections) == 1


async def test_an_echoed_presence_stays_when_the_echoing_client_leaves(
    server: RunningServer, workspace: str
) -> None:
    # Stock y-websocket clients send back every awareness change they see, others' included.
    url = server.doc_url(workspace)
    async with raw_client(url) as owner, raw_client(url) as watcher:
        await owner.send(awareness_update(333, 1, {"user": {"name": "Owner"}}))
        assert 333 in parse_awareness(await watcher.next_frame(kind=AWARENESS))
        async with raw_client(url) as echoing:
            await echoing.next_frame(kind=AWARENESS)  # everyone's presence, on joining
            await echoing.send(awareness_update(333, 1, {"user": {"name": "Owner"}}))
            await echoing.send(awareness_update(444, 1, {"user": {"name": "Echoing"}}))
            assert 444 in parse_awareness(await watcher.next_frame(kind=AWARENESS))
        # Only the leaving client's own presence is withdrawn.
        assert parse_awareness(await watcher.next_frame(kind=AWARENESS)) == {444: None}
        room = next(iter(server.services.rooms.rooms.values()))
        assert room.awareness.states[333] == {"user": {"name": "Owner"}}


async def test_a_client_cannot_set_the_servers_own_presences(server: RunningServer, workspace: str) -> None:
    from server.agent_presence import agent_client_id

    url = server.doc_url(workspace)
    async with raw_client(url) as spoofer, raw_client(url) as watcher:
        await wait_until(lambda: len(server.services.rooms.rooms) == 1)
        room = next(iter(server.services.rooms.rooms.values()))
        room.set_server_awareness(agent_client_id("a-1"), 1, {"agent": {"id": "a-1", "status": "running"}})
        assert parse_awareness(await watcher.next_frame(kind=AWARENESS))
        fake = {"agent": {"id": "a-1", "status": "failed", "current_step": "FAKE"}}
        await spoofer.send(awareness_update(agent_client_id("a-1"), 2**50, fake))
        await spoofer.send(awareness_update(555, 1, {"user": {"name": "Spoofer"}}))
        # The spoofed entry is dropped; the connection and the rest of its presence are kept.
        assert parse_awareness(await watcher.next_frame(kind=AWARENESS)) == {
            555: {"user": {"name": "Spoofer"}}
        }
        assert room.awareness.states[agent_client_id("a-1")]["agent"]["status"] == "running"
