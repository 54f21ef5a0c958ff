"""``GET /events``: the event channel as Server-Sent Events, with the same topics and visibility
rule as ``/ws``, tokens from the header or the ``token`` parameter, and resume by ``Last-Event-ID``."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx

from server.config import Settings
from tests.support.auth import client, token
from tests.support.events import event_client, sse_client
from tests.support.server import RunningServer, run_server
from tests.support.wait import wait_until

START = "agent_execution_start"
UPDATE = "agent_execution_update"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def test_events_stream_with_ids_and_resume_with_last_event_id(server: RunningServer) -> None:
    agent_id = new_id("sse")
    async with event_client(f"{server.ws_url}/ws/agents") as agent:
        async with sse_client(server.http_url, f"/events?agent_id={agent_id}") as stream:
            welcome = stream.messages[0]
            assert welcome["type"] == "welcome" and welcome["sse_id"] is None
            ids = [
                (await agent.command(message_type, {"agent_id": agent_id, **data}))["data"]["event_id"]
                for message_type, data in ((START, {"task": "t"}), (UPDATE, {"progress": 50}))
            ]
            await stream.wait_for(lambda s: len(s.events()) == 2)
            assert [(m["sse_id"], m["id"], m["type"]) for m in stream.events()] == [
                (str(ids[0]), ids[0], START),
                (str(ids[1]), ids[1], UPDATE),
            ]
            assert stream.events()[1]["data"]["progress"] == 50
        missed = [
            (await agent.command(UPDATE, {"agent_id": agent_id, "progress": p}))["data"]["event_id"]
            for p in (60, 70)
        ]
        # What a reconnecting EventSource sends: the last id it saw.
        headers = {"Last-Event-ID": str(ids[1])}
        async with sse_client(server.http_url, f"/events?agent_id={agent_id}", headers=headers) as again:
            await again.wait_for(lambda s: len(s.events()) == 2)
            live = (await agent.command(UPDATE, {"agent_id": agent_id, "progress": 80}))["data"]["event_id"]
            await again.wait_for(lambda s: len(s.events()) == 3)
            assert [m["id"] for m in again.events()] == [*missed, live]


async def test_the_stream_follows_the_visibility_rule_and_stored_subscriptions(
    auth_server: RunningServer, workspace: str
) -> None:
    mine, theirs = new_id("mine"), new_id("theirs")
    owner, other = new_id("owner"), new_id("other")
    async with (
        client(auth_server.http_url, owner) as owner_http,
        event_client(f"{auth_server.ws_url}/ws/agents?token={token(other)}") as other_agent,
        event_client(f"{auth_server.ws_url}/ws/agents?token={token(owner)}") as owner_agent,
    ):
        await owner_http.post("/workspaces", json={"id": workspace, "name": "p", "visibility": "private"})
        assert (await owner_http.post(f"/agents/{theirs}/subscribe")).status_code == 200
        path = f"/events?workspace_id={workspace}&agent_id={mine}"
        async with sse_client(
            auth_server.http_url, path, headers={"Authorization": f"Bearer {token(owner)}"}
        ) as s:
            await other_agent.command(START, {"agent_id": theirs})  # subscribed, but not theirs to see
            started = await owner_agent.command(START, {"agent_id": mine, "workspace_id": workspace})
            await s.wait_for(
                lambda s: any(m.get("data", {}).get("update_type") == "agent_added" for m in s.events())
            )
            await s.wait_for(lambda s: started["data"]["event_id"] in [m["id"] for m in s.events()])
            assert theirs not in str(s.messages)
        # With the token as a parameter, as EventSource (which cannot set headers) does.
        async with sse_client(auth_server.http_url, f"/events?token={token(other)}") as stored:
            assert stored.messages[0]["data"]["user_id"] == other
        async with httpx.AsyncClient(base_url=auth_server.http_url) as http:
            forbidden = await http.get(f"/events?workspace_id={workspace}&token={token(other)}")
            assert (forbidden.status_code, forbidden.json()["error"]["code"]) == (403, "forbidden")
            hidden = await http.get(f"/events?agent_id={mine}&token={token(other)}")
            assert hidden.status_code == 403
            unknown = await http.get(f"/events?workspace_id=no-such-{workspace}&token={token(owner)}")
            assert unknown.status_code == 404
            anonymous = await http.get("/events")
            assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "unauthorized")
            bad = await http.get(
                "/events", headers={"Last-Event-ID": "x1", "Authorization": f"Bearer {token(owner)}"}
            )
            assert (bad.status_code, bad.json()["error"]["code"]) == (400, "bad_request")


async def test_an_idle_stream_gets_heartbeat_comments(make_settings: Callable[..., Settings]) -> None:
    async with run_server(make_settings(heartbeat_interval=0.2)) as server:
        async with sse_client(server.http_url, "/events") as stream:
            await stream.wait_for(lambda s: len(s.comments) >= 2)
            assert set(stream.comments) == {"ping"}
            assert stream.messages[0]["data"]["heartbeat_interval"] == 0.2


async def test_a_closed_stream_leaves_no_subscriber_behind(server: RunningServer) -> None:
    before = server.services.connections
    topic = f"agent:{new_id('gone')}"
    async with sse_client(server.http_url, f"/events?agent_id={topic.partition(':')[2]}"):
        assert server.services.connections == before + 1
        assert topic in server.services.events._topics
    await wait_until(lambda: server.services.connections == before)
    assert topic not in server.services.events._topics
