"""crdt_store against SQLite and the run's PostgreSQL: loading, compaction, writes racing compaction."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import uuid
from typing import Any

import pytest
from pycrdt import Doc, Text
from sqlalchemy import func, select, text

from crdt_store import DocumentRepository, NotFound, Store, StoreUnavailable, documents, engine, open_store
from crdt_store.tables import document_snapshots, document_updates
from crdt_store.tables import documents as documents_table
from tests.support.statements import statements
from tests.support.wait import wait_until


def edits(count: int, *, prefix: str = "") -> tuple[list[bytes], str]:
    """``count`` real Yjs updates made by one client, and the text they produce."""
    doc = Doc()
    text = doc.get("text", type=Text)
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    for i in range(count):
        text.insert(len(text), f"{prefix}{i},")
    doc.unobserve(subscription)
    return updates, str(text)


def replay(updates: list[bytes]) -> str:
    doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("text", type=Text))


async def new_workspace(store: Store) -> str:
    workspace_id = f"w-{uuid.uuid4().hex}"
    await store.workspaces.create(
        workspace_id=workspace_id, name="test", visibility="open", owner_id="tester"
    )
    return workspace_id


async def log_rows(store: Store, document_id: int) -> int:
    async with store.engine.connect() as conn:
        query = select(func.count()).where(document_updates.c.document_id == document_id)
        return (await conn.execute(query)).scalar_one()


async def test_load_is_snapshot_plus_tail(database_url: str) -> None:
    updates, expected = edits(30)
    async with open_store(database_url) as store:
        workspace = await new_workspace(store)
        empty = await store.documents.load(workspace, "")
        assert empty.updates == [] and empty.tail_count == 0
        await store.documents.append([(empty.id, u) for u in updates[:20]])
        assert (await store.documents.compact(empty.id)).merged == 20
        await store.documents.append([(empty.id, u) for u in updates[20:]])
        loaded = await store.documents.load(workspace, "")
    assert loaded.id == empty.id
    assert loaded.tail_count == 10  # the snapshot, then exactly the ten rows written after it
    assert len(loaded.updates) == 11
    assert replay(loaded.updates) == expected


async def test_compaction_deletes_exactly_the_rows_it_merged(database_url: str) -> None:
    first, _ = edits(15, prefix="a")
    async with open_store(database_url) as store:
        workspace = await new_workspace(store)
        doc = await store.documents.load(workspace, "doc")
        await store.documents.append([(doc.id, u) for u in first])
        assert (await store.documents.compact(doc.id)).merged == 15
        assert await log_rows(store, doc.id) == 0
        assert (await store.documents.compact(doc.id)).merged == 0  # nothing new: a no-op
        async with store.engine.connect() as conn:
            merged = (
                await conn.execute(
                    select(document_snapshots.c.merged_updates).where(
                        document_snapshots.c.document_id == doc.id
                    )
                )
            ).scalar_one()
        assert merged == 15
        assert replay((await store.documents.load(workspace, "doc")).updates) == replay(first)


async def test_writes_racing_compaction_lose_nothing(database_url: str) -> None:
    """Several writers append while compaction runs over and over: the final load holds all."""
    writers = [edits(60, prefix=f"w{n}-") for n in range(3)]
    async with open_store(database_url) as store:
        workspace = await new_workspace(store)
        doc = await store.documents.load(workspace, "")
        done = asyncio.Event()
        compactions = 0

        async def write(updates: list[bytes]) -> None:
            for start in range(0, len(updates), 3):
                await store.documents.append([(doc.id, u) for u in updates[start : start + 3]])
                await asyncio.sleep(0)

        async def compact() -> None:
            nonlocal compactions
            while not done.is_set():
                if (await store.documents.compact(doc.id)).merged:
                    compactions += 1
                await asyncio.sleep(0)

        compactor = asyncio.create_task(compact())
        await asyncio.gather(*(write(updates) for updates, _ in writers))
        done.set()
        await compactor
        loaded = await store.documents.load(workspace, "")

    assert compactions >= 1
    final = Doc()
    for update in loaded.updates:
        final.apply_update(update)
    text = str(final.get("text", type=Text))
    for updates, _ in writers:
        # Each writer's own text is a contiguous run in the merged result.
        assert replay(updates) in text
    assert len(text) == sum(len(replay(updates)) for updates, _ in writers)


async def test_documents_are_keyed_by_workspace_and_path(database_url: str) -> None:
    async with open_store(database_url) as store:
        workspace = await new_workspace(store)
        a = await store.documents.load(workspace, "")
        b = await store.documents.load(workspace, "a.md")
        again = await store.documents.load(workspace, "a.md")
    assert a.id != b.id
    assert b.id == again.id


async def test_migrations_are_idempotent(database_url: str) -> None:
    async with open_store(database_url) as store:
        await store.ping()
    async with open_store(database_url) as store:  # a second start finds the schema at head
        await store.ping()


async def test_documents_need_an_existing_workspace(database_url: str) -> None:
    async with open_store(database_url) as store:
        with pytest.raises(NotFound, match="does not exist"):
            await store.documents.load(f"missing-{uuid.uuid4().hex}", "")
        workspace = await new_workspace(store)
        first = await store.documents.load(workspace, "a")
        again = await store.documents.load(workspace, "a")
    assert first.created is True and again.created is False


def churn(rounds: int, *, size: int = 100_000) -> tuple[Doc, list[bytes]]:
    """One client inserts ``size`` characters and deletes them again, ``rounds`` times, leaving a
    short marker each round. Returns its document and its updates."""
    doc = Doc()
    text = doc.get("text", type=Text)
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    for i in range(rounds):
        text.insert(0, "x" * size)
        del text[0:size]
        text.insert(len(text), f"{i},")
    doc.unobserve(subscription)
    return doc, updates


async def snapshot_of(store: Store, document_id: int) -> bytes:
    async with store.engine.connect() as conn:
        query = select(document_snapshots.c.state).where(document_snapshots.c.document_id == document_id)
        return (await conn.execute(query)).scalar_one()


@pytest.mark.parametrize(("chunk_bytes", "in_worker"), [(1, False), (documents.COMPACT_CHUNK_BYTES, True)])
async def test_compacted_snapshot_is_the_documents_own_encoding(
    database_url: str, chunk_bytes: int, in_worker: bool
) -> None:
    """2 MB of inserted-then-deleted text compacts to the size of what the document holds, read
    one row at a time here or in large batches in the worker process, and the writer's own copy
    merges it without change."""
    client, updates = churn(20)
    live = client.get_update()
    async with open_store(database_url) as store:
        repository = DocumentRepository(store.engine, store.state_worker if in_worker else None)
        workspace = await new_workspace(store)
        doc = await store.documents.load(workspace, "churn")
        await store.documents.append([(doc.id, u) for u in updates[:30]])
        first = await repository.compact(doc.id, chunk_bytes=chunk_bytes)
        await store.documents.append([(doc.id, u) for u in updates[30:]])
        second = await repository.compact(doc.id, chunk_bytes=chunk_bytes)
        snapshot = await snapshot_of(store, doc.id)
        loaded = await store.documents.load(workspace, "churn")
    assert sum(len(u) for u in updates) > 2_000_000
    assert (first.merged, second.merged) == (30, 30)
    assert second.snapshot_bytes == len(snapshot) == len(live)  # 2 MB of history, about 1 KB stored
    assert loaded.updates == [snapshot] and loaded.tail_count == 0
    assert replay(loaded.updates) == str(client.get("text", type=Text))
    state_before = client.get_state()
    client.apply_update(snapshot)  # a client that kept its copy: nothing new, nothing twice
    assert client.get_state() == state_before
    assert str(client.get("text", type=Text)) == "".join(f"{i}," for i in range(20))


async def test_compaction_keeps_updates_waiting_for_a_missing_one(database_url: str) -> None:
    """Rows stored before an update they depend on (two instances storing their own clients'
    updates) survive compaction, insertions and deletions alike."""
    writer = Doc()
    text = writer.get("text", type=Text)
    updates: list[bytes] = []
    writer.observe(lambda event: updates.append(event.update))
    text.insert(0, "hello")
    text.insert(5, " world")
    del text[0:2]
    first, insertion, deletion = updates
    async with open_store(database_url) as store:
        workspace = await new_workspace(store)
        doc = await store.documents.load(workspace, "")
        await store.documents.append([(doc.id, insertion), (doc.id, deletion)])
        assert (await store.documents.compact(doc.id)).merged == 2
        await store.documents.append([(doc.id, first)])
        assert (await store.documents.compact(doc.id)).merged == 1
        loaded = await store.documents.load(workspace, "")
    assert replay(loaded.updates) == "llo world"


async def test_compaction_lock_lets_appends_through(pg_url: str) -> None:
    """While a compaction holds its lock on a document (PostgreSQL), updates are still appended
    and a second compaction of that document waits for the first."""
    updates, _ = edits(4)
    async with open_store(pg_url) as store:
        workspace = await new_workspace(store)
        doc = await store.documents.load(workspace, "")
        async with store.engine.connect() as conn, conn.begin():
            await documents._lock_for_compaction(conn, doc.id)
            await asyncio.wait_for(store.documents.append([(doc.id, u) for u in updates]), timeout=10)
            second = asyncio.create_task(store.documents.compact(doc.id))

            async def waiting_for_the_lock() -> bool:
                query = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                return bool((await conn.execute(query)).scalar_one()) or second.done()

            await wait_until(waiting_for_the_lock, timeout=10)
            assert not second.done()  # serialised behind the lock held here
        assert (await asyncio.wait_for(second, timeout=10)).merged == 4


async def test_a_row_that_is_not_an_update_stops_compaction_not_the_worker(database_url: str) -> None:
    updates, expected = edits(5)
    async with open_store(database_url) as store:
        workspace = await new_workspace(store)
        doc = await store.documents.load(workspace, "")
        other = await store.documents.load(workspace, "other")
        await store.documents.append([(doc.id, u) for u in updates] + [(doc.id, b"\x01\x02not an update")])
        with pytest.raises(ValueError, match="building the document's state failed"):
            await store.documents.compact(doc.id)
        assert await log_rows(store, doc.id) == 6  # nothing merged, nothing deleted
        await store.documents.append([(other.id, u) for u in updates])
        assert (await store.documents.compact(other.id)).merged == 5  # the worker goes on
        assert replay((await store.documents.load(workspace, "other")).updates) == expected


async def test_sqlite_writers_take_turns_instead_of_meeting_on_its_lock(sqlite_url: str) -> None:
    """SQLite lets one connection write at a time. With no busy timeout at all for SQLite's own
    lock (``timeout=0``: a writer that finds it taken would fail at once, "database is locked";
    the turn in this process is given 5 s), fifty clients opening fifty new documents, members
    being added and the update log appended to, all at once, succeed: this process's writers
    queue for their turn (``engine.writing``) instead of meeting on SQLite's lock."""
    updates, _ = edits(3)
    async with open_store(sqlite_url, timeout=0) as store:
        engine._SQLITE_WRITERS[store.engine.sync_engine].timeout = 5.0
        workspace = await new_workspace(store)
        first = await store.documents.load(workspace, "first.md")
        loaded, members, _ = await asyncio.gather(
            asyncio.gather(*(store.documents.load(workspace, f"doc-{i}.md") for i in range(50))),
            asyncio.gather(
                *(
                    store.workspaces.set_member(workspace_id=workspace, user_id=f"u{i}", role="editor")
                    for i in range(20)
                )
            ),
            asyncio.gather(*(store.documents.append([(first.id, update)]) for update in updates)),
        )
        again = await store.documents.load(workspace, "doc-7.md")
        stored = await store.documents.load(workspace, "first.md")
    assert all(doc.created and doc.updates == [] for doc in loaded)
    assert len({doc.id for doc in loaded}) == 50
    assert (again.id, again.created) == (loaded[7].id, False)
    assert sorted(member.user_id for member in members) == sorted(f"u{i}" for i in range(20))
    assert stored.tail_count == 3


async def test_documents_asked_for_at_once_are_created_in_one_insert(database_url: str) -> None:
    """A wave of clients opening new documents: one multi-row INSERT creates them all, each asker
    learns its id, a document asked for twice is created once, and a workspace that does not
    exist fails only the documents in it."""
    async with open_store(database_url) as store:
        workspace = await new_workspace(store)
        with statements(store.engine, "INSERT INTO DOCUMENTS") as inserts:
            asked = [(workspace, f"doc-{i}.md") for i in range(60)] + [(workspace, "doc-7.md")]
            results = await asyncio.gather(*(store.documents._create(*key) for key in asked))
            missing = await asyncio.gather(
                store.documents._create(workspace, "kept.md"),
                store.documents._create("no-such-workspace", "lost.md"),
                return_exceptions=True,
            )
        reloaded = await store.documents.load(workspace, "doc-7.md")
    assert len(inserts) == 1 + 3  # the wave; then the pair together, and each alone to find the bad one
    assert [created for _, created in results] == [True] * 60 + [False]
    assert len({document_id for document_id, _ in results[:60]}) == 60
    assert results[60][0] == results[7][0] == reloaded.id and not reloaded.created
    assert isinstance(missing[0], tuple) and missing[0][1]
    assert isinstance(missing[1], NotFound)


async def test_documents_loaded_at_once_are_read_together(database_url: str) -> None:
    """A wave of clients opening documents of two workspaces, some stored (with snapshot and
    tail, or tail only), some new: the stored ones are read in three queries for all of them and
    each load gets its own document whole; the new ones are created."""
    async with open_store(database_url) as store:
        first, second = await new_workspace(store), await new_workspace(store)
        expected: dict[tuple[str, str], str] = {}
        for n, workspace in enumerate([first, second] * 3):
            updates, text = edits(5 + n, prefix=f"{n}:")
            stored = await store.documents.load(workspace, f"doc-{n}.md")
            await store.documents.append([(stored.id, update) for update in updates])
            if n % 2:
                await store.documents.compact(stored.id)
            expected[workspace, f"doc-{n}.md"] = text
        with statements(store.engine, "SELECT") as reads:
            asked = [*expected, (first, "new.md"), (second, "doc-0.md")]
            loaded = await asyncio.gather(*(store.documents.load(*key) for key in asked))
    assert len(reads) == 3  # the documents' ids, their logs' rows, their snapshots
    for key, document in zip(asked, loaded, strict=True):
        assert replay(document.updates) == expected.get(key, ""), key
    assert not any(document.created for document in loaded[:6])
    assert loaded[6].created and loaded[7].created  # doc-0.md of the other workspace is another document
    assert loaded[7].id != loaded[0].id


async def test_a_slow_read_holds_up_only_its_own_batch(database_url: str) -> None:
    """A batch still reading (a large document's rows) does not hold up the loads asked for after
    it started: they go into another batch alongside; a load of a key in the slow batch joins it."""
    async with open_store(database_url) as store:
        workspace = await new_workspace(store)
        for path in ("big.md", "small.md"):
            await store.documents.load(workspace, path)
        reads = store.documents._reads
        read, release, reading = reads._handle, asyncio.Event(), asyncio.Event()

        async def slow_for_big(keys: list[Any]) -> Any:
            if (workspace, "big.md") in keys:
                reading.set()
                await release.wait()
            return await read(keys)

        reads._handle = slow_for_big  # type: ignore[method-assign]
        big = asyncio.ensure_future(store.documents.load(workspace, "big.md"))
        await asyncio.wait_for(reading.wait(), 5)
        again = asyncio.ensure_future(store.documents.load(workspace, "big.md"))
        small = await asyncio.wait_for(store.documents.load(workspace, "small.md"), 5)
        assert not big.done() and not again.done() and not small.created
        release.set()
        assert (await big).id == (await again).id


async def test_two_instances_creating_the_same_documents_at_once_do_not_deadlock(pg_url: str) -> None:
    """Two instances' batches of new documents overlap, asked for in opposite orders: each
    batch takes its row locks in one (sorted) order, so neither waits for the other in a cycle
    (PostgreSQL would abort one with a deadlock, 40P01)."""
    async with open_store(pg_url) as one, open_store(pg_url) as other:
        workspace = await new_workspace(one)
        for round_ in range(5):
            keys = [(workspace, f"r{round_}/d{i:03}") for i in range(300)]
            mine, theirs = await asyncio.gather(
                asyncio.gather(*(one.documents._create(*key) for key in keys)),
                asyncio.gather(*(other.documents._create(*key) for key in reversed(keys))),
            )
            assert [document_id for document_id, _ in mine] == [
                document_id for document_id, _ in reversed(theirs)
            ]
            created = [c for _, c in mine] + [c for _, c in theirs]
            assert created.count(True) == 300  # each document created by exactly one instance


async def test_a_creation_waiting_for_another_instances_row_holds_up_only_its_own_batch(
    pg_url: str,
) -> None:
    """Another instance is creating a document in a transaction not committed yet: creating the
    same document here waits for its row lock, and documents asked for meanwhile are created
    alongside (not behind it); once the other instance commits, the waiting one gets its id."""
    async with open_store(pg_url) as store, open_store(pg_url) as other:
        workspace = await new_workspace(store)
        async with other.engine.connect() as holder:
            transaction = await holder.begin()
            await holder.execute(documents_table.insert().values(workspace_id=workspace, path="held.md"))
            held = asyncio.ensure_future(store.documents._create(workspace, "held.md"))
            await wait_until(lambda: (workspace, "held.md") in store.documents._creations._taken)
            free = await asyncio.wait_for(
                asyncio.gather(*(store.documents._create(workspace, f"free-{i}.md") for i in range(3))), 10
            )
            assert not held.done()
            await transaction.commit()
        held_id, created = await asyncio.wait_for(held, 10)
        reloaded = await store.documents.load(workspace, "held.md")
    assert [created for _, created in free] == [True] * 3
    assert (held_id, created) == (reloaded.id, False)  # the other instance created it


async def test_sqlite_writers_waiting_for_their_turn_give_up_after_the_timeout_together(
    sqlite_url: str,
) -> None:
    """Another process holds the SQLite file's write lock: each waiting writer fails with
    ``StoreUnavailable`` after the store's timeout, counted from when it asked, not one timeout
    after another (five writers, a one-second timeout: about one second for all, not five)."""
    async with open_store(sqlite_url, timeout=1.0) as store:
        workspace = await new_workspace(store)
        holder = sqlite3.connect(sqlite_url.split("///", 1)[1], isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # the write lock, held
            loop = asyncio.get_running_loop()
            started = loop.time()
            results = await asyncio.gather(
                *(
                    store.workspaces.set_member(workspace_id=workspace, user_id=f"u{i}", role="editor")
                    for i in range(5)
                ),
                return_exceptions=True,
            )
            waited = loop.time() - started
        finally:
            holder.rollback()
            holder.close()
        member = await store.workspaces.set_member(workspace_id=workspace, user_id="after", role="editor")
    assert all(isinstance(result, StoreUnavailable) for result in results), results
    assert waited < 3.0  # one after another it would be 5 s
    assert member.user_id == "after"  # the turn goes on once the lock is free


async def test_a_caller_that_leaves_while_its_document_is_created_leaves_no_unread_error(
    sqlite_url: str,
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        async with open_store(sqlite_url) as store:
            asking = asyncio.create_task(store.documents._create("no-such-workspace", "x.md"))
            await asyncio.sleep(0)  # one turn: it asked, and the creation is about to start
            (creating,) = store.documents._creations.tasks
            asking.cancel()  # the client went away while its document was being created
            await asyncio.gather(asking, return_exceptions=True)
            assert creating is not None
            await creating  # the creation failed (no such workspace), and nobody waits for it
            del asking, creating
            gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert [context["message"] for context in reported] == []
