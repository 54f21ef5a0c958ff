"""The event channel, presence and access changes across instances."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from websockets.exceptions import ConnectionClosed

from tests.cluster.conftest import StartCluster
from tests.cluster.test_documents import create_workspace, url_for
from tests.integration.test_events import COMPLETE, UPDATE, run_agent
from tests.support.auth import client, token
from tests.support.events import event_client
from tests.support.rawclient import raw_client
from tests.support.wait import wait_until

T = TypeVar("T")


async def test_agent_events_reach_every_instance_in_order_and_resume_anywhere(
    start_cluster: StartCluster, workspace: str
) -> None:
    a, b, c = await start_cluster(3)
    await create_workspace(a, workspace)  # open: its agents are visible to everyone
    agent = "agent-cluster"
    publisher_url = f"{a.ws_url}/ws/agents?token={token('bot', role='service')}"
    async with (
        event_client(f"{b.ws_url}/ws?token={token('bea')}") as on_b,
        event_client(f"{c.ws_url}/ws/agents?token={token('cid')}") as on_c,
        event_client(publisher_url) as publisher,
    ):
        for sub in (on_b, on_c):
            assert (await sub.command("subscribe_agent", {"agent_id": agent}))["type"] == "ack"
        ids = await run_agent(publisher, agent, 10, workspace_id=workspace)
        for sub in (on_b, on_c):
            await sub.wait_for(lambda m: m["type"] == COMPLETE)
            assert [e["id"] for e in sub.events()] == ids
            progress = [e["data"]["progress"] for e in sub.events() if e["type"] == UPDATE]
            assert progress == [10.0 * (i + 1) for i in range(10)]

        # A subscriber leaves instance B after the 4th event and resumes on instance C; the
        # execution goes on meanwhile (a new start would be a new execution, which readers of
        # the workspace see from its start on).
        seen = on_b.events()[:4]
        async with event_client(publisher_url) as second_publisher:
            ack = await second_publisher.command(UPDATE, {"agent_id": agent, "progress": 100})
            later = [ack["data"]["event_id"]]
        async with event_client(f"{c.ws_url}/ws?token={token('bea')}") as resumed:
            await resumed.command("subscribe_agent", {"agent_id": agent})
            ack = await resumed.command("resume", {"last_event_id": seen[-1]["id"]})
            assert ack["type"] == "ack"
            expected = ids[4:] + later
            await wait_until(lambda: [e["id"] for e in resumed.events()] == expected, timeout=10)


async def test_presence_is_cluster_wide_and_a_dead_instance_users_leave(
    start_cluster: StartCluster, workspace: str
) -> None:
    a, b, c = await start_cluster(3)
    await create_workspace(a, workspace)

    def presence(kind: str, user: str) -> Callable[[dict[str, Any]], bool]:
        return lambda m: m["type"] == kind and m["data"]["user_id"] == user

    async with (
        event_client(f"{c.ws_url}/ws/workspaces?token={token('owner')}") as watcher,
        client(c.http_url, "owner") as http,
    ):
        assert (await watcher.command("join_workspace", {"workspace_id": workspace}))["type"] == "ack"

        async def online() -> set[str]:
            users = (await http.get(f"/workspaces/{workspace}/users")).json()["data"]
            return {u["user_id"] for u in users if u["online"]}

        async with contextlib.AsyncExitStack() as on_a, raw_client(url_for(b, workspace, "ann")) as ann_on_b:
            # Ann has a tab on A and one on B; Dan is only on A.
            for user in ("ann", "dan"):
                await on_a.enter_async_context(_quiet(raw_client(url_for(a, workspace, user))))
            for user in ("ann", "dan"):
                await watcher.wait_for(presence("user_joined", user))
            assert {"ann", "dan", "owner"} <= await online()

            await a.kill()
            # A survivor withdraws the users of the dead instance, except where they still are.
            await watcher.wait_for(presence("user_left", "dan"), timeout=15)
            assert not any(presence("user_left", "ann")(m) for m in watcher.messages)
            assert "ann" in await online() and "dan" not in await online()
            await ann_on_b.ws.close()
            await watcher.wait_for(presence("user_left", "ann"), timeout=10)
        assert len([m for m in watcher.messages if presence("user_joined", "ann")(m)]) == 1
        assert "ann" not in await online()


@contextlib.asynccontextmanager
async def _quiet(connection: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """A connection whose server may be killed: closing it then is not an error."""
    entered = await connection.__aenter__()
    try:
        yield entered
    finally:
        with contextlib.suppress(ConnectionClosed, OSError):
            await connection.__aexit__(None, None, None)


async def test_removing_a_member_on_one_instance_closes_its_connection_on_another(
    start_cluster: StartCluster, workspace: str
) -> None:
    a, b = await start_cluster(2)
    await create_workspace(a, workspace)
    async with raw_client(url_for(b, workspace, "eve")) as eve:
        await eve.next_frame()  # sync step 1: connected and admitted
        async with client(a.http_url, "owner") as http:
            response = await http.delete(f"/workspaces/{workspace}/members/eve")
            assert response.status_code == 204, response.text
        code, _ = await eve.wait_closed(timeout=10)
        assert code == 4403
