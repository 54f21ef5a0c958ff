"""``Store``: the one object the server holds to reach the database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from .agents import AgentRepository
from .documents import DocumentRepository
from .engine import open_engine, translate_errors
from .event_log import EventLog
from .state_worker import StateWorker
from .workspaces import WorkspaceRepository


class Store:
    """The database, reached through one repository per aggregate: ``documents`` (update logs,
    snapshots, compaction), ``workspaces`` (workspaces, members, documents' existence),
    ``agents`` (agents' state, subscriptions) and ``events`` (the event log). Every method
    raises ``StoreUnavailable`` when the database cannot be used."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine  # for migrations, tests and tools; the server uses the repositories
        self.state_worker = StateWorker()  # compaction's Yjs work, off the event loop
        self.documents = DocumentRepository(engine, self.state_worker)
        self.workspaces = WorkspaceRepository(engine)
        self.agents = AgentRepository(engine)
        self.events = EventLog(engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @translate_errors
    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))


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
