"""crdt_store's workspace reads that decide access, against SQLite and the run's PostgreSQL: a
workspace with one user's role, and a workspace with every member's role, each in one query."""

from __future__ import annotations

import uuid

from crdt_store import open_store
from tests.support.statements import statements


async def test_a_workspace_with_one_users_role(database_url: str) -> None:
    async with open_store(database_url) as store:
        workspace_id = f"w-{uuid.uuid4().hex}"
        created = await store.workspaces.create(
            workspace_id=workspace_id, name="Team", visibility="private", owner_id="alice"
        )
        await store.workspaces.set_member(workspace_id=workspace_id, user_id="carol", role="viewer")
        found = await store.workspaces.find_with_role(workspace_id=workspace_id, user_id="carol")
        assert found == (created, "viewer")
        assert await store.workspaces.find_with_role(workspace_id=workspace_id, user_id="alice") == (
            created,
            "owner",
        )
        assert await store.workspaces.find_with_role(workspace_id=workspace_id, user_id="eve") == (
            created,
            None,
        )
        assert await store.workspaces.find_with_role(workspace_id="nowhere", user_id="alice") is None


async def test_a_workspace_with_every_members_role_up_to_a_limit(database_url: str) -> None:
    async with open_store(database_url) as store:
        workspace_id = f"w-{uuid.uuid4().hex}"
        created = await store.workspaces.create(
            workspace_id=workspace_id, name="Team", visibility="open", owner_id="alice"
        )
        assert await store.workspaces.roster(workspace_id=workspace_id, limit=3) == (
            created,
            {"alice": "owner"},
        )
        await store.workspaces.set_member(workspace_id=workspace_id, user_id="bob", role="editor")
        await store.workspaces.set_member(workspace_id=workspace_id, user_id="carol", role="viewer")
        everyone = {"alice": "owner", "bob": "editor", "carol": "viewer"}
        assert await store.workspaces.roster(workspace_id=workspace_id, limit=3) == (created, everyone)
        assert await store.workspaces.roster(workspace_id=workspace_id, limit=2) == (created, None)
        assert await store.workspaces.roster(workspace_id="nowhere", limit=3) is None

        # A workspace whose members all left still has its row: an empty roster, not an unknown one.
        for user_id in everyone:
            await store.workspaces.remove_member(workspace_id=workspace_id, user_id=user_id)
        assert await store.workspaces.roster(workspace_id=workspace_id, limit=3) == (created, {})


async def test_each_read_is_one_statement(database_url: str) -> None:
    async with open_store(database_url) as store:
        workspace_id = f"w-{uuid.uuid4().hex}"
        await store.workspaces.create(
            workspace_id=workspace_id, name="Team", visibility="open", owner_id="alice"
        )
        with statements(store.engine) as run:
            await store.workspaces.find_with_role(workspace_id=workspace_id, user_id="alice")
            await store.workspaces.roster(workspace_id=workspace_id, limit=10)
        assert len(run) == 2, run
