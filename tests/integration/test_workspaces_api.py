"""The workspace REST API: every endpoint's success and refusal paths, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.support.auth import client, token
from tests.support.server import RunningServer
from tests.support.wait import wait_until
from tests.support.yclient import yclient


async def test_create_get_and_conflict(auth_server: RunningServer, workspace: str) -> None:
    async with client(auth_server.http_url, "alice") as alice:
        created = await alice.post(
            "/workspaces", json={"id": workspace, "name": "Design", "visibility": "private"}
        )
        assert created.status_code == 201
        body = created.json()
        assert (body["id"], body["name"], body["visibility"], body["owner_id"], body["role"]) == (
            workspace,
            "Design",
            "private",
            "alice",
            "owner",
        )
        again = await alice.post("/workspaces", json={"id": workspace, "name": "Other"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
        generated = await alice.post("/workspaces", json={"name": "No id given"})
        assert generated.status_code == 201 and generated.json()["id"].startswith("ws-")
        fetched = await alice.get(f"/workspaces/{workspace}")
        assert fetched.status_code == 200 and fetched.json()["name"] == "Design"
        missing = await alice.get("/workspaces/no-such-workspace")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_workspace"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x", "visibility": "secret"},
        {"name": "x", "id": "has space"},
        {"name": "x", "extra": 1},
        {"name": "x" * 300},
    ],
)
async def test_create_rejects_invalid_bodies(auth_server: RunningServer, body: dict[str, object]) -> None:
    async with client(auth_server.http_url, "alice") as alice:
        response = await alice.post("/workspaces", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


async def test_list_shows_open_and_own_workspaces_paginated(
    auth_server: RunningServer, workspace: str
) -> None:
    # Users of this test alone: the run's PostgreSQL database holds other tests' workspaces too.
    async with (
        client(auth_server.http_url, f"a-{workspace}") as alice,
        client(auth_server.http_url, f"b-{workspace}") as bob,
    ):
        for suffix in ("open-1", "open-2"):
            assert (
                await alice.post("/workspaces", json={"id": f"{workspace}-{suffix}", "name": suffix})
            ).status_code == 201
        private = f"{workspace}-private"
        assert (
            await alice.post("/workspaces", json={"id": private, "name": "p", "visibility": "private"})
        ).status_code == 201

        bobs = (await bob.get("/workspaces", params={"limit": 200})).json()
        bob_ids = {w["id"] for w in bobs["data"]}
        assert {f"{workspace}-open-1", f"{workspace}-open-2"} <= bob_ids and private not in bob_ids
        alices = (await alice.get("/workspaces", params={"limit": 200})).json()
        assert private in {w["id"] for w in alices["data"]}
        assert alices["count"] == bobs["count"] + 1

        first = (await alice.get("/workspaces", params={"limit": 1, "offset": 0})).json()
        second = (await alice.get("/workspaces", params={"limit": 1, "offset": 1})).json()
        assert len(first["data"]) == len(second["data"]) == 1
        assert first["data"][0]["id"] != second["data"][0]["id"]
        assert (await alice.get("/workspaces", params={"limit": 0})).status_code == 422


async def test_private_workspace_refuses_non_members(auth_server: RunningServer, workspace: str) -> None:
    async with client(auth_server.http_url, "alice") as alice, client(auth_server.http_url, "bob") as bob:
        await alice.post("/workspaces", json={"id": workspace, "name": "p", "visibility": "private"})
        for response in (
            await bob.get(f"/workspaces/{workspace}"),
            await bob.post(f"/workspaces/{workspace}/join"),
            await bob.get(f"/workspaces/{workspace}/users"),
        ):
            assert response.status_code == 403, response.text
            assert response.json()["error"]["code"] == "forbidden"
        added = await alice.put(f"/workspaces/{workspace}/members/bob", json={"role": "viewer"})
        assert added.status_code == 200 and added.json()["role"] == "viewer"
        assert (await bob.get(f"/workspaces/{workspace}")).json()["role"] == "viewer"


async def test_join_open_workspace_as_editor_and_leave(auth_server: RunningServer, workspace: str) -> None:
    async with client(auth_server.http_url, "alice") as alice, client(auth_server.http_url, "bob") as bob:
        await alice.post("/workspaces", json={"id": workspace, "name": "open"})
        joined = await bob.post(f"/workspaces/{workspace}/join")
        assert joined.status_code == 200 and joined.json()["role"] == "editor"
        users = (await alice.get(f"/workspaces/{workspace}/users")).json()
        assert {(u["user_id"], u["role"]) for u in users["data"]} == {("alice", "owner"), ("bob", "editor")}
        assert (await bob.post(f"/workspaces/{workspace}/leave")).status_code == 204
        assert (await bob.post(f"/workspaces/{workspace}/leave")).status_code == 404
        last_owner = await alice.post(f"/workspaces/{workspace}/leave")
        assert last_owner.status_code == 409
        assert (await bob.post("/workspaces/nope/join")).status_code == 404


async def test_only_owners_manage(auth_server: RunningServer, workspace: str) -> None:
    async with client(auth_server.http_url, "alice") as alice, client(auth_server.http_url, "bob") as bob:
        await alice.post("/workspaces", json={"id": workspace, "name": "team"})
        await bob.post(f"/workspaces/{workspace}/join")
        for response in (
            await bob.patch(f"/workspaces/{workspace}", json={"name": "mine"}),
            await bob.delete(f"/workspaces/{workspace}"),
            await bob.put(f"/workspaces/{workspace}/members/carol", json={"role": "editor"}),
            await bob.delete(f"/workspaces/{workspace}/members/alice"),
        ):
            assert response.status_code == 403
            assert "owner" in response.json()["error"]["message"]
        renamed = await alice.patch(
            f"/workspaces/{workspace}", json={"name": "Renamed", "visibility": "private"}
        )
        assert renamed.status_code == 200 and (renamed.json()["name"], renamed.json()["visibility"]) == (
            "Renamed",
            "private",
        )
        assert (
            await alice.put(f"/workspaces/{workspace}/members/carol", json={"role": "boss"})
        ).status_code == 422
        assert (await alice.delete(f"/workspaces/{workspace}/members/nobody")).status_code == 404
        demote_self = await alice.put(f"/workspaces/{workspace}/members/alice", json={"role": "editor"})
        assert demote_self.status_code == 409  # the last owner
        assert (
            await alice.put(f"/workspaces/{workspace}/members/bob", json={"role": "owner"})
        ).status_code == 200
        assert (
            await alice.put(f"/workspaces/{workspace}/members/alice", json={"role": "editor"})
        ).status_code == 200


async def test_users_shows_who_is_online(auth_server: RunningServer, workspace: str) -> None:
    async with client(auth_server.http_url, "alice") as alice:
        await alice.post("/workspaces", json={"id": workspace, "name": "team"})
        await alice.put(f"/workspaces/{workspace}/members/bob", json={"role": "editor"})
        async with yclient(auth_server.doc_url(workspace, "notes") + f"?token={token('bob')}"):
            users = {
                u["user_id"]: u for u in (await alice.get(f"/workspaces/{workspace}/users")).json()["data"]
            }
            assert users["bob"]["online"] is True and users["alice"]["online"] is False
        await wait_until(lambda: "bob" not in auth_server.services.presence.local(workspace))
        users = {u["user_id"]: u for u in (await alice.get(f"/workspaces/{workspace}/users")).json()["data"]}
        assert users["bob"]["online"] is False


async def test_delete_removes_documents_and_closes_connections(
    auth_server: RunningServer, workspace: str
) -> None:
    async with client(auth_server.http_url, "alice") as alice:
        await alice.post("/workspaces", json={"id": workspace, "name": "doomed"})
        url = auth_server.doc_url(workspace, "a.md") + f"?token={token('alice')}"
        async with yclient(url) as editor:
            editor.text().insert(0, "to be deleted")

            async def stored() -> bool:
                docs = (await alice.get(f"/workspaces/{workspace}/documents")).json()
                return bool(docs["data"]) and docs["data"][0]["stored_updates"] >= 1

            await wait_until(stored)
            docs = (await alice.get(f"/workspaces/{workspace}/documents")).json()
            assert [(d["path"], d["loaded"], d["connections"]) for d in docs["data"]] == [("a.md", True, 1)]
            assert (await alice.delete(f"/workspaces/{workspace}")).status_code == 204
            await editor.ws.wait_closed()
            assert editor.ws.close_code == 4404
        assert (await alice.get(f"/workspaces/{workspace}")).status_code == 404
        assert (await alice.get(f"/workspaces/{workspace}/documents")).status_code == 404
        # Re-created under the same id, it starts empty: nothing of the old documents survived.
        await alice.post("/workspaces", json={"id": workspace, "name": "reborn"})
        async with yclient(url) as fresh:
            assert str(fresh.text()) == ""
