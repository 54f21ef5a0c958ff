"""Documents: the update log, snapshots, loading and compaction.

Invariants:
- every row of ``document_updates`` holds an update exactly as a client sent it;
- a snapshot is the Yjs merge of every update row compaction has deleted for that document;
- compaction deletes exactly the rows it merged, in the transaction that writes the snapshot.
So snapshot + remaining rows always hold every accepted update, whatever runs concurrently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pycrdt import merge_updates
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .engine import insert_ignore, translate_errors
from .errors import NotFound
from .tables import document_snapshots, document_updates, documents

DELETE_CHUNK = 5_000


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
    document_id: int
    merged: int
    snapshot_bytes: int


async def _document_id(conn: AsyncConnection, workspace_id: str, path: str) -> int | None:
    result = await conn.execute(
        select(documents.c.id).where(documents.c.workspace_id == workspace_id, documents.c.path == path)
    )
    return result.scalar_one_or_none()


@translate_errors
async def ensure_document(engine: AsyncEngine, *, workspace_id: str, path: str) -> tuple[int, bool]:
    """Return the document's id, creating the row if it does not exist yet. The workspace must
    exist (``NotFound`` otherwise). Returns the id and whether this call created the row."""
    created = False
    try:
        async with engine.begin() as conn:
            document_id = await _document_id(conn, workspace_id, path)
            if document_id is None:
                result = await conn.execute(
                    insert_ignore(conn, documents, {"workspace_id": workspace_id, "path": path})
                )
                created = result.rowcount == 1
                document_id = await _document_id(conn, workspace_id, path)
    except IntegrityError:
        raise NotFound(f"workspace {workspace_id!r} does not exist") from None
    assert document_id is not None
    return document_id, created


@translate_errors
async def document_exists(engine: AsyncEngine, *, workspace_id: str, path: str) -> bool:
    async with engine.connect() as conn:
        return await _document_id(conn, workspace_id, path) is not None


@translate_errors
async def load_document(engine: AsyncEngine, *, workspace_id: str, path: str) -> StoredDocument:
    """Read a document: its snapshot and the updates not merged into it yet."""
    document_id, created = await ensure_document(engine, workspace_id=workspace_id, path=path)
    async with engine.connect() as conn:
        # The tail is read before the snapshot: a compaction committing in between moves rows
        # from the tail into the snapshot, so reading in this order can only see a row twice
        # (harmless: Yjs updates are idempotent), never miss one.
        tail = (
            (
                await conn.execute(
                    select(document_updates.c.data)
                    .where(document_updates.c.document_id == document_id)
                    .order_by(document_updates.c.id)
                )
            )
            .scalars()
            .all()
        )
        snapshot = (
            await conn.execute(
                select(document_snapshots.c.state).where(document_snapshots.c.document_id == document_id)
            )
        ).scalar_one_or_none()
    updates = ([snapshot] if snapshot else []) + list(tail)
    return StoredDocument(
        id=document_id,
        updates=updates,
        tail_count=len(tail),
        tail_bytes=sum(len(u) for u in tail),
        created=created,
    )


@translate_errors
async def append_updates(engine: AsyncEngine, *, rows: Sequence[tuple[int, bytes]]) -> None:
    """Append ``(document_id, update)`` rows in one transaction (group commit)."""
    if not rows:
        return
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(document_updates), [{"document_id": doc, "data": data} for doc, data in rows]
            )
    except IntegrityError:
        # A document was deleted (perhaps by another instance) while its updates waited: store
        # the rows of the documents that still exist, drop the others.
        async with engine.begin() as conn:
            wanted = {doc for doc, _ in rows}
            found = await conn.execute(select(documents.c.id).where(documents.c.id.in_(wanted)))
            existing = set(found.scalars())
            kept = [{"document_id": doc, "data": data} for doc, data in rows if doc in existing]
            if kept:
                await conn.execute(insert(document_updates), kept)


@translate_errors
async def compact_document(engine: AsyncEngine, *, document_id: int) -> Compaction:
    """Merge the document's update rows into its snapshot and delete exactly those rows, in one
    transaction. Appends may continue meanwhile: rows committed after the read stay in the log."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Serialises compactions of one document across instances; appends are not blocked.
            await conn.execute(select(documents.c.id).where(documents.c.id == document_id).with_for_update())
        rows = (
            await conn.execute(
                select(document_updates.c.id, document_updates.c.data)
                .where(document_updates.c.document_id == document_id)
                .order_by(document_updates.c.id)
            )
        ).all()
        snapshot_row = (
            await conn.execute(
                select(document_snapshots.c.state, document_snapshots.c.merged_updates).where(
                    document_snapshots.c.document_id == document_id
                )
            )
        ).one_or_none()
        if not rows:
            size = len(snapshot_row.state) if snapshot_row else 0
            return Compaction(document_id=document_id, merged=0, snapshot_bytes=size)
        parts = ([snapshot_row.state] if snapshot_row else []) + [row.data for row in rows]
        state = merge_updates(*parts) if len(parts) > 1 else parts[0]
        if snapshot_row is None:
            await conn.execute(
                insert(document_snapshots).values(
                    document_id=document_id, state=state, merged_updates=len(rows)
                )
            )
        else:
            await conn.execute(
                update(document_snapshots)
                .where(document_snapshots.c.document_id == document_id)
                .values(
                    state=state,
                    merged_updates=document_snapshots.c.merged_updates + len(rows),
                    updated_at=func.now(),
                )
            )
        ids = [row.id for row in rows]
        for start in range(0, len(ids), DELETE_CHUNK):
            await conn.execute(
                delete(document_updates).where(document_updates.c.id.in_(ids[start : start + DELETE_CHUNK]))
            )
    return Compaction(document_id=document_id, merged=len(rows), snapshot_bytes=len(state))
