"""Heartbeats: the event channel says its interval, pings idle clients, answers theirs, and a peer
that went silent (answers nothing, not even the protocol's pings) is closed within two intervals,
its presence gone with it; a live client beside it stays connected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from server.config import Settings
from tests.support.events import event_client
from tests.support.server import run_server
from tests.support.wait import wait_until
from tests.support.yclient import yclient

SettingsFactory = Callable[..., Settings]


async def test_event_channel_heartbeat(make_settings: SettingsFactory) -> None:
    async with run_server(make_settings(heartbeat_interval=0.5)) as server:
        async with event_client(f"{server.ws_url}/ws") as client:
            welcome = client.messages[0]
            assert welcome["type"] == "welcome" and welcome["data"]["heartbeat_interval"] == 0.5
            ping = await client.wait_for(lambda m: m["type"] == "ping", timeout=3)
            assert ping["data"]["server_time"].endswith("Z")
            # Answering it is allowed (and needs no reply); the client's own ping is answered.
            await client.ws.send('{"type": "pong", "data": {}}')
            assert (await client.command("ping", {"n": 1}))["data"]["n"] == 1
            await asyncio.sleep(1.5)
            assert not [m for m in client.messages if m["type"] == "error"]
            assert len([m for m in client.messages if m["type"] == "ping"]) >= 3


async def test_a_silent_peer_is_closed_within_two_intervals_and_its_presence_goes(
    make_settings: SettingsFactory, workspace: str
) -> None:
    interval = 1.0
    async with run_server(make_settings(heartbeat_interval=interval)) as server:
        url = f"{server.ws_url}/ws"
        async with event_client(url) as watcher, event_client(url) as silent, event_client(url) as alive:
            await watcher.command("join_workspace", {"workspace_id": workspace})
            await alive.command("join_workspace", {"workspace_id": workspace})
            await silent.command("join_workspace", {"workspace_id": workspace})
            welcome = silent.messages[0]["data"]
            joined = await watcher.wait_for(
                lambda m: m["type"] == "user_joined" and m["data"]["user_id"] == welcome["user_id"]
            )
            assert joined
            # The peer goes silent: its machine stops reading the socket, so it answers no ping.
            silent.ws.transport.pause_reading()
            went_silent = time.monotonic()
            left = await watcher.wait_for(
                lambda m: m["type"] == "user_left" and m["data"]["user_id"] == welcome["user_id"],
                timeout=6 * interval,
            )
            assert left
            assert time.monotonic() - went_silent <= 2 * interval + 1.0  # two intervals, and a turn
            # The live client is still connected and served.
            assert (await alive.command("ping"))["type"] == "pong"
            silent.ws.transport.resume_reading()


async def test_document_sockets_keep_their_keep_alive(make_settings: SettingsFactory, workspace: str) -> None:
    async with run_server(make_settings(heartbeat_interval=0.5)) as server:
        async with yclient(server.doc_url(workspace)) as client:
            await asyncio.sleep(2)  # four intervals of silence: pings are answered, keep-alives sent
            assert client.ws.close_code is None
            await wait_until(lambda: server.services.connections == 1)
