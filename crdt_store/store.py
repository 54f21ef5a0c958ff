"""``Store``: the one object the server holds to reach the database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from . import documents
from .documents import Compaction, StoredDocument
from .engine import open_engine, translate_errors
from .state_worker import StateWorker


class Store:
    """Persistence of documents (and, through its engine, everything else in the schema)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.state_worker = StateWorker()  # compaction's Yjs work, off the event loop

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @translate_errors
    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def load_document(self, workspace_id: str, path: str) -> StoredDocument:
        return await documents.load_document(self.engine, workspace_id=workspace_id, path=path)

    async def document_exists(self, workspace_id: str, path: str) -> bool:
        return await documents.document_exists(self.engine, workspace_id=workspace_id, path=path)

    async def append_updates(self, rows: Sequence[tuple[int, bytes]]) -> None:
        await documents.append_updates(self.engine, rows=rows)

    async def compact_document(self, document_id: int) -> Compaction:
        return await documents.compact_document(
            self.engine, document_id=document_id, worker=self.state_worker
        )


@contextlib.asynccontextmanager
async def open_store(url: str, *, timeout: float = 10.0, wait: float = 0.0) -> AsyncIterator[Store]:
    """Connect, apply migrations, and close the pool on exit.

    ``timeout``: seconds any operation waits for a connection (or a SQLite lock) before it fails
    with ``StoreUnavailable``. ``wait``: seconds to keep retrying at start while the database is
    unavailable. Raises ``StoreUnavailable`` once ``wait`` has passed, ``StoreLocked`` when
    another process holds the SQLite file.
    """
    async with open_engine(url, timeout=timeout, wait=wait) as engine:
        store = Store(engine)
        try:
            await store.state_worker.start()
            yield store
        finally:
            await store.state_worker.close()
