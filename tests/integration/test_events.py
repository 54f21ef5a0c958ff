"""The event channel: the spec's Quick Start, ordered delivery, resume, subscriptions, presence, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed

from server.close_codes import CLOSE_1013_SEND_QUEUE_FULL
from server.config import Settings
from tests.interop.node import JS_DIR, node_binary
from tests.support.auth import SECRET, client, token
from tests.support.events import event_client
from tests.support.server import RunningServer, run_server
from tests.support.yclient import yclient

START = "agent_execution_start"
UPDATE = "agent_execution_update"
COMPLETE = "agent_execution_complete"


async def test_spec_quick_start_works_as_written(server: RunningServer) -> None:
    process = await asyncio.create_subprocess_exec(
        node_binary(),
        str(JS_DIR / "quickstart.mjs"),
        server.ws_url,
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(20):
        while (line := (await process.stdout.readline()).decode().strip()) != "READY":
            assert line, "quick start client ended early"
            lines.append(line)
    async with client(server.http_url) as http:
        for event_type, data in [
            (
                START,
                {"task": "Analyze market trends", "user_id": "user-456", "timestamp": "2024-01-01T12:00:00Z"},
            ),
            (
                UPDATE,
                {
                    "status": "running",
                    "progress": 60,
                    "current_step": "Processing data",
                    "timestamp": "2024-01-01T12:01:00Z",
                },
            ),
            (
                COMPLETE,
                {"status": "completed", "result": "Analysis complete", "timestamp": "2024-01-01T12:02:00Z"},
            ),
        ]:
            response = await http.post("/agents/agent-123/events", json={"type": event_type, "data": data})
            assert response.status_code == 202, response.text
    stdout, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, stderr.decode()
    messages = [json.loads(line) for line in lines + stdout.decode().splitlines() if line.startswith("{")]
    types = [m.get("type") for m in messages]
    assert types[1] == "welcome"
    agent_events = [m for m in messages if m.get("type", "").startswith("agent_execution")]
    assert [m["type"] for m in agent_events] == [START, UPDATE, COMPLETE]
    assert agent_events[1]["data"] | {"workspace_id": None} == {
        "agent_id": "agent-123",
        "status": "running",
        "progress": 60.0,
        "current_step": "Processing data",
        "timestamp": "2024-01-01T12:01:00Z",
        "workspace_id": None,
    }
    assert agent_events[2]["data"]["execution_time"] == 120.0  # computed: the publisher omitted it
    assert agent_events[0]["id"] < agent_events[1]["id"] < agent_events[2]["id"]


async def run_agent(publisher, agent_id: str, updates: int, *, workspace_id: str | None = None) -> list[int]:  # type: ignore[no-untyped-def]
    """Report a whole execution over the socket; returns the event ids from the acks."""
    ids = []
    start = {"agent_id": agent_id, "task": "test run"} | (
        {"workspace_id": workspace_id} if workspace_id else {}
    )
    for event_type, data in (
        [(START, start)]
        + [
            (UPDATE, {"agent_id": agent_id, "progress": (i + 1) * 10, "current_step": f"step {i + 1}"})
            for i in range(updates)
        ]
        + [(COMPLETE, {"agent_id": agent_id, "result": "done"})]
    ):
        ack = await publisher.command(event_type, data)
        assert ack["type"] == "ack", ack
        ids.append(ack["data"]["event_id"])
    return ids


async def test_two_subscribers_see_a_whole_execution_in_order(server: RunningServer) -> None:
    agent = "agent-order"
    async with (
        event_client(f"{server.ws_url}/ws") as a,
        event_client(f"{server.ws_url}/ws/agents") as b,
        event_client(f"{server.ws_url}/ws/agents") as publisher,
    ):
        for sub in (a, b):
            assert (await sub.command("subscribe_agent", {"agent_id": agent}))["type"] == "ack"
        ids = await run_agent(publisher, agent, 5)
        for sub in (a, b):
            await sub.wait_for(lambda m: m["type"] == COMPLETE)
            events = sub.events()
            assert [e["id"] for e in events] == ids
            assert [e["type"] for e in events] == [START] + [UPDATE] * 5 + [COMPLETE]
            assert [e["data"]["progress"] for e in events if e["type"] == UPDATE] == [10, 20, 30, 40, 50]


async def test_subscriber_resumes_and_misses_nothing_twice(server: RunningServer) -> None:
    agent = "agent-resume"
    async with event_client(f"{server.ws_url}/ws/agents") as publisher:
        async with event_client(f"{server.ws_url}/ws") as first:
            await first.command("subscribe_agent", {"agent_id": agent})
            await publisher.command(START, {"agent_id": agent})
            for progress in (10, 20):
                await publisher.command(UPDATE, {"agent_id": agent, "progress": progress})
            await first.wait_for(lambda m: m["type"] == UPDATE and m["data"]["progress"] == 20)
            seen = first.events()
        last_id = seen[-1]["id"]
        for progress in (30, 40, 50):  # while the subscriber is away
            await publisher.command(UPDATE, {"agent_id": agent, "progress": progress})
        async with event_client(f"{server.ws_url}/ws") as again:
            await again.command("subscribe_agent", {"agent_id": agent})
            ack = await again.command("resume", {"last_event_id": last_id})
            assert ack["type"] == "ack" and ack["data"]["replayed"] == 3
            await publisher.command(UPDATE, {"agent_id": agent, "progress": 60})
            await publisher.command(COMPLETE, {"agent_id": agent})
            await again.wait_for(lambda m: m["type"] == COMPLETE)
            resumed = again.events()
    everything = seen + resumed
    ids = [e["id"] for e in everything]
    assert ids == sorted(set(ids))  # in order, no duplicates
    assert [e["data"].get("progress") for e in everything if e["type"] == UPDATE] == [10, 20, 30, 40, 50, 60]


async def test_rest_subscriptions_apply_to_every_connection_and_survive_reconnects(
    server: RunningServer,
) -> None:
    agent, marker = "agent-rest-sub", "agent-marker"
    async with client(server.http_url, "carol") as carol:
        assert (await carol.post(f"/agents/{agent}/subscribe")).json() == {
            "agent_id": agent,
            "subscribed": True,
        }
        url = f"{server.ws_url}/ws?token={token('carol')}"
        for _ in range(2):  # a fresh connection each time: the subscription is the user's, not the socket's
            async with event_client(url) as tab:
                await carol.post(f"/agents/{agent}/events", json={"type": START, "data": {}})
                start = await tab.wait_for(lambda m: m["type"] == START)
                assert start["data"]["agent_id"] == agent
        async with event_client(url) as tab:
            await tab.command("subscribe_agent", {"agent_id": marker})
            assert (await carol.post(f"/agents/{agent}/unsubscribe")).json()["subscribed"] is False
            await carol.post(f"/agents/{agent}/events", json={"type": UPDATE, "data": {"progress": 5}})
            await carol.post(f"/agents/{marker}/events", json={"type": START, "data": {}})
            await tab.wait_for(lambda m: m["type"] == START and m["data"]["agent_id"] == marker)
            assert not [e for e in tab.events(UPDATE) if e["data"]["agent_id"] == agent]


async def test_user_joined_and_left_once_for_two_tabs(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    async with run_server(make_settings(jwt_secret=SECRET)) as server:
        async with client(server.http_url, "alice") as alice:
            await alice.post("/workspaces", json={"id": workspace, "name": "team"})
            watch_url = f"{server.ws_url}/ws/workspaces?token={token('alice')}"
            async with event_client(watch_url) as watcher:
                await watcher.command("join_workspace", {"workspace_id": workspace})
                bob_doc = yclient(server.doc_url(workspace) + f"?token={token('bob')}")
                await bob_doc.__aenter__()
                joined = await watcher.wait_for(
                    lambda m: m["type"] == "user_joined" and m["data"]["user_id"] == "bob"
                )
                assert joined["data"]["username"] == "Bob"
                async with event_client(f"{server.ws_url}/ws?token={token('bob')}") as bob_events:
                    await bob_events.command("join_workspace", {"workspace_id": workspace})
                    await bob_doc.__aexit__(None, None, None)  # first tab closes: bob is still here
                    await alice.patch(f"/workspaces/{workspace}", json={"name": "marker"})
                    await watcher.wait_for(
                        lambda m: m.get("data", {}).get("update_type") == "workspace_renamed"
                    )
                    bob_events_seen = [
                        m for m in watcher.events("user_joined", "user_left") if m["data"]["user_id"] == "bob"
                    ]
                    assert [m["type"] for m in bob_events_seen] == ["user_joined"]
                left = await watcher.wait_for(
                    lambda m: m["type"] == "user_left" and m["data"]["user_id"] == "bob"
                )
                assert left["id"] > joined["id"]


INVALID = [
    (b"\x00\x01", "unsupported_frame"),
    ("not json", "invalid_json"),
    ("[1, 2]", "invalid_message"),
    ('{"type": 5}', "invalid_message"),
    ('{"type": "launch_rockets", "data": {}}', "unknown_type"),
    ('{"type": "subscribe_agent", "data": {}}', "validation_failed"),
    ('{"type": "agent_execution_update", "data": {"agent_id": "a", "progress": 150}}', "validation_failed"),
    (
        '{"type": "agent_execution_update", "data": {"agent_id": "a", "status": "exploded"}}',
        "validation_failed",
    ),
    (
        '{"type": "agent_execution_start", "data": {"agent_id": "a", "timestamp": "yesterday"}}',
        "validation_failed",
    ),
    (
        '{"type": "agent_execution_start", "data": {"agent_id": "a", "task": "' + "x" * 70_000 + '"}}',
        "validation_failed",
    ),
    ('{"type": "resume", "data": {"last_event_id": -1}}', "validation_failed"),
    # Values JSON cannot carry, or that have no UTC equivalent, never get further than here.
    (
        '{"type": "agent_execution_start",'
        ' "data": {"agent_id": "a", "timestamp": "9999-12-31T23:59:59-23:59"}}',
        "validation_failed",
    ),
    (
        '{"type": "agent_execution_complete", "data": {"agent_id": "a", "execution_time": Infinity}}',
        "invalid_json",
    ),
    ('{"type": "agent_execution_update", "data": {"agent_id": "a", "progress": NaN}}', "invalid_json"),
    (
        '{"type": "agent_execution_complete", "data": {"agent_id": "a", "execution_time": 1e400}}',
        "invalid_json",
    ),
    ('{"type": "ping", "data": {"n": ' + "9" * 5000 + "}}", "invalid_json"),
    ('{"type": "resume", "data": {"last_event_id": 9223372036854775808}}', "validation_failed"),
    (
        '{"type": "agent_execution_start", "data": {"agent_id": "a", "task": "nul \\u0000 inside"}}',
        "validation_failed",
    ),
    ("[" * 100_000 + "]" * 100_000, "invalid_json"),
    ('{"type": "ping", "data": {"n": ' + "9" * 400 + "}}", "invalid_json"),  # beyond a double's range
    (
        '{"type": "agent_execution_start", "data": {"agent_id": "a", "timestamp": 253402300800}}',
        "validation_failed",
    ),
    ('{"type": "resume", "data": {"last_event_id": true}}', "validation_failed"),
    ('{"type": "resume", "data": {"last_event_id": 1e3}}', "validation_failed"),
]


@pytest.mark.parametrize(("raw", "code"), INVALID, ids=[code + str(i) for i, (_, code) in enumerate(INVALID)])
async def test_invalid_messages_get_an_error_and_the_stream_stays_open(
    server: RunningServer, raw: object, code: str
) -> None:
    async with event_client(f"{server.ws_url}/ws") as sub:
        await sub.ws.send(raw)  # type: ignore[arg-type]
        error = await sub.wait_for(lambda m: m["type"] == "error")
        assert error["data"]["code"] == code and error["data"]["message"]
        pong = await sub.command("ping", {"n": 1})
        assert pong["type"] == "pong" and pong["data"]["n"] == 1


async def test_pong_keeps_the_servers_time(server: RunningServer) -> None:
    async with event_client(f"{server.ws_url}/ws") as sub:
        pong = await sub.command("ping", {"server_time": "spoofed", "n": 1})
    assert pong["data"]["n"] == 1 and pong["data"]["server_time"] != "spoofed"


async def test_an_event_frame_over_its_limit_is_closed_with_1009(
    make_settings: Callable[..., Settings],
) -> None:
    async with run_server(make_settings(max_event_message_size=64 * 1024)) as server:
        async with event_client(f"{server.ws_url}/ws") as sub:
            message = json.dumps({"type": "ping", "data": {"pad": "x" * 100_000}})
            await sub.ws.send(message)
            with pytest.raises(ConnectionError):
                await sub.wait_for(lambda _: False)
            assert (sub.ws.close_code, sub.ws.close_reason) == (
                1009,
                f"message too big: {len(message)} > {64 * 1024} bytes",
            )


async def test_a_bad_last_event_id_parameter_is_an_error(server: RunningServer) -> None:
    for value in ("\u00b2", "-1", "9223372036854775808", "1e3"):
        async with event_client(f"{server.ws_url}/ws?last_event_id={value}") as sub:
            error = await sub.wait_for(lambda m: m["type"] == "error")
            assert error["data"]["code"] == "bad_request"
            assert (await sub.command("ping"))["type"] == "pong"


async def test_rest_refuses_values_it_cannot_store(server: RunningServer) -> None:
    async with client(server.http_url) as http:
        offset = await http.get("/workspaces", params={"offset": 2**63})
        assert offset.status_code == 422 and offset.json()["error"]["code"] == "invalid_request"
        infinite = await http.post(
            "/agents/a-inf/events",
            content=b'{"type": "agent_execution_start", "data": {"task": "t"}}',
            headers={"Content-Type": "application/json"},
        )
        assert infinite.status_code == 202
        for body in (
            b'{"type": "agent_execution_complete", "data": {"execution_time": Infinity}}',
            b'{"type": "agent_execution_complete", "data": {"execution_time": 1e400}}',
            b'{"type": "agent_execution_update", "data": {"timestamp": "0001-01-01T00:00:00+23:59"}}',
        ):
            refused = await http.post(
                "/agents/a-inf/events", content=body, headers={"Content-Type": "application/json"}
            )
            assert refused.status_code in (400, 422), refused.text
        detail = await http.get("/agents/a-inf")
        assert detail.status_code == 200 and detail.json()["agent"]["execution_time"] is None


async def test_refused_topics_get_an_error(auth_server: RunningServer, workspace: str) -> None:
    async with client(auth_server.http_url, "alice") as alice:
        await alice.post("/workspaces", json={"id": workspace, "name": "p", "visibility": "private"})
    async with (
        event_client(f"{auth_server.ws_url}/ws?token={token('bob')}") as bob,
        event_client(f"{auth_server.ws_url}/ws/agents?token={token('bob')}") as agents_only,
    ):
        forbidden = await bob.command("join_workspace", {"workspace_id": workspace})
        assert (forbidden["type"], forbidden["data"]["code"]) == ("error", "forbidden")
        unknown = await bob.command("join_workspace", {"workspace_id": "no-such-workspace"})
        assert unknown["data"]["code"] == "unknown_workspace"
        wrong_endpoint = await agents_only.command("join_workspace", {"workspace_id": workspace})
        assert wrong_endpoint["data"]["code"] == "unsupported_on_endpoint"
        not_started = await bob.command(UPDATE, {"agent_id": "never-started", "progress": 1})
        assert not_started["data"]["code"] == "forbidden"
        await bob.command(START, {"agent_id": "bobs-agent"})
    async with event_client(f"{auth_server.ws_url}/ws?token={token('carol')}") as carol:
        hijack = await carol.command(UPDATE, {"agent_id": "bobs-agent", "progress": 99})
        assert (
            hijack["data"]["code"] == "forbidden" and "started by someone else" in hijack["data"]["message"]
        )


async def test_gap_older_than_retention_asks_for_resync(make_settings: Callable[..., Settings]) -> None:
    async with run_server(make_settings(event_retention=10)) as server:
        async with event_client(f"{server.ws_url}/ws/agents") as publisher:
            await publisher.command(START, {"agent_id": "agent-old"})
            first = (await publisher.command(UPDATE, {"agent_id": "agent-old", "progress": 1}))["data"][
                "event_id"
            ]
            for i in range(210):  # retention trims every 200 events, keeping the newest 10
                await publisher.command(UPDATE, {"agent_id": "agent-old", "progress": i % 100})
        async with event_client(f"{server.ws_url}/ws") as late:
            await late.command("subscribe_agent", {"agent_id": "agent-old"})
            await late.command("resume", {"last_event_id": first})
            resync = await late.wait_for(lambda m: m["type"] == "resync_required")
    assert [a["agent_id"] for a in resync["data"]["agents"]] == ["agent-old"]
    assert resync["data"]["agents"][0]["status"] == "running"


async def test_consumer_that_stops_reading_is_cut_off(make_settings: Callable[..., Settings]) -> None:
    # The publisher floods on purpose (tests/protection covers its rate limits).
    settings = make_settings(message_queue_size=20, rate_limit_event_messages=0, rate_limit_event_bytes=0)
    async with run_server(settings) as server:
        url = f"{server.ws_url}/ws"
        async with (
            event_client(url, max_queue=1) as stalled,
            event_client(url) as healthy,
            event_client(f"{server.ws_url}/ws/agents") as publisher,
        ):
            for sub in (stalled, healthy):
                await sub.command("subscribe_agent", {"agent_id": "agent-flood"})
            stalled._reader.cancel()  # stop reading: the socket buffers fill, then its queue
            await publisher.command(START, {"agent_id": "agent-flood"})
            result = "r" * 19_000  # large events fill the loopback socket buffers (several MB) quickly
            sent = 1
            while not stalled_cut_off(server) and sent < 3000:
                await publisher.command(COMPLETE, {"agent_id": "agent-flood", "result": result})
                sent += 1
            assert stalled_cut_off(server), "the stalled consumer was never cut off"
            last = (await publisher.command(UPDATE, {"agent_id": "agent-flood", "progress": 1}))["data"][
                "event_id"
            ]
            await healthy.wait_for(lambda m: m.get("id") == last, timeout=30)
            assert len(healthy.events()) == sent + 1  # the healthy subscriber missed nothing
            code = await stalled_close_code(stalled)
    assert code == 1013


def stalled_cut_off(server: RunningServer) -> bool:
    return any(
        sub.conn.close_code is CLOSE_1013_SEND_QUEUE_FULL
        for subs in server.services.events._by_user.values()
        for sub in subs
    )


async def stalled_close_code(stalled) -> int | None:  # type: ignore[no-untyped-def]
    """Drain what the stalled client left unread; the close frame comes after it."""

    async def drain() -> None:
        async with asyncio.timeout(30):
            while True:
                await stalled.ws.recv()

    with pytest.raises(ConnectionClosed):
        await drain()
    return stalled.ws.close_code


async def test_document_created_and_deleted_reach_workspace_subscribers(
    server: RunningServer, workspace: str
) -> None:
    async with event_client(f"{server.ws_url}/ws/workspaces") as watcher:
        await watcher.command("join_workspace", {"workspace_id": workspace})  # creates it (open server)
        async with yclient(server.doc_url(workspace, "specs/api.md")) as editor:
            editor.text().insert(0, "draft")
            created = await watcher.wait_for(
                lambda m: m.get("data", {}).get("update_type") == "document_created"
            )
            assert created["data"]["path"] == "specs/api.md"
            async with client(server.http_url) as http:
                assert (
                    await http.delete(f"/workspaces/{workspace}/documents/specs/api.md")
                ).status_code == 204
                assert (
                    await http.delete(f"/workspaces/{workspace}/documents/specs/api.md")
                ).status_code == 404
            await editor.ws.wait_closed()
            assert editor.ws.close_code == 4404
        deleted = await watcher.wait_for(lambda m: m.get("data", {}).get("update_type") == "document_deleted")
        assert deleted["data"]["path"] == "specs/api.md" and deleted["id"] > created["id"]
    async with yclient(server.doc_url(workspace, "specs/api.md")) as fresh:
        assert str(fresh.text()) == ""
