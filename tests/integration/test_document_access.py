"""Access on the sync endpoint: refusals before the upgrade, read-only viewers, live access changes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import websockets
from pycrdt import Doc, Text, create_update_message
from websockets.exceptions import InvalidStatus

from server.config import Settings
from tests.interop.node import start_node_client
from tests.support.auth import SECRET, client, token
from tests.support.rawclient import raw_client
from tests.support.server import RunningServer, run_server
from tests.support.wait import wait_until
from tests.support.yclient import yclient


async def refused_status(url: str) -> tuple[int, bytes]:
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(url):
            pass
    return refused.value.response.status_code, refused.value.response.body


async def test_non_member_of_private_workspace_is_refused(auth_server: RunningServer, workspace: str) -> None:
    async with client(auth_server.http_url, "alice") as alice:
        await alice.post("/workspaces", json={"id": workspace, "name": "p", "visibility": "private"})
    status, body = await refused_status(auth_server.doc_url(workspace) + f"?token={token('bob')}")
    assert status == 403 and b'"forbidden"' in body and b"private" in body


async def test_unknown_workspace_is_not_found_with_tokens(auth_server: RunningServer, workspace: str) -> None:
    status, body = await refused_status(auth_server.doc_url(workspace) + f"?token={token('alice')}")
    assert status == 404 and b'"unknown_workspace"' in body


async def test_auto_create_makes_the_first_user_owner(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    async with run_server(make_settings(jwt_secret=SECRET, auto_create_workspaces=True)) as server:
        async with yclient(server.doc_url(workspace) + f"?token={token('alice')}") as alice:
            alice.text().insert(0, "first")
        async with client(server.http_url, "alice") as http:
            body = (await http.get(f"/workspaces/{workspace}")).json()
    assert (body["owner_id"], body["role"], body["visibility"]) == ("alice", "owner", "open")


async def test_open_workspace_makes_a_visitor_an_editor_member(
    auth_server: RunningServer, workspace: str
) -> None:
    async with client(auth_server.http_url, "alice") as alice:
        await alice.post("/workspaces", json={"id": workspace, "name": "open"})
        async with yclient(auth_server.doc_url(workspace) + f"?token={token('bob')}") as bob:
            bob.text().insert(0, "bob was here")
            users = {
                u["user_id"]: u for u in (await alice.get(f"/workspaces/{workspace}/users")).json()["data"]
            }
    assert users["bob"]["role"] == "editor" and users["bob"]["online"] is True


async def test_open_development_server_creates_unknown_workspaces(
    server: RunningServer, workspace: str
) -> None:
    async with yclient(server.doc_url(workspace)) as guest:
        guest.text().insert(0, "no token needed")
    async with client(server.http_url) as http:
        response = await http.get(f"/workspaces/{workspace}")
    assert response.status_code == 200 and response.json()["visibility"] == "open"


async def test_viewer_writes_are_dropped_and_reported(auth_server: RunningServer, workspace: str) -> None:
    async with client(auth_server.http_url, "alice") as alice:
        await alice.post("/workspaces", json={"id": workspace, "name": "p", "visibility": "private"})
        await alice.put(f"/workspaces/{workspace}/members/vic", json={"role": "viewer"})
    async with yclient(auth_server.doc_url(workspace) + f"?token={token('alice')}") as editor:
        editor.text().insert(0, "[editor]")
        viewer = await start_node_client(
            url=f"{auth_server.ws_url}/ws/workspaces",
            room=workspace,
            token=token("vic"),
            insert="[viewer]",
            expect=["[editor]"],
            expectDenied=True,
        )
        report = await viewer.result()
        assert report["permissionDenied"] and "read-only" in report["permissionDenied"][0]
        # The editor's edit reached the viewer; the viewer's never reached anyone.
        editor.text().insert(len(editor.text()), "[more]")
        async with yclient(auth_server.doc_url(workspace) + f"?token={token('alice')}") as fresh:
            await wait_until(lambda: str(fresh.text()) == "[editor][more]")
        assert "[viewer]" not in str(editor.text())
    stored = await auth_server.services.store.documents.load(workspace, "")
    assert all(b"[viewer]" not in update for update in stored.updates)


async def test_removed_member_is_disconnected_and_downgraded_member_loses_writes(
    auth_server: RunningServer, workspace: str
) -> None:
    async with client(auth_server.http_url, "alice") as alice:
        await alice.post("/workspaces", json={"id": workspace, "name": "p", "visibility": "private"})
        for user in ("bob", "carol"):
            await alice.put(f"/workspaces/{workspace}/members/{user}", json={"role": "editor"})
        async with (
            yclient(auth_server.doc_url(workspace) + f"?token={token('alice')}") as owner,
            yclient(auth_server.doc_url(workspace) + f"?token={token('bob')}") as bob,
            raw_client(auth_server.doc_url(workspace) + f"?token={token('carol')}") as carol,
        ):
            bob.text().insert(0, "bob can write. ")
            await wait_until(lambda: "bob can write" in str(owner.text()))

            assert (await alice.delete(f"/workspaces/{workspace}/members/bob")).status_code == 204
            await bob.ws.wait_closed()
            assert (bob.ws.close_code, bob.ws.close_reason) == (
                4403,
                "your access to this workspace was revoked",
            )

            assert (
                await alice.put(f"/workspaces/{workspace}/members/carol", json={"role": "viewer"})
            ).status_code == 200
            attempt = Doc()
            attempt.get("text", type=Text).insert(0, "carol after downgrade")
            await carol.send(create_update_message(attempt.get_update()))
            denied = await carol.next_frame(kind=2)
            assert denied[:2] == b"\x02\x00"  # y-protocols auth message, permission denied
            assert b"read-only" in denied
        assert "carol" not in str(owner.text())


async def test_a_members_next_connection_follows_a_change_of_access(
    auth_server: RunningServer, workspace: str
) -> None:
    # Each member connects once first, so that their access is known (and may be cached).
    async with client(auth_server.http_url, "alice") as alice:
        await alice.post("/workspaces", json={"id": workspace, "name": "p", "visibility": "private"})
        for user in ("bob", "carol"):
            await alice.put(f"/workspaces/{workspace}/members/{user}", json={"role": "editor"})
            async with raw_client(auth_server.doc_url(workspace) + f"?token={token(user)}") as first:
                await first.next_frame(kind=0)
        assert (await alice.delete(f"/workspaces/{workspace}/members/bob")).status_code == 204
        status, body = await refused_status(auth_server.doc_url(workspace) + f"?token={token('bob')}")
        assert status == 403 and b"private" in body
        await alice.put(f"/workspaces/{workspace}/members/carol", json={"role": "viewer"})
        async with raw_client(auth_server.doc_url(workspace) + f"?token={token('carol')}") as carol:
            attempt = Doc()
            attempt.get("text", type=Text).insert(0, "carol as a viewer")
            await carol.send(create_update_message(attempt.get_update()))
            denied = await carol.next_frame(kind=2)
            assert b"read-only" in denied
            # A viewer's update is refused unread, whatever it holds (a costly one costs nothing).
            await carol.send(create_update_message(b"\x05\xff\xff"))
            assert b"read-only" in await carol.next_frame(kind=2)
        assert (await alice.delete(f"/workspaces/{workspace}")).status_code == 204
        status, _ = await refused_status(auth_server.doc_url(workspace) + f"?token={token('alice')}")
        assert status == 404


async def test_reads_never_create_and_creation_is_announced(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    from tests.support.events import event_client

    async with run_server(make_settings(jwt_secret=SECRET, auto_create_workspaces=True)) as server:
        async with client(server.http_url, "alice") as alice:
            assert (await alice.get(f"/workspaces/{workspace}")).status_code == 404
            assert (await alice.get(f"/workspaces/{workspace}/users")).status_code == 404
            assert (await alice.get(f"/agents/status?workspace_id={workspace}")).status_code == 404
            assert (await alice.get(f"/workspaces/{workspace}")).status_code == 404  # still unknown
        async with event_client(
            f"{server.ws_url}/ws/agents?token={token('indexer', role='service')}"
        ) as agent:
            refused = await agent.command(
                "agent_execution_start", {"agent_id": "a-1", "workspace_id": workspace}
            )
            assert refused["type"] == "error" and refused["data"]["code"] == "unknown_workspace"
        # Opening a document is the explicit act that creates it: owner alice, announced.
        async with yclient(server.doc_url(workspace) + f"?token={token('alice')}"):
            pass
        async with event_client(f"{server.ws_url}/ws?token={token('alice')}") as watcher:
            await watcher.command("join_workspace", {"workspace_id": workspace})
            await watcher.command("resume", {"last_event_id": 0})
            # document_created may come first: live, between the join and the resume
            created = await watcher.wait_for(
                lambda m: (
                    m.get("type") == "workspace_update" and m["data"]["update_type"] == "workspace_created"
                )
            )
        assert created["data"]["owner_id"] == "alice"
        updates = [m["data"]["update_type"] for m in watcher.messages if m.get("type") == "workspace_update"]
        assert sorted(updates) == ["document_created", "workspace_created"]  # each once


async def test_a_visitor_joining_an_open_workspace_is_announced(
    auth_server: RunningServer, workspace: str
) -> None:
    from tests.support.events import event_client

    async with client(auth_server.http_url, "alice") as alice:
        await alice.post("/workspaces", json={"id": workspace, "name": "open"})
    async with event_client(f"{auth_server.ws_url}/ws/workspaces?token={token('alice')}") as watcher:
        assert (await watcher.command("join_workspace", {"workspace_id": workspace}))["type"] == "ack"
        async with yclient(auth_server.doc_url(workspace) + f"?token={token('bob')}"):
            added = await watcher.wait_for(
                lambda m: m.get("type") == "workspace_update" and m["data"]["update_type"] == "member_added"
            )
    assert (added["data"]["user_id"], added["data"]["role"]) == ("bob", "editor")


async def test_a_viewer_cannot_create_a_document_by_opening_it(
    auth_server: RunningServer, workspace: str
) -> None:
    from tests.support.events import event_client

    async with client(auth_server.http_url, "alice") as alice:
        await alice.post("/workspaces", json={"id": workspace, "name": "w"})
        await alice.put(f"/workspaces/{workspace}/members/vic", json={"role": "viewer"})
        async with event_client(f"{auth_server.ws_url}/ws/workspaces?token={token('alice')}") as watcher:
            await watcher.command("join_workspace", {"workspace_id": workspace})
            status, body = await refused_status(
                auth_server.doc_url(workspace, "new.md") + f"?token={token('vic')}"
            )
            assert status == 404 and b"viewers cannot create it" in body
            assert (await alice.get(f"/workspaces/{workspace}/documents")).json()["count"] == 0
            # An existing document opens read-only for the viewer.
            async with yclient(
                auth_server.doc_url(workspace, "new.md") + f"?token={token('alice')}"
            ) as editor:
                editor.text().insert(0, "made by an editor")
            async with yclient(auth_server.doc_url(workspace, "new.md") + f"?token={token('vic')}") as viewer:
                assert str(viewer.text()) == "made by an editor"
            # Events are stored before they are sent: wait for the announcement, then count.
            await watcher.wait_for(
                lambda m: (
                    m.get("type") == "workspace_update" and m["data"]["update_type"] == "document_created"
                )
            )
            created = [
                m
                for m in watcher.events("workspace_update")
                if m["data"]["update_type"] == "document_created"
            ]
            assert len(created) == 1


async def test_no_websocket_endpoint_is_a_json_404(server: RunningServer) -> None:
    for path in ("/ws/other", "/ws/agents/extra", "/health"):
        status, body = await refused_status(f"{server.ws_url}{path}")
        assert status == 404 and b'"not_found"' in body and b"/ws/workspaces/" in body


async def test_a_document_path_is_bounded_in_bytes(auth_server: RunningServer, workspace: str) -> None:
    async with client(auth_server.http_url, "alice") as alice:
        await alice.post("/workspaces", json={"id": workspace, "name": "w"})
        long_path = "😀" * 300  # 300 characters, 1,200 UTF-8 bytes
        status, _ = await refused_status(
            auth_server.doc_url(workspace, long_path) + f"?token={token('alice')}"
        )
        assert status == 400
        rest = await alice.get(f"/workspaces/{workspace}/documents/{long_path}")
        assert rest.status_code == 400
