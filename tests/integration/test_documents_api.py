"""Document content over REST: JSON, binary updates, diffs, and updates that reach WebSocket clients."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from server.config import Settings
from tests.support.auth import client, token
from tests.support.server import RunningServer, run_server
from tests.support.wait import wait_until
from tests.support.yclient import yclient


async def setup(server: RunningServer, workspace: str) -> None:
    async with client(server.http_url, "alice") as alice:
        await alice.post("/workspaces", json={"id": workspace, "name": "docs", "visibility": "private"})
        await alice.put(f"/workspaces/{workspace}/members/vic", json={"role": "viewer"})


async def test_rest_update_reaches_websocket_clients_and_is_stored(
    auth_server: RunningServer, workspace: str
) -> None:
    await setup(auth_server, workspace)
    async with yclient(
        auth_server.doc_url(workspace, "notes/today.md") + f"?token={token('alice')}"
    ) as editor:
        bot = Doc()
        bot.get("text", type=Text).insert(0, "written by a bot")
        async with client(auth_server.http_url, "agent-7", role="service") as http:
            response = await http.post(
                f"/workspaces/{workspace}/documents/notes/today.md/update",
                content=bot.get_update(),
                headers={"Content-Type": "application/octet-stream"},
            )
        assert response.status_code == 200, response.text
        assert response.json()["applied_bytes"] == len(bot.get_update())
        await wait_until(lambda: str(editor.text()) == "written by a bot")
    await wait_until(lambda: auth_server.services.writer.pending == 0)
    async with yclient(
        auth_server.doc_url(workspace, "notes/today.md") + f"?token={token('alice')}"
    ) as later:
        assert str(later.text()) == "written by a bot"


async def test_json_view_of_every_shared_type(auth_server: RunningServer, workspace: str) -> None:
    await setup(auth_server, workspace)
    async with yclient(auth_server.doc_url(workspace) + f"?token={token('alice')}") as editor:
        editor.text().insert(0, "hello")
        editor.doc.get("settings", type=Map)["theme"] = "dark"
        editor.doc.get("tags", type=Array).extend(["a", "b"])
        editor.doc.get("prosemirror", type=XmlFragment).children.append(
            XmlElement("p", contents=[XmlText("para")])
        )
        async with client(auth_server.http_url, "vic") as viewer:

            async def complete() -> bool:
                response = await viewer.get(f"/workspaces/{workspace}/document")
                return len(response.json()["content"]) == 4

            await wait_until(complete)
            body = (await viewer.get(f"/workspaces/{workspace}/document")).json()
    assert body["content"] == {
        "text": "hello",
        "settings": {"theme": "dark"},
        "tags": ["a", "b"],
        "prosemirror": "<p>para</p>",
    }
    assert (body["workspace_id"], body["path"]) == (workspace, "")


async def test_binary_update_and_diff_against_a_state_vector(
    auth_server: RunningServer, workspace: str
) -> None:
    await setup(auth_server, workspace)
    async with yclient(auth_server.doc_url(workspace, "b") + f"?token={token('alice')}") as editor:
        editor.text().insert(0, "first")
        async with client(auth_server.http_url, "vic") as viewer:
            url = f"/workspaces/{workspace}/documents/b/update"

            async def has_first() -> bool:
                mirror = Doc()
                mirror.apply_update((await viewer.get(url)).content)
                return str(mirror.get("text", type=Text)) == "first"

            await wait_until(has_first)
            mirror = Doc()
            full = await viewer.get(url)
            assert full.headers["content-type"] == "application/octet-stream"
            mirror.apply_update(full.content)
            vector = base64.urlsafe_b64encode(mirror.get_state()).decode().rstrip("=")
            editor.text().insert(5, " second")

            async def diff_arrives() -> bool:
                diff = await viewer.get(url, params={"state_vector": vector})
                probe = Doc()
                probe.apply_update(full.content)
                probe.apply_update(diff.content)
                return str(probe.get("text", type=Text)) == "first second"

            await wait_until(diff_arrives)
            diff = await viewer.get(url, params={"state_vector": vector})
            assert len(diff.content) < len((await viewer.get(url)).content)
            not_base64 = await viewer.get(url, params={"state_vector": "!!notbase64"})
            assert not_base64.status_code == 422 and not_base64.json()["error"]["code"] == "invalid_request"
            bad_length = await viewer.get(url, params={"state_vector": "abcde"})  # base64 letters, 5 of them
            assert bad_length.status_code == 400 and "base64" in bad_length.json()["error"]["message"]


async def test_refusals(auth_server: RunningServer, workspace: str) -> None:
    await setup(auth_server, workspace)
    update = Doc()
    update.get("text", type=Text).insert(0, "x")
    async with (
        client(auth_server.http_url, "vic") as viewer,
        client(auth_server.http_url, "alice") as owner,
        client(auth_server.http_url, "stranger") as stranger,
    ):
        denied = await viewer.post(f"/workspaces/{workspace}/document/update", content=update.get_update())
        assert denied.status_code == 403 and "editor" in denied.json()["error"]["message"]
        assert (await stranger.get(f"/workspaces/{workspace}/document")).status_code == 403
        assert (await owner.get("/workspaces/nope/document")).status_code == 404
        never_written = await owner.get(f"/workspaces/{workspace}/documents/never/written.md")
        assert never_written.status_code == 404 and never_written.json()["error"]["code"] == "not_found"
        assert (
            await owner.get(f"/workspaces/{workspace}/documents/never/written.md/update")
        ).status_code == 404
        garbage = await owner.post(
            f"/workspaces/{workspace}/document/update", content=b"\x01\x05\xff\xff\xff"
        )
        assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "bad_request"
        empty = await owner.post(f"/workspaces/{workspace}/document/update", content=b"")
        assert empty.status_code == 400


async def test_oversize_rest_update_is_refused(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    async with run_server(make_settings(max_message_size=4096)) as server, client(server.http_url) as http:
        big = Doc()
        big.get("text", type=Text).insert(0, "x" * 10_000)
        url = f"/workspaces/{workspace}/documents/big/update"
        declared = await http.post(url, content=big.get_update())
        assert declared.status_code == 413 and declared.json()["error"]["code"] == "payload_too_large"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the body is streamed
            update = big.get_update()
            for start in range(0, len(update), 1000):
                yield update[start : start + 1000]

        streamed = await http.post(url, content=chunks())
        assert streamed.status_code == 413
        assert (await http.get(url)).status_code == 404  # nothing was created


async def test_openapi_lists_every_route(server: RunningServer) -> None:
    async with client(server.http_url) as http:
        schema = (await http.get("/openapi.json")).json()
        assert (await http.get("/docs")).status_code == 200
    paths = {(path, method) for path, ops in schema["paths"].items() for method in ops}
    expected = {
        ("/health", "get"),
        ("/health/database", "get"),
        ("/health/redis", "get"),
        ("/ws/health", "get"),
        ("/status", "get"),
        ("/connections", "get"),
        ("/workspaces", "get"),
        ("/workspaces", "post"),
        ("/workspaces/{workspace_id}", "get"),
        ("/workspaces/{workspace_id}", "patch"),
        ("/workspaces/{workspace_id}", "delete"),
        ("/workspaces/{workspace_id}/join", "post"),
        ("/workspaces/{workspace_id}/leave", "post"),
        ("/workspaces/{workspace_id}/users", "get"),
        ("/workspaces/{workspace_id}/documents", "get"),
        ("/workspaces/{workspace_id}/members/{user_id}", "put"),
        ("/workspaces/{workspace_id}/members/{user_id}", "delete"),
        ("/workspaces/{workspace_id}/document", "get"),
        ("/workspaces/{workspace_id}/document/update", "get"),
        ("/workspaces/{workspace_id}/document/update", "post"),
        ("/workspaces/{workspace_id}/documents/{doc_path}", "get"),
        ("/workspaces/{workspace_id}/documents/{doc_path}/update", "get"),
        ("/workspaces/{workspace_id}/documents/{doc_path}/update", "post"),
        ("/workspaces/{workspace_id}/documents/{doc_path}", "delete"),
        ("/agents/status", "get"),
        ("/agents/{agent_id}", "get"),
        ("/agents/{agent_id}/events", "post"),
        ("/agents/{agent_id}/subscribe", "post"),
        ("/agents/{agent_id}/unsubscribe", "post"),
    }
    assert expected <= paths, expected - paths
