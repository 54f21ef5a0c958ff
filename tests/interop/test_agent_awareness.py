"""A running agent appears in a stock Yjs client's awareness like a collaborator, and leaves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from server.config import Settings
from tests.interop.node import JS_DIR, node_binary
from tests.support.auth import client
from tests.support.server import run_server


async def test_agent_shows_in_yjs_awareness_and_disappears_after_completion(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    async with run_server(make_settings(agent_presence_linger=0.3)) as server:
        process = await asyncio.create_subprocess_exec(
            node_binary(),
            str(JS_DIR / "awareness_watch.mjs"),
            f"{server.ws_url}/ws/workspaces",
            workspace,
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None and process.stdin is not None

        async def next_peers(predicate: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
            async with asyncio.timeout(15):
                while True:
                    line = (await process.stdout.readline()).decode().strip()
                    assert line, "the Yjs client exited"
                    if line.startswith("["):
                        peers = json.loads(line)
                        if predicate(peers):
                            return peers

        def agent(peers: list[dict[str, Any]]) -> dict[str, Any] | None:
            return next((p["agent"] for p in peers if "agent" in p), None)

        try:
            async with asyncio.timeout(15):
                while (await process.stdout.readline()).decode().strip() != "SYNCED":
                    pass
            async with client(server.http_url) as http:
                events = "/agents/agent-writer/events"
                await http.post(
                    events,
                    json={
                        "type": "agent_execution_start",
                        "data": {"task": "draft", "workspace_id": workspace},
                    },
                )
                peers = await next_peers(lambda p: agent(p) is not None)
                assert agent(peers) == {
                    "id": "agent-writer",
                    "status": "running",
                    "progress": 0.0,
                    "current_step": "",
                }
                assert [p["user"]["name"] for p in peers if "agent" in p] == ["Agent agent-writer"]

                await http.post(
                    events,
                    json={
                        "type": "agent_execution_update",
                        "data": {"progress": 50, "current_step": "outlining"},
                    },
                )
                peers = await next_peers(lambda p: (agent(p) or {}).get("progress") == 50)
                assert agent(peers)["current_step"] == "outlining"  # type: ignore[index]

                await http.post(events, json={"type": "agent_execution_complete", "data": {"result": "ok"}})
                await next_peers(lambda p: (agent(p) or {}).get("status") == "completed")
                await next_peers(lambda p: agent(p) is None)  # gone after the linger time
        finally:
            process.stdin.close()
            await asyncio.wait_for(process.wait(), 15)
