"""What clients write survives restarts, compaction and reconnects, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

from pycrdt import Array, Doc, Map, Text
from sqlalchemy import func, select

from crdt_store.tables import document_snapshots, document_updates
from server.config import Settings
from tests.support.server import run_server
from tests.support.wait import wait_until
from tests.support.yclient import yclient


def content(doc: Doc) -> dict[str, object]:
    return {
        "text": str(doc.get("text", type=Text)),
        "map": doc.get("map", type=Map).to_py(),
        "list": doc.get("list", type=Array).to_py(),
    }


async def test_content_is_equal_after_restart(
    make_settings: Callable[..., Settings], database_url: str, workspace: str
) -> None:
    settings = make_settings(database_url=database_url, persist_interval_ms=100)
    async with run_server(settings) as server, yclient(server.doc_url(workspace)) as client:
        text = client.text()
        text.insert(0, "Hello, world")
        text.insert(5, " there")
        client.doc.get("map", type=Map)["k"] = {"nested": [1, 2]}
        client.doc.get("list", type=Array).extend(["a", "b"])
        written = content(client.doc)
        # Stopping the server right after the client leaves: the flush on shutdown stores it.
    async with run_server(settings) as server, yclient(server.doc_url(workspace)) as reader:
        await wait_until(lambda: content(reader.doc) == written)
    assert written["text"] == "Hello there, world"


async def test_content_is_equal_after_compaction_and_restart(
    make_settings: Callable[..., Settings], database_url: str, workspace: str
) -> None:
    settings = make_settings(database_url=database_url, compact_after_updates=10)
    async with run_server(settings) as server:
        store = server.services.store
        async with yclient(server.doc_url(workspace)) as client:
            text = client.text()
            for i in range(45):
                text.insert(len(text), f"{i};")
                if i % 5 == 0:
                    await server.services.writer.flush()
            written = str(text)
            await wait_until(lambda: server.services.writer.pending == 0)

            async def snapshot_written() -> bool:
                async with store.engine.connect() as conn:
                    merged = (
                        await conn.execute(select(func.sum(document_snapshots.c.merged_updates)))
                    ).scalar()
                    return bool(merged) and merged >= 10

            await wait_until(snapshot_written, timeout=10)
            room = next(iter(server.services.rooms.rooms.values()))
            async with store.engine.connect() as conn:
                remaining = (
                    await conn.execute(
                        select(func.count()).where(document_updates.c.document_id == room.document_id)
                    )
                ).scalar_one()
            assert remaining < 45  # compaction removed merged rows
    async with run_server(settings) as server, yclient(server.doc_url(workspace)) as reader:
        await wait_until(lambda: str(reader.text()) == written)


async def test_client_keeping_its_document_across_restart_duplicates_nothing(
    make_settings: Callable[..., Settings], database_url: str, workspace: str
) -> None:
    settings = make_settings(database_url=database_url)
    local = Doc()  # the client's document outlives its connections, as in a browser tab
    async with run_server(settings) as server, yclient(server.doc_url(workspace), local) as client:
        client.text().insert(0, "typed before the restart")
    async with run_server(settings) as server, yclient(server.doc_url(workspace), local) as client:
        client.text().insert(len(client.text()), "; and after")
        async with yclient(server.doc_url(workspace)) as other:
            expected = "typed before the restart; and after"
            await wait_until(lambda: str(other.text()) == expected)
        assert str(client.text()) == expected
    async with run_server(settings) as server, yclient(server.doc_url(workspace)) as fresh:
        await wait_until(lambda: str(fresh.text()) == expected)


async def test_idle_room_unloads_only_after_its_updates_are_stored(
    make_settings: Callable[..., Settings], database_url: str, workspace: str
) -> None:
    settings = make_settings(database_url=database_url, persist_interval_ms=300, room_unload_grace=0)
    async with run_server(settings) as server:
        rooms = server.services.rooms
        async with yclient(server.doc_url(workspace)) as client:
            client.text().insert(0, "unload me")
            await wait_until(lambda: server.services.writer.pending > 0)
        await wait_until(lambda: not rooms.rooms, timeout=5)
        assert server.services.writer.pending == 0  # stored before the room went away
        stored = await server.services.store.documents.load(workspace, "")
        replayed = Doc()
        for update in stored.updates:
            replayed.apply_update(update)
        assert str(replayed.get("text", type=Text)) == "unload me"


async def test_churned_document_compacts_to_its_size_and_reloads_equal(
    make_settings: Callable[..., Settings], database_url: str, workspace: str
) -> None:
    """A client inserts and deletes 100 KB over and over: compaction stores what the document
    holds (not the 2 MB it held over time), and after a restart a client that kept its copy
    reconnects without duplicated content."""
    settings = make_settings(database_url=database_url, compact_after_updates=10)
    local = Doc()
    async with run_server(settings) as server:
        store = server.services.store
        async with yclient(server.doc_url(workspace), local) as client:
            text = client.text()
            for i in range(20):
                text.insert(0, "x" * 100_000)
                del text[0:100_000]
                text.insert(len(text), f"{i};")
            expected = str(text)
            room = next(iter(server.services.rooms.rooms.values()))
            await wait_until(lambda: room.doc.get_state() == local.get_state(), timeout=10)

        async def stored() -> tuple[int, int]:
            async with store.engine.connect() as conn:
                snapshot = (
                    await conn.execute(
                        select(func.length(document_snapshots.c.state)).where(
                            document_snapshots.c.document_id == room.document_id
                        )
                    )
                ).scalar_one_or_none() or 0
                rows = (
                    await conn.execute(
                        select(func.count()).where(document_updates.c.document_id == room.document_id)
                    )
                ).scalar_one()
            return snapshot, rows

        # Unloading the idle room compacts what the last compaction left in the log.
        async def log_is_empty() -> bool:
            return not server.services.rooms.rooms and (await stored())[1] == 0

        await wait_until(log_is_empty, timeout=10)
        assert await stored() == (len(local.get_update()), 0)
    async with run_server(settings) as server, yclient(server.doc_url(workspace), local) as client:
        client.text().insert(len(client.text()), "after")
        async with yclient(server.doc_url(workspace)) as other:
            await wait_until(lambda: str(other.text()) == expected + "after")
        assert str(client.text()) == expected + "after"
