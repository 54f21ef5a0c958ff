"""Who may see an agent, checked where events are delivered: services and admins, whoever
started it, the user named in its ``user_id``, and whoever may read its workspace. The timing,
squatting and revocation cases, over WebSocket and REST."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

from server.config import Settings
from tests.support.auth import SECRET, client, token
from tests.support.events import EventClient, event_client
from tests.support.server import RunningServer, run_server

START = "agent_execution_start"
UPDATE = "agent_execution_update"
COMPLETE = "agent_execution_complete"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ws(server: RunningServer, user: str, endpoint: str = "/ws", role: str | None = None) -> str:
    return f"{server.ws_url}{endpoint}?token={token(user, role=role)}"


async def ack(client_: EventClient, message_type: str, data: dict[str, object]) -> dict[str, object]:
    reply = await client_.command(message_type, data)
    assert reply["type"] == "ack", reply
    return reply["data"]


async def marker(publisher: EventClient, watcher: EventClient, agent_id: str) -> int:
    """Publish one more event of an agent ``watcher`` may see and wait for it: everything
    published before it has been delivered (or withheld) by then."""
    event_id = (await ack(publisher, UPDATE, {"agent_id": agent_id, "progress": 1}))["event_id"]
    await watcher.wait_for(lambda m: m.get("id") == event_id)
    return int(event_id)  # type: ignore[call-overload]


async def test_subscribing_before_an_agent_starts_shows_nothing_that_is_not_yours(
    auth_server: RunningServer,
) -> None:
    agent_id = new_id("early")
    async with (
        event_client(ws(auth_server, "mallory")) as mallory,
        event_client(ws(auth_server, "alice", "/ws/agents")) as alice,
        client(auth_server.http_url, "mallory") as mallory_http,
    ):
        await ack(mallory, "subscribe_agent", {"agent_id": agent_id})  # accepted: nothing to see yet
        assert (await mallory_http.post(f"/agents/{agent_id}/subscribe")).status_code == 200
        await ack(alice, START, {"agent_id": agent_id, "task": "alice's secret task"})
        await ack(alice, UPDATE, {"agent_id": agent_id, "progress": 50, "current_step": "secret step"})
        await ack(alice, COMPLETE, {"agent_id": agent_id, "result": "secret result"})
        # A later event of an agent mallory may see proves the earlier ones were withheld.
        own = new_id("mallorys")
        async with event_client(ws(auth_server, "mallory", "/ws/agents")) as mallory_agent:
            await ack(mallory_agent, START, {"agent_id": own})
            await ack(mallory, "subscribe_agent", {"agent_id": own})
            await marker(mallory_agent, mallory, own)
        assert {m["data"]["agent_id"] for m in mallory.events()} == {own}
        assert "secret" not in str(mallory.messages)
        refused = await mallory.command("subscribe_agent", {"agent_id": agent_id})
        assert refused["data"]["code"] == "forbidden"  # now that it exists and is not theirs
        assert (await mallory_http.get(f"/agents/{agent_id}")).status_code == 404


async def test_the_user_an_agent_works_for_sees_it_everywhere(auth_server: RunningServer) -> None:
    agent_id = new_id("for-alice")
    user = new_id("alice")
    async with event_client(ws(auth_server, "svc", "/ws/agents", role="service")) as service:
        async with (
            event_client(ws(auth_server, user)) as alice,
            client(auth_server.http_url, user) as alice_http,
        ):
            await ack(alice, "subscribe_agent", {"agent_id": agent_id})  # before it starts
            assert (await alice_http.post(f"/agents/{agent_id}/subscribe")).status_code == 200
            started = await ack(service, START, {"agent_id": agent_id, "user_id": user, "task": "t"})
            first = await alice.wait_for(lambda m: m.get("id") == started["event_id"])
            assert first["data"]["user_id"] == user
            status = {a["agent_id"]: a for a in (await alice_http.get("/agents/status")).json()["data"]}
            assert status[agent_id]["user_id"] == user and status[agent_id]["started_by"] == "svc"
            assert (await alice_http.get(f"/agents/{agent_id}")).status_code == 200
            last_seen = first["id"]
        missed = [
            (await ack(service, UPDATE, {"agent_id": agent_id, "progress": p}))["event_id"] for p in (10, 20)
        ]
        # The REST subscription survives the reconnection; resume gives exactly what was missed.
        async with event_client(f"{ws(auth_server, user)}&last_event_id={last_seen}") as again:
            await again.wait_for(lambda m: m.get("id") == missed[-1])
            done = await ack(service, COMPLETE, {"agent_id": agent_id})
            await again.wait_for(lambda m: m.get("id") == done["event_id"])
            assert [m["id"] for m in again.events()] == [*missed, done["event_id"]]
            resubscribed = await again.command("subscribe_agent", {"agent_id": agent_id})
            assert resubscribed["type"] == "ack"


async def test_a_user_may_name_only_themself_as_user_id(auth_server: RunningServer) -> None:
    async with event_client(ws(auth_server, "mallory", "/ws/agents")) as mallory:
        refused = await mallory.command(START, {"agent_id": new_id("fake"), "user_id": "alice"})
        assert refused["data"]["code"] == "forbidden" and "user_id" in refused["data"]["message"]
        await ack(mallory, START, {"agent_id": new_id("own"), "user_id": "mallory"})


async def test_a_squatted_id_gives_nothing_of_a_later_execution(
    auth_server: RunningServer, workspace: str
) -> None:
    agent_id = new_id("squatted")
    async with client(auth_server.http_url, "owner") as owner:
        created = await owner.post(
            "/workspaces", json={"id": workspace, "name": "p", "visibility": "private"}
        )
        assert created.status_code == 201
    async with (
        event_client(ws(auth_server, "mallory")) as mallory,
        event_client(ws(auth_server, "svc", "/ws/agents", role="service")) as service,
        event_client(ws(auth_server, "owner")) as owner_events,
        client(auth_server.http_url, "mallory") as mallory_http,
    ):
        await ack(mallory, START, {"agent_id": agent_id})  # mallory takes the id first
        await ack(mallory, "subscribe_agent", {"agent_id": agent_id})
        await ack(owner_events, "join_workspace", {"workspace_id": workspace})
        await ack(service, START, {"agent_id": agent_id, "workspace_id": workspace, "task": "private task"})
        await ack(owner_events, "subscribe_agent", {"agent_id": agent_id})
        await marker(service, owner_events, agent_id)
        assert not [m for m in mallory.events() if m["type"] != START or "private" in str(m)]
        assert (await mallory_http.get(f"/agents/{agent_id}")).status_code == 404
        status = (await mallory_http.get("/agents/status")).json()
        assert agent_id not in [a["agent_id"] for a in status["data"]]
        completed = await mallory_http.post(f"/agents/{agent_id}/events", json={"type": COMPLETE})
        assert completed.status_code == 403


async def test_a_removed_member_stops_receiving_the_workspace_and_its_agents_at_once(
    auth_server: RunningServer, workspace: str
) -> None:
    agent_id = new_id("team")
    async with client(auth_server.http_url, "owner") as owner:
        await owner.post("/workspaces", json={"id": workspace, "name": "p", "visibility": "private"})
        added = await owner.put(f"/workspaces/{workspace}/members/carol", json={"role": "viewer"})
        assert added.status_code in (200, 201)
        async with (
            event_client(ws(auth_server, "carol")) as carol,
            event_client(ws(auth_server, "svc", "/ws/agents", role="service")) as service,
        ):
            await ack(carol, "join_workspace", {"workspace_id": workspace})
            await ack(service, START, {"agent_id": agent_id, "workspace_id": workspace})
            await ack(carol, "subscribe_agent", {"agent_id": agent_id})
            await marker(service, carol, agent_id)
            assert (await owner.delete(f"/workspaces/{workspace}/members/carol")).status_code == 204
            lost = await carol.wait_for(lambda m: m["type"] == "error")
            assert lost["data"] == {
                "code": "access_revoked",
                "message": f"you may no longer read workspace {workspace!r}; it was left",
                "workspace_id": workspace,
            }
            count = len(carol.events())
            hidden = await ack(service, UPDATE, {"agent_id": agent_id, "progress": 90})
            await owner.patch(f"/workspaces/{workspace}", json={"name": "renamed"})
            async with event_client(ws(auth_server, "owner")) as watcher:
                await ack(watcher, "subscribe_agent", {"agent_id": agent_id})
                await marker(service, watcher, agent_id)
            assert len(carol.events()) == count
            assert hidden["event_id"] not in [m["id"] for m in carol.events()]


async def test_a_workspace_made_private_hides_it_and_its_agents_from_non_members(
    auth_server: RunningServer, workspace: str
) -> None:
    agent_id = new_id("open")
    async with client(auth_server.http_url, "owner") as owner:
        await owner.post("/workspaces", json={"id": workspace, "name": "o", "visibility": "open"})
        async with (
            event_client(ws(auth_server, "svc", "/ws/agents", role="service")) as service,
            event_client(ws(auth_server, "eve", "/ws/agents")) as eve,
        ):
            await ack(service, START, {"agent_id": agent_id, "workspace_id": workspace})
            await ack(eve, "subscribe_agent", {"agent_id": agent_id})  # the workspace is open
            await marker(service, eve, agent_id)
            changed = await owner.patch(f"/workspaces/{workspace}", json={"visibility": "private"})
            assert changed.status_code == 200
            after = await ack(service, UPDATE, {"agent_id": agent_id, "progress": 70})
            async with event_client(ws(auth_server, "owner")) as member:
                await ack(member, "subscribe_agent", {"agent_id": agent_id})
                await marker(service, member, agent_id)
            assert after["event_id"] not in [m["id"] for m in eve.events()]


async def test_long_step_texts_are_accepted_and_limits_name_the_field(
    make_settings: Callable[..., Settings],
) -> None:
    async with run_server(make_settings(agent_step_max_length=100)) as server:
        agent_id = new_id("wordy")
        async with event_client(f"{server.ws_url}/ws/agents") as agent:
            await ack(agent, START, {"agent_id": agent_id, "task": "t" * 20_000})
            await ack(agent, UPDATE, {"agent_id": agent_id, "current_step": "s" * 100})
            refused = await agent.command(UPDATE, {"agent_id": agent_id, "current_step": "s" * 101})
            assert refused["data"]["code"] == "validation_failed"
            assert refused["data"]["details"] == [
                {
                    "loc": ["data", "current_step"],
                    "msg": "at most 100 characters (AGENT_STEP_MAX_LENGTH); got 101",
                }
            ]
        async with client(server.http_url) as http:
            response = await http.post(
                f"/agents/{agent_id}/events", json={"type": UPDATE, "data": {"current_step": "s" * 101}}
            )
            assert response.status_code == 422
            assert response.json()["error"]["code"] == "validation_failed"
            assert response.json()["error"]["details"][0]["loc"] == ["data", "current_step"]


async def test_default_limits_take_a_step_of_a_few_kilobytes(server: RunningServer) -> None:
    agent_id = new_id("llm")
    step = "Reasoning: " + "because " * 500  # about 4 KB, as LLM agents write
    async with event_client(f"{server.ws_url}/ws/agents") as agent:
        await ack(agent, START, {"agent_id": agent_id, "task": "summarise " * 2_000})
        reply = await ack(agent, UPDATE, {"agent_id": agent_id, "current_step": step})
        async with client(server.http_url) as http:
            state = (await http.get(f"/agents/{agent_id}")).json()
        assert state["agent"]["current_step"] == step
        assert state["events"][-1]["id"] == reply["event_id"]


async def test_resume_past_the_send_queue_catches_up_in_order(make_settings: Callable[..., Settings]) -> None:
    async with run_server(make_settings(message_queue_size=20, rate_limit_event_messages=0)) as server:
        agent_id = new_id("busy")
        async with event_client(f"{server.ws_url}/ws/agents") as agent:
            seen = (await ack(agent, START, {"agent_id": agent_id}))["event_id"]
            missed = []
            for chunk in range(200):  # 2,000 events, 100 times the send queue
                replies = await asyncio.gather(
                    *(agent.command(UPDATE, {"agent_id": agent_id, "progress": n}) for n in range(10))
                )
                missed += [r["data"]["event_id"] for r in replies]
                assert chunk == len(missed) // 10 - 1
            async with event_client(f"{server.ws_url}/ws") as late:
                await ack(late, "subscribe_agent", {"agent_id": agent_id})
                resumed = await ack(late, "resume", {"last_event_id": seen})
                assert resumed["replayed"] == len(missed)
                live = await ack(agent, COMPLETE, {"agent_id": agent_id})
                await late.wait_for(lambda m: m.get("id") == live["event_id"], timeout=30)
                assert [m["id"] for m in late.events()] == [*sorted(missed), live["event_id"]]
                assert late.ws.close_code is None


async def test_an_admin_sees_every_agent(auth_server: RunningServer) -> None:
    agent_id = new_id("any")
    async with event_client(ws(auth_server, "alice", "/ws/agents")) as alice:
        await ack(alice, START, {"agent_id": agent_id})
        async with client(auth_server.http_url, "root", role="admin") as admin:
            assert (await admin.get(f"/agents/{agent_id}")).status_code == 200


async def test_resync_required_lists_only_agents_you_may_see(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(jwt_secret=SECRET, event_retention=10, rate_limit_event_messages=0)
    async with run_server(settings) as server:
        hidden, own = new_id("hidden"), new_id("own")
        async with (
            event_client(ws(server, "mallory")) as mallory,
            event_client(ws(server, "svc", "/ws/agents", role="service")) as service,
        ):
            first = (await ack(mallory, START, {"agent_id": own}))["event_id"]
            await ack(mallory, "subscribe_agent", {"agent_id": own})
            await ack(mallory, "subscribe_agent", {"agent_id": hidden})  # before it exists
            await ack(service, START, {"agent_id": hidden, "task": "secret task"})
            for n in range(120):  # the log is trimmed past `first`
                await ack(service, UPDATE, {"agent_id": hidden, "progress": n % 100})
            await ack(mallory, "resume", {"last_event_id": first - 1})
            resync = await mallory.wait_for(lambda m: m["type"] == "resync_required")
        assert [a["agent_id"] for a in resync["data"]["agents"]] == [own]
        assert "secret" not in str(mallory.messages)


async def test_a_new_executions_owners_do_not_get_the_earlier_executions_events(
    auth_server: RunningServer,
) -> None:
    agent_id = new_id("reused")
    ursula, vic = new_id("ursula"), new_id("vic")
    async with event_client(ws(auth_server, ursula, "/ws/agents")) as first_owner:
        await ack(first_owner, START, {"agent_id": agent_id, "task": "ursula's private task"})
        await ack(first_owner, COMPLETE, {"agent_id": agent_id, "result": "ursula's private result"})
    async with event_client(ws(auth_server, "svc", "/ws/agents", role="service")) as service:
        started = await ack(service, START, {"agent_id": agent_id, "user_id": vic, "task": "vic's"})
        async with client(auth_server.http_url, vic) as vic_http:
            detail = (await vic_http.get(f"/agents/{agent_id}")).json()
        assert [e["id"] for e in detail["events"]] == [started["event_id"]]
        async with event_client(ws(auth_server, vic)) as vic_events:
            await ack(vic_events, "subscribe_agent", {"agent_id": agent_id})
            replay = await ack(vic_events, "resume", {"last_event_id": 0})
            await vic_events.wait_for(lambda m: m.get("id") == started["event_id"])
            assert replay["replayed"] == 1
            assert "ursula" not in str(vic_events.messages)
        async with client(auth_server.http_url, ursula) as ursula_http:
            assert (await ursula_http.get(f"/agents/{agent_id}")).status_code == 404


async def test_a_reader_that_keeps_up_gets_a_burst_larger_than_its_send_queue(
    make_settings: Callable[..., Settings],
) -> None:
    async with run_server(make_settings(rate_limit_event_messages=0, rate_limit_event_bytes=0)) as server:
        agent_id = new_id("burst")
        queue = server.services.settings.message_queue_size
        async with (
            event_client(f"{server.ws_url}/ws/agents") as publisher,
            event_client(f"{server.ws_url}/ws/agents") as reader,
        ):
            await ack(reader, "subscribe_agent", {"agent_id": agent_id})
            await ack(publisher, START, {"agent_id": agent_id})
            count = 2 * queue
            for n in range(count):  # pipelined: no waiting for acks
                await publisher.ws.send(
                    json.dumps({"type": UPDATE, "data": {"agent_id": agent_id, "progress": n % 100}})
                )
            await reader.wait_for(lambda _: len(reader.events(UPDATE)) == count, timeout=60)
            await publisher.wait_for(
                lambda _: sum(m["type"] == "ack" for m in publisher.messages) == count + 1
            )
            ids = [m["id"] for m in reader.events()]
            assert ids == sorted(ids) and len(set(ids)) == count + 1
            assert reader.ws.close_code is None and publisher.ws.close_code is None
