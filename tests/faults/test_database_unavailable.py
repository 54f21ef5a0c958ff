"""A database that refuses, drops or cannot give a connection: REST answers 503 with the JSON
error body, WebSocket upgrades are refused with 503, the health checks say what is wrong and how
many updates wait, and the waiting updates are stored once the database is back.

PostgreSQL refusals are made for real on a role and database created for each test (and dropped
after it); SQLite is locked by a real second connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import websockets
from pycrdt import Doc, Text
from sqlalchemy import text
from websockets.exceptions import InvalidStatus

from crdt_store import DocumentRepository, StoreUnavailable, open_store
from server.config import Settings
from tests.conftest import PG_ADMIN_DSN
from tests.support.auth import client
from tests.support.server import RunningServer, run_server
from tests.support.wait import wait_until
from tests.support.yclient import yclient


@dataclass
class OwnDatabase:
    """A PostgreSQL role with a database of its own, which the test may lock out."""

    role: str
    url: str
    admin: asyncpg.Connection

    async def terminate_sessions(self) -> None:
        await self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", self.role
        )


@pytest.fixture
async def own_database() -> AsyncIterator[OwnDatabase]:
    name = f"rtc_role_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await admin.execute(f'CREATE ROLE "{name}" LOGIN')
        await admin.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
        base = PG_ADMIN_DSN.split("://", 1)[1].split("@", 1)[1].rsplit("/", 1)[0]
        yield OwnDatabase(name, f"postgresql://{name}@{base}/{name}", admin)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


# Each way PostgreSQL refuses new connections: what locks the role out, what lets it back in, and
# what the health check must report.
REFUSALS = {
    "too_many_connections": (
        'ALTER ROLE "{role}" CONNECTION LIMIT 0',
        'ALTER ROLE "{role}" CONNECTION LIMIT -1',
        "SQLSTATE 53300",
    ),
    "database_not_accepting_connections": (
        'ALTER DATABASE "{role}" ALLOW_CONNECTIONS false',
        'ALTER DATABASE "{role}" ALLOW_CONNECTIONS true',
        "SQLSTATE 55000",
    ),
    "login_revoked": ('ALTER ROLE "{role}" NOLOGIN', 'ALTER ROLE "{role}" LOGIN', "SQLSTATE 28000"),
}


def stored_text(updates: list[bytes]) -> str:
    doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("text", type=Text))


async def wait_stored(server: RunningServer, expected: str) -> None:
    """Until the server's copy of the (only) document reads ``expected`` and all of it is stored."""

    def stored() -> bool:
        rooms = list(server.services.rooms.rooms.values())
        return (
            len(rooms) == 1
            and str(rooms[0].doc.get("text", type=Text)) == expected
            and server.services.writer.pending == 0
        )

    await wait_until(stored, timeout=10)


async def assert_refused_upgrade(url: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(url, open_timeout=10):
            pass
    response = refused.value.response
    assert response.status_code == 503
    assert json.loads(response.body)["error"]["code"] == "database_unavailable"


async def assert_database_reported_down(server: RunningServer, expected: str) -> None:
    async with client(server.http_url) as http:
        health = await http.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "degraded"
        database = (await http.get("/health/database")).json()
        assert database["status"] in ("down", "write_failing")
        assert expected in database["error"]
        assert database["pending_updates"] >= 1
        listing = await http.get("/workspaces")
        assert listing.status_code == 503
        assert listing.headers["content-type"] == "application/json"
        assert listing.json()["error"]["code"] == "database_unavailable"
        assert listing.headers["retry-after"]


@pytest.mark.parametrize("refusal", list(REFUSALS))
async def test_postgresql_refusing_connections_is_503_and_loses_nothing(
    make_settings: Callable[..., Settings], own_database: OwnDatabase, workspace: str, refusal: str
) -> None:
    lock_out, let_in, expected = (part.format(role=own_database.role) for part in REFUSALS[refusal])
    settings = make_settings(database_url=own_database.url, store_retry_max=0.5, database_timeout=2)
    async with run_server(settings) as server:
        writer = server.services.writer
        async with yclient(server.doc_url(workspace)) as editor:
            editor.text().insert(0, "before")
            await wait_stored(server, "before")

            await own_database.admin.execute(lock_out)
            await own_database.terminate_sessions()
            editor.text().insert(len(editor.text()), ", during")  # accepted, relayed, kept
            await wait_until(lambda: writer.pending > 0 and writer.last_error is not None, timeout=10)

            await assert_database_reported_down(server, expected)
            assert expected.split()[-1] in (writer.last_error or "")
            await assert_refused_upgrade(server.doc_url(f"{workspace}-other"))

            await own_database.admin.execute(let_in)
            await wait_until(lambda: writer.pending == 0, timeout=30)
            stored = await server.services.store.documents.load(workspace, "")
            assert stored_text(stored.updates) == "before, during"
            async with client(server.http_url) as http:
                assert (await http.get("/health")).status_code == 200


async def test_no_free_pooled_connection_is_unavailable(pg_url: str) -> None:
    """Every pooled connection busy (10 + 10 overflow): the next operation gives up after the
    timeout with ``StoreUnavailable``, and works again once one is returned."""
    async with open_store(pg_url, timeout=0.5) as store, contextlib.AsyncExitStack() as held:
        connections = [await held.enter_async_context(store.engine.connect()) for _ in range(20)]
        with pytest.raises(StoreUnavailable, match="no free database connection"):
            await store.ping()
        await connections[0].close()
        await store.ping()


async def test_connection_lost_mid_query_is_unavailable(own_database: OwnDatabase) -> None:
    """An operation whose connection is terminated while it runs (57P01, admin shutdown) fails
    with ``StoreUnavailable``; the next one gets a fresh connection."""
    async with open_store(own_database.url, timeout=5) as store:
        workspace = f"w-{uuid.uuid4().hex}"
        await store.workspaces.create(workspace_id=workspace, name="w", visibility="open", owner_id="o")
        doc = await store.documents.load(workspace, "")
        blocker = await asyncpg.connect(own_database.url)
        try:
            async with blocker.transaction():
                await blocker.execute("SELECT id FROM documents WHERE id = $1 FOR UPDATE", doc.id)
                compaction = asyncio.create_task(DocumentRepository(store.engine).compact(doc.id))

                async def waiting_pid() -> int | None:
                    return await own_database.admin.fetchval(
                        "SELECT pid FROM pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock'",
                        own_database.role,
                    )

                await wait_until(waiting_pid, timeout=10)
                await own_database.admin.execute("SELECT pg_terminate_backend($1)", await waiting_pid())
                with pytest.raises(StoreUnavailable, match="connection lost"):
                    await asyncio.wait_for(compaction, timeout=10)
        finally:
            await blocker.close()
        await store.ping()


async def test_sqlite_locked_by_another_connection_is_503_and_loses_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path, workspace: str
) -> None:
    path = tmp_path / "locked.db"
    settings = make_settings(database_url=f"sqlite:///{path}", store_retry_max=0.5, database_timeout=0.5)
    async with run_server(settings) as server:
        writer = server.services.writer
        async with yclient(server.doc_url(workspace)) as editor:
            editor.text().insert(0, "before")
            await wait_stored(server, "before")
            # In a thread: waiting for the lock must not block the server's event loop.
            other = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
            await asyncio.to_thread(other.execute, "BEGIN EXCLUSIVE")  # in WAL mode: writers fail
            try:
                editor.text().insert(len(editor.text()), ", during")
                await wait_until(lambda: writer.pending > 0 and writer.last_error is not None, timeout=10)
                async with client(server.http_url) as http:
                    database = await http.get("/health/database")
                    assert database.status_code == 503
                    body = database.json()
                    assert (body["status"], body["pending_updates"]) == ("write_failing", 1)  # ", during"
                    assert "SQLITE_BUSY" in body["error"]
                    created = await http.post("/workspaces", json={"name": "blocked"})
                    assert created.status_code == 503
                    assert created.json()["error"]["code"] == "database_unavailable"
            finally:
                await asyncio.to_thread(other.execute, "ROLLBACK")
                other.close()
            await wait_until(lambda: writer.pending == 0, timeout=30)
            async with server.services.store.engine.connect() as conn:
                assert (await conn.execute(text("SELECT count(*) FROM document_updates"))).scalar_one() == 2
            stored = await server.services.store.documents.load(workspace, "")
            assert stored_text(stored.updates) == "before, during"
            async with client(server.http_url) as http:
                assert (await http.get("/health/database")).status_code == 200
