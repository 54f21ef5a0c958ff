"""``/agents`` over REST: reporting, state, history, visibility, validation."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable

from server.config import Settings
from tests.support.auth import client
from tests.support.server import RunningServer, run_server


async def test_state_and_history_follow_the_reports(auth_server: RunningServer, workspace: str) -> None:
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    async with (
        client(auth_server.http_url, "alice") as alice,
        client(auth_server.http_url, "bot", role="service") as bot,
    ):
        await alice.post("/workspaces", json={"id": workspace, "name": "w"})
        start = await bot.post(
            f"/agents/{agent}/events",
            json={
                "type": "agent_execution_start",
                "data": {"task": "index", "workspace_id": workspace, "timestamp": "2024-01-01T12:00:00Z"},
            },
        )
        assert start.status_code == 202 and start.json()["id"] > 0
        await bot.post(
            f"/agents/{agent}/events",
            json={"type": "agent_execution_update", "data": {"progress": 40, "current_step": "parsing"}},
        )
        status = (
            await alice.get("/agents/status", params={"workspace_id": workspace, "status": "running"})
        ).json()
        assert [(a["agent_id"], a["progress"], a["current_step"]) for a in status["data"]] == [
            (agent, 40.0, "parsing")
        ]
        await bot.post(
            f"/agents/{agent}/events",
            json={"type": "agent_execution_complete", "data": {"timestamp": "2024-01-01T12:02:30Z"}},
        )
        detail = (await alice.get(f"/agents/{agent}")).json()
        assert detail["agent"]["status"] == "completed" and detail["agent"]["execution_time"] == 150.0
        assert [e["type"] for e in detail["events"]] == [
            "agent_execution_start",
            "agent_execution_update",
            "agent_execution_complete",
        ]
        assert (
            await alice.get("/agents/status", params={"workspace_id": workspace, "status": "running"})
        ).json()["count"] == 0
        assert (await alice.get("/agents/status", params={"status": "sleeping"})).status_code == 422


async def test_reports_are_validated_and_authorised(auth_server: RunningServer, workspace: str) -> None:
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    async with client(auth_server.http_url, "alice") as alice, client(auth_server.http_url, "bob") as bob:
        await alice.post("/workspaces", json={"id": workspace, "name": "p", "visibility": "private"})
        bad = [  # (body, status, code, the field named in details)
            ({"type": "agent_execution_explode", "data": {}}, 400, "bad_request", None),
            (
                {"type": "agent_execution_start", "data": {"agent_id": "someone-else"}},
                400,
                "bad_request",
                None,
            ),
            (
                {"type": "agent_execution_update", "data": {"progress": -1}},
                422,
                "validation_failed",
                "progress",
            ),
            (
                {"type": "agent_execution_start", "data": {"unknown_field": 1}},
                422,
                "validation_failed",
                "unknown_field",
            ),
        ]
        for body, status, code, field in bad:
            response = await alice.post(f"/agents/{agent}/events", json=body)
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert error["code"] == code
            if field is not None:
                assert [d["loc"] for d in error["details"]] == [["data", field]]
        # bob may not attach an agent to a private workspace he is not in
        refused = await bob.post(
            f"/agents/{agent}/events",
            json={"type": "agent_execution_start", "data": {"workspace_id": workspace}},
        )
        assert refused.status_code == 403
        assert (
            await alice.post(
                f"/agents/{agent}/events",
                json={"type": "agent_execution_start", "data": {"workspace_id": workspace}},
            )
        ).status_code == 202
        # the private workspace's agent is invisible to bob, visible to its members
        assert (await bob.get(f"/agents/{agent}")).status_code == 404
        assert agent not in {a["agent_id"] for a in (await bob.get("/agents/status")).json()["data"]}
        assert (await bob.post(f"/agents/{agent}/subscribe")).status_code == 403
        assert (await alice.get(f"/agents/{agent}")).status_code == 200
        assert (await alice.get("/agents/never-reported")).status_code == 404


async def test_json_bodies_over_the_limit_are_refused_as_they_arrive(
    make_settings: Callable[..., Settings],
) -> None:
    async with run_server(make_settings(max_json_body_size=4096)) as server, client(server.http_url) as http:
        padded = {"type": "agent_execution_start", "data": {"task": "x" * 10_000}}
        declared = await http.post("/agents/big/events", json=padded)
        assert declared.status_code == 413 and declared.json()["error"]["code"] == "payload_too_large"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused while it arrives
            body = json.dumps(padded).encode()
            for start in range(0, len(body), 1000):
                yield body[start : start + 1000]

        streamed = await http.post(
            "/agents/big/events", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "payload_too_large"
        junk = await http.post(
            "/agents/big/events", json={"type": "agent_execution_start", "data": {}, "pad": 1}
        )
        assert junk.status_code == 422
