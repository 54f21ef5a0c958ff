"""Documents: the update log, snapshots, loading and compaction.

Invariants:
- every row of ``document_updates`` holds an update exactly as a client sent it;
- a snapshot is the document's own encoded state after applying every update row compaction has
  deleted for that document (see ``yjs_state``): it holds what the document holds, not
  everything it ever held;
- compaction deletes exactly the rows it merged, in the transaction that writes the snapshot.
So snapshot + remaining rows always hold every accepted update, whatever runs concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Row, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .engine import insert_ignore, translate_errors, writing
from .errors import NotFound
from .state_worker import StateWorker
from .tables import document_snapshots, document_updates, documents
from .yjs_state import StateBuilder

_APPEND_SQL: dict[str, str] = {}


def _append_sql(dialect: Any) -> str:
    """``INSERT INTO document_updates (document_id, data)`` in ``dialect``'s own placeholders."""
    sql = _APPEND_SQL.get(dialect.name)
    if sql is None:
        statement = insert(document_updates).inline()  # no RETURNING of the new ids
        compiled = statement.compile(dialect=dialect, column_keys=["document_id", "data"])
        if list(compiled.positiontup or ()) != ["document_id", "data"]:
            raise RuntimeError(f"unexpected parameter order for {dialect.name}: {compiled.positiontup}")
        sql = _APPEND_SQL[dialect.name] = str(compiled)
    return sql


DELETE_CHUNK = 5_000  # row ids per DELETE statement
CREATE_BATCH = 500  # documents created per INSERT (two parameters each)
CREATE_CONCURRENCY = 4  # batches of them created at once (each in its own transaction)
READ_BATCH = 25  # documents read together by loads asked for at once
READ_CONCURRENCY = 4  # batches of them read at once (each on a pooled connection)
DocumentKey = tuple[str, str]  # workspace id, document path
COMPACT_PAGE_ROWS = 1_000  # row ids and sizes listed per query while compacting
COMPACT_CHUNK_BYTES = 1024 * 1024  # update bytes read and applied at once while compacting


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """What loading a document returns: the updates to apply, oldest first (the snapshot, if
    any, comes first), and the size of the tail not yet compacted."""

    id: int
    updates: list[bytes]
    tail_count: int
    tail_bytes: int
    created: bool = False  # the document did not exist before this load


@dataclass(frozen=True, slots=True)
class Compaction:
    """What one compaction did: rows merged into the snapshot (0: nothing to do, or another
    compaction got there first) and the snapshot's size in bytes."""

    document_id: int
    merged: int
    snapshot_bytes: int


async def _document_id(conn: AsyncConnection, workspace_id: str, path: str) -> int | None:
    result = await conn.execute(
        select(documents.c.id).where(documents.c.workspace_id == workspace_id, documents.c.path == path)
    )
    return result.scalar_one_or_none()


class _Superseded(Exception):
    """Another compaction of the same document committed first; this one rolls back."""


class Builder(Protocol):
    """Builds a document's encoded state from its updates: ``StateBuilder``, here or in a
    worker process (``state_worker.RemoteBuilder``)."""

    async def apply(self, updates: list[bytes]) -> None: ...

    async def encode(self) -> bytes: ...


class _LocalBuilder:
    """``StateBuilder`` in this process, for callers without a worker (tests, tools)."""

    def __init__(self) -> None:
        self._builder = StateBuilder()

    async def apply(self, updates: list[bytes]) -> None:
        self._builder.apply(updates)

    async def encode(self) -> bytes:
        return self._builder.encode()


@contextlib.asynccontextmanager
async def _builder(worker: StateWorker | None) -> AsyncIterator[Builder]:
    if worker is None:
        yield _LocalBuilder()
    else:
        async with worker.build() as remote:
            yield remote


async def _lock_for_compaction(conn: AsyncConnection, document_id: int) -> None:
    """Serialise compactions of one document (PostgreSQL). ``FOR NO KEY UPDATE`` conflicts with
    itself but not with the ``FOR KEY SHARE`` lock that inserting a row referencing the document
    takes, so appends go on while a compaction runs (PostgreSQL manual, "Row-Level Locks")."""
    if conn.dialect.name == "postgresql":
        query = select(documents.c.id).where(documents.c.id == document_id)
        await conn.execute(query.with_for_update(key_share=True))


async def _compact(conn: AsyncConnection, document_id: int, chunk_bytes: int, builder: Builder) -> Compaction:
    snapshot_row = (
        await conn.execute(
            select(document_snapshots.c.state, document_snapshots.c.merged_updates).where(
                document_snapshots.c.document_id == document_id
            )
        )
    ).one_or_none()
    snapshot_bytes = len(snapshot_row.state) if snapshot_row else 0
    upper = (
        await conn.execute(
            select(func.max(document_updates.c.id)).where(document_updates.c.document_id == document_id)
        )
    ).scalar_one_or_none()
    if upper is None:
        return Compaction(document_id=document_id, merged=0, snapshot_bytes=snapshot_bytes)
    seen_merged: int | None = None
    if snapshot_row is not None:
        await builder.apply([snapshot_row.state])
        seen_merged = snapshot_row.merged_updates
        del snapshot_row  # an old snapshot can be large: hold only the document from here on
    merged_ids = array("q")
    async for batch in _update_batches(conn, document_id, upper, chunk_bytes):
        await builder.apply([row.data for row in batch])
        merged_ids.extend(row.id for row in batch)
    if not merged_ids:
        return Compaction(document_id=document_id, merged=0, snapshot_bytes=snapshot_bytes)
    state = await builder.encode()
    await _write_snapshot(conn, document_id, state, seen_merged, len(merged_ids))
    for start in range(0, len(merged_ids), DELETE_CHUNK):
        chunk = merged_ids[start : start + DELETE_CHUNK].tolist()
        await conn.execute(delete(document_updates).where(document_updates.c.id.in_(chunk)))
    return Compaction(document_id=document_id, merged=len(merged_ids), snapshot_bytes=len(state))


async def _update_batches(
    conn: AsyncConnection, document_id: int, upper: int, chunk_bytes: int
) -> AsyncIterator[Sequence[Row[Any, Any]]]:
    """The document's update rows up to id ``upper``, oldest first, in batches of at most
    ``chunk_bytes`` (or one row, when a single row is larger). Ids and sizes are listed a page at
    a time; the data is read one batch at a time."""
    after = 0
    while True:
        page = (
            await conn.execute(
                select(document_updates.c.id, func.length(document_updates.c.data).label("size"))
                .where(
                    document_updates.c.document_id == document_id,
                    document_updates.c.id > after,
                    document_updates.c.id <= upper,
                )
                .order_by(document_updates.c.id)
                .limit(COMPACT_PAGE_ROWS)
            )
        ).all()
        if not page:
            return
        after = page[-1].id
        ids: list[int] = []
        size = 0
        for row in page:
            if ids and size + row.size > chunk_bytes:
                yield await _read_updates(conn, ids)
                ids, size = [], 0
            ids.append(row.id)
            size += row.size
        yield await _read_updates(conn, ids)


async def _read_updates(conn: AsyncConnection, ids: list[int]) -> Sequence[Row[Any, Any]]:
    query = select(document_updates.c.id, document_updates.c.data).where(document_updates.c.id.in_(ids))
    return (await conn.execute(query.order_by(document_updates.c.id))).all()


async def _write_snapshot(
    conn: AsyncConnection, document_id: int, state: bytes, seen_merged: int | None, merged: int
) -> None:
    """Write the new snapshot, provided nobody replaced the one this compaction started from."""
    if seen_merged is None:
        values = {"document_id": document_id, "state": state, "merged_updates": merged}
        result = await conn.execute(insert_ignore(conn, document_snapshots, values))
    else:
        result = await conn.execute(
            update(document_snapshots)
            .where(
                document_snapshots.c.document_id == document_id,
                document_snapshots.c.merged_updates == seen_merged,
            )
            .values(state=state, merged_updates=seen_merged + merged, updated_at=func.now())
        )
    if result.rowcount != 1:
        raise _Superseded


async def _stored(conn: AsyncConnection, document_id: int) -> StoredDocument:
    """The stored state of an existing document: its snapshot, then its log's rows, oldest first."""
    return (await _stored_many(conn, [document_id]))[document_id]


async def _stored_many(conn: AsyncConnection, document_ids: Sequence[int]) -> dict[int, StoredDocument]:
    """``_stored`` of each document, in two queries for all of them."""
    # The tails are read before the snapshots: a compaction committing in between moves rows from
    # a tail into its snapshot, so reading in this order can only see a row twice (harmless: Yjs
    # updates are idempotent), never miss one.
    tails: dict[int, list[bytes]] = {document_id: [] for document_id in document_ids}
    query = (
        select(document_updates.c.document_id, document_updates.c.data)
        .where(document_updates.c.document_id.in_(document_ids))
        .order_by(document_updates.c.document_id, document_updates.c.id)
    )
    for document_id, data in await conn.execute(query):
        tails[document_id].append(data)
    query = select(document_snapshots.c.document_id, document_snapshots.c.state).where(
        document_snapshots.c.document_id.in_(document_ids)
    )
    snapshots: dict[int, bytes] = {document_id: state for document_id, state in await conn.execute(query)}
    stored = {}
    for document_id, tail in tails.items():
        snapshot = snapshots.get(document_id)
        stored[document_id] = StoredDocument(
            id=document_id,
            updates=([snapshot] if snapshot else []) + tail,
            tail_count=len(tail),
            tail_bytes=sum(len(u) for u in tail),
        )
    return stored


K = TypeVar("K")
R = TypeVar("R")


class Batches(Generic[K, R]):
    """Requests for keys made in one turn of the event loop go together into one batch: ``handle``
    gets up to ``size`` keys, sorted, and returns each key's result or exception. The first
    clients of a fresh server, or of a deploy, open many documents at once; one query (or one
    ``INSERT``) for many of them costs little more than one for each. Up to ``concurrency``
    batches run at once, so that a slow one (a large document's rows) holds up only its own keys;
    a key asked for again while its batch runs joins it."""

    def __init__(
        self,
        handle: Callable[[list[K]], Awaitable[dict[K, R | Exception]]],
        *,
        size: int,
        concurrency: int,
        name: str,
    ) -> None:
        self._handle = handle
        self._size = size
        self._concurrency = concurrency
        self._name = name
        self._waiting: dict[K, asyncio.Future[R]] = {}  # asked for, in no batch yet
        self._taken: dict[K, asyncio.Future[R]] = {}  # in a batch under way
        self.tasks: set[asyncio.Task[None]] = set()  # the batches under way, and one about to start
        self._starting = False  # a batch task is created and takes what waits when it starts

    async def get(self, key: K) -> tuple[R, bool]:
        """``key``'s result, and whether this call asked for it first (False: it joined another
        caller's request). Cancelled, the request goes on; its outcome is nobody's to read."""
        future = self._waiting.get(key) or self._taken.get(key)
        first = future is None
        if future is None:
            future = self._waiting[key] = asyncio.get_running_loop().create_future()
            self._start()
        try:
            return await asyncio.shield(future), first
        except asyncio.CancelledError:
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            raise

    def _start(self) -> None:
        if self._waiting and not self._starting and len(self.tasks) < self._concurrency:
            self._starting = True
            task = asyncio.create_task(self._run(), name=self._name)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self) -> None:
        self._starting = False
        try:
            while self._waiting:
                keys = sorted(itertools.islice(self._waiting, self._size))  # type: ignore[type-var]
                for key in keys:
                    self._taken[key] = self._waiting.pop(key)
                self._start()  # more than one batch waits: the next one alongside
                try:
                    results = await self._handle(keys)
                except Exception as exc:  # noqa: BLE001 - every waiter gets it (translated where it is awaited)
                    results = dict.fromkeys(keys, exc)
                for key in keys:
                    future = self._taken.pop(key)
                    result = results[key]
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            # No longer counted from here, not from its done callback on a later turn: a key
            # asked for in between (as every batch under way ends at once) starts a batch.
            self.tasks.discard(asyncio.current_task())


class DocumentRepository:
    """Documents' update logs and snapshots."""

    def __init__(self, engine: AsyncEngine, worker: StateWorker | None = None) -> None:
        self.engine = engine
        self.worker = worker  # compaction's Yjs work runs in its process; None: in this one
        # Documents opened at once are read together, and those that do not exist created together.
        self._reads: Batches[DocumentKey, StoredDocument | None] = Batches(
            self._read, size=READ_BATCH, concurrency=READ_CONCURRENCY, name="read-documents"
        )
        self._creations: Batches[DocumentKey, tuple[int, bool]] = Batches(
            self._insert, size=CREATE_BATCH, concurrency=CREATE_CONCURRENCY, name="create-documents"
        )

    @translate_errors
    async def ensure(self, workspace_id: str, path: str) -> tuple[int, bool]:
        """Return the document's id, creating the row if it does not exist yet. The workspace must
        exist (``NotFound`` otherwise). Returns the id and whether this call created the row.
        An existing document is only read: no write transaction."""
        async with self.engine.connect() as conn:
            document_id = await _document_id(conn, workspace_id, path)
        if document_id is not None:
            return document_id, False
        return await self._create(workspace_id, path)

    async def _create(self, workspace_id: str, path: str) -> tuple[int, bool]:
        """Create the document's row; its id, and whether this call created it (False when
        another caller or instance did). Documents asked for meanwhile are created together, in
        one transaction and one multi-row ``INSERT`` (``CREATE_BATCH`` at a time, up to
        ``CREATE_CONCURRENCY`` batches at once: a batch waiting for a row another instance is
        creating holds up only its own documents; sorted, so that transactions creating
        overlapping documents take their row locks in one order on PostgreSQL and cannot
        deadlock; on SQLite the batches write in turn). ``NotFound`` when the workspace does not
        exist."""
        (document_id, created), first = await self._creations.get((workspace_id, path))
        return document_id, created and first

    async def _read(self, keys: list[DocumentKey]) -> dict[DocumentKey, StoredDocument | Exception | None]:
        """The stored state of each of ``keys`` (None: it does not exist), in three queries on one
        connection."""
        by_workspace: dict[str, list[str]] = {}
        for workspace_id, path in keys:
            by_workspace.setdefault(workspace_id, []).append(path)
        query = select(documents.c.id, documents.c.workspace_id, documents.c.path).where(
            or_(
                *(
                    and_(documents.c.workspace_id == workspace_id, documents.c.path.in_(paths))
                    for workspace_id, paths in by_workspace.items()
                )
            )
        )
        async with self.engine.connect() as conn:
            found = {(row.workspace_id, row.path): row.id for row in await conn.execute(query)}
            stored = await _stored_many(conn, list(found.values())) if found else {}
        return {key: stored[found[key]] if key in found else None for key in keys}

    async def _insert(
        self, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, bool] | Exception]:
        """Create the rows of ``keys``: each one's id and whether this created it (False: it
        existed already), or ``NotFound`` for a workspace that does not exist."""
        values = [{"workspace_id": workspace_id, "path": path} for workspace_id, path in keys]
        try:
            async with writing(self.engine) as conn:
                statement = insert_ignore(conn, documents, values).returning(
                    documents.c.id, documents.c.workspace_id, documents.c.path
                )
                results: dict[DocumentKey, tuple[int, bool] | Exception] = {
                    (row.workspace_id, row.path): (row.id, True) for row in await conn.execute(statement)
                }
                for workspace_id, path in keys:
                    if (workspace_id, path) not in results:  # created meanwhile (another instance)
                        existing = await _document_id(conn, workspace_id, path)
                        assert existing is not None
                        results[workspace_id, path] = (existing, False)
                return results
        except IntegrityError:  # a workspace that does not exist: each on its own, to know which
            if len(keys) == 1:
                return {keys[0]: NotFound(f"workspace {keys[0][0]!r} does not exist")}
            return {key: (await self._insert([key]))[key] for key in keys}

    @translate_errors
    async def exists(self, workspace_id: str, path: str) -> bool:
        async with self.engine.connect() as conn:
            return await _document_id(conn, workspace_id, path) is not None

    @translate_errors
    async def load(self, workspace_id: str, path: str) -> StoredDocument:
        """Read a document: its snapshot and the updates not merged into it yet. A document that
        does not exist yet is created (``ensure``), empty. An existing one is read without a
        write transaction; documents loaded at once are read together (``READ_BATCH`` at a time,
        ``READ_CONCURRENCY`` batches at once: one query for their ids, one for their logs' rows,
        one for their snapshots)."""
        stored, _ = await self._reads.get((workspace_id, path))
        if stored is not None:
            return stored
        document_id, created = await self._create(workspace_id, path)
        if created:
            return StoredDocument(id=document_id, updates=[], tail_count=0, tail_bytes=0, created=True)
        async with self.engine.connect() as conn:  # another instance created it meanwhile
            return await _stored(conn, document_id)

    @translate_errors
    async def append(self, rows: Sequence[tuple[int, bytes]]) -> None:
        """Append ``(document_id, update)`` rows in one transaction (group commit), as one
        ``executemany`` of the driver: the rows go to it as they are, without a parameter dict and
        type processing per row (bytes and integers need none)."""
        if not rows:
            return
        try:
            async with writing(self.engine) as conn:
                await conn.exec_driver_sql(_append_sql(conn.dialect), list(rows))
        except IntegrityError:
            # A document was deleted (perhaps by another instance) while its updates waited: store
            # the rows of the documents that still exist, drop the others.
            async with writing(self.engine) as conn:
                wanted = {doc for doc, _ in rows}
                found = await conn.execute(select(documents.c.id).where(documents.c.id.in_(wanted)))
                existing = set(found.scalars())
                kept = [{"document_id": doc, "data": data} for doc, data in rows if doc in existing]
                if kept:
                    await conn.execute(insert(document_updates), kept)

    @translate_errors
    async def compact(self, document_id: int, *, chunk_bytes: int = COMPACT_CHUNK_BYTES) -> Compaction:
        """Replace the document's snapshot and update rows by its own encoded state, in one
        transaction: the snapshot and the rows are applied to a fresh Yjs document (which drops the
        content of deleted items), the document's encoding becomes the new snapshot, and exactly the
        rows that were applied are deleted. See ``yjs_state`` for why this duplicates nothing.

        Memory stays bounded: rows are read in batches of about ``chunk_bytes`` and applied as they
        come, so only the document, one batch and the ids of merged rows are held at once. Appends
        may continue meanwhile: rows stored after compaction started stay in the log. On PostgreSQL
        compactions of one document are serialised across instances by a row lock that does not
        block appends; a compaction that finds its snapshot changed underneath rolls back and merges
        nothing. With a ``worker``, the Yjs work runs in its process (see ``state_worker``), so that
        no pycrdt call holds this process's event loop for long. Raises ``StoreUnavailable`` when the
        database fails, ``ValueError`` when a stored row is not a Yjs update.
        """
        async with _builder(self.worker) as builder:
            try:
                # Not ``writing``: a compaction reads and merges for a long while before it writes,
                # and appends must not wait for that.
                async with self.engine.begin() as conn:
                    await _lock_for_compaction(conn, document_id)
                    return await _compact(conn, document_id, chunk_bytes, builder)
            except (_Superseded, IntegrityError):  # IntegrityError: the document was deleted meanwhile
                return Compaction(document_id=document_id, merged=0, snapshot_bytes=0)
