"""The agent visibility rule and resume, across instances: decisions made where events are
delivered hold for events relayed from another instance, and follow access changes made there."""

from __future__ import annotations

import asyncio
import uuid

from tests.cluster.conftest import StartCluster
from tests.support.auth import client, token
from tests.support.events import EventClient, event_client

START = "agent_execution_start"
UPDATE = "agent_execution_update"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def ack(sender: EventClient, message_type: str, data: dict[str, object]) -> dict[str, object]:
    reply = await sender.command(message_type, data)
    assert reply["type"] == "ack", reply
    return reply["data"]


async def test_visibility_holds_for_events_from_another_instance(
    start_cluster: StartCluster, workspace: str
) -> None:
    a, b = await start_cluster(2)
    team, early = new_id("team"), new_id("early")
    async with client(a.http_url, "owner") as owner:
        created = await owner.post(
            "/workspaces", json={"id": workspace, "name": "p", "visibility": "private"}
        )
        assert created.status_code == 201
        assert (await owner.put(f"/workspaces/{workspace}/members/mia", json={"role": "viewer"})).is_success
        async with (
            event_client(f"{a.ws_url}/ws/agents?token={token('svc', role='service')}") as service,
            event_client(f"{a.ws_url}/ws/agents?token={token('alice')}") as alice,
            event_client(f"{b.ws_url}/ws?token={token('mia')}") as mia,
            event_client(f"{b.ws_url}/ws?token={token('mallory')}") as mallory,
            event_client(f"{b.ws_url}/ws?token={token('owner')}") as watcher,
        ):
            await ack(mallory, "subscribe_agent", {"agent_id": early})  # before it starts, on B
            await ack(mia, "join_workspace", {"workspace_id": workspace})
            await ack(service, START, {"agent_id": team, "workspace_id": workspace})
            await ack(alice, START, {"agent_id": early, "task": "alice's"})
            for sub in (mia, watcher):
                await ack(sub, "subscribe_agent", {"agent_id": team})
            refused = await mallory.command("subscribe_agent", {"agent_id": team})
            assert refused["data"]["code"] == "forbidden"
            seen = await ack(service, UPDATE, {"agent_id": team, "progress": 10})
            await mia.wait_for(lambda m: m.get("id") == seen["event_id"])
            await ack(alice, UPDATE, {"agent_id": early, "progress": 10})

            assert (await owner.delete(f"/workspaces/{workspace}/members/mia")).status_code == 204
            lost = await mia.wait_for(lambda m: m["type"] == "error")
            assert (lost["data"]["code"], lost["data"]["workspace_id"]) == ("access_revoked", workspace)
            hidden = await ack(service, UPDATE, {"agent_id": team, "progress": 20})
            await watcher.wait_for(lambda m: m.get("id") == hidden["event_id"])
            assert hidden["event_id"] not in [m["id"] for m in mia.events()]
            assert mallory.events() == []


async def test_resume_past_the_send_queue_on_another_instance(start_cluster: StartCluster) -> None:
    a, b = await start_cluster(2, MESSAGE_QUEUE_SIZE="20", RATE_LIMIT_EVENT_MESSAGES="0")
    agent_id = new_id("busy")
    async with event_client(f"{a.ws_url}/ws/agents?token={token('svc', role='service')}") as agent:
        seen = (await ack(agent, START, {"agent_id": agent_id}))["event_id"]
        missed: list[int] = []
        for _ in range(50):  # 500 events, 25 times the send queue
            replies = await asyncio.gather(
                *(agent.command(UPDATE, {"agent_id": agent_id, "progress": n}) for n in range(10))
            )
            missed += [int(r["data"]["event_id"]) for r in replies]
        async with event_client(f"{b.ws_url}/ws?token={token('watcher', role='admin')}") as late:
            await ack(late, "subscribe_agent", {"agent_id": agent_id})
            resumed = await ack(late, "resume", {"last_event_id": seen})
            assert resumed["replayed"] == len(missed)
            live = await ack(agent, UPDATE, {"agent_id": agent_id, "progress": 99})
            await late.wait_for(lambda m: m.get("id") == live["event_id"], timeout=30)
            assert [m["id"] for m in late.events()] == [*sorted(missed), live["event_id"]]
