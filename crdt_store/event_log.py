"""The event log: every server-sent event with its id, kept for resuming after a reconnect."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import translate_errors
from .tables import events


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    topic: str
    type: str
    data: str  # JSON text


class EventLog:
    """The event log: append, read after an id, trim to the retention."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @translate_errors
    async def append(self, *, topic: str, type: str, data: str) -> int:
        """Store an event; returns its id (increasing across the whole log)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                insert(events).values(topic=topic, type=type, data=data).returning(events.c.id)
            )
            return int(result.scalar_one())

    @translate_errors
    async def after(self, *, after_id: int, topics: Iterable[str], limit: int = 10_000) -> list[StoredEvent]:
        topics = list(topics)
        if not topics:
            return []
        query = (
            select(events.c.id, events.c.topic, events.c.type, events.c.data)
            .where(events.c.id > after_id, events.c.topic.in_(topics))
            .order_by(events.c.id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [StoredEvent(**row._mapping) for row in (await conn.execute(query)).all()]

    @translate_errors
    async def recent(self, *, topic: str, limit: int = 50) -> list[StoredEvent]:
        query = (
            select(events.c.id, events.c.topic, events.c.type, events.c.data)
            .where(events.c.topic == topic)
            .order_by(events.c.id.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [StoredEvent(**row._mapping) for row in reversed(rows)]

    @translate_errors
    async def oldest_id(self) -> int | None:
        async with self.engine.connect() as conn:
            oldest: int | None = (await conn.execute(select(func.min(events.c.id)))).scalar()
        return oldest

    @translate_errors
    async def trim(self, *, keep: int) -> int:
        """Keep the newest ``keep`` events; returns how many were deleted."""
        async with self.engine.begin() as conn:
            newest = (await conn.execute(select(func.max(events.c.id)))).scalar()
            if newest is None:
                return 0
            result = await conn.execute(delete(events).where(events.c.id <= newest - keep))
        return result.rowcount
