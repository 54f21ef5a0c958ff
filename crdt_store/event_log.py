"""The event log: every server-sent event with its id, kept for resuming after a reconnect.

Events are appended in batches (group commit): one transaction stores a batch of events and the
agents' states they change, so a stored event and the state it reports are never apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .engine import translate_errors, writing
from .tables import agents, events


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    topic: str
    type: str
    data: str  # JSON text


@dataclass(frozen=True, slots=True)
class AgentChange:
    """Columns of an agent's row that an event sets. With ``upsert`` the row is created when
    there is none (a start sets every column); otherwise only an existing row is updated. A
    ``start`` also records its event's id as ``start_event_id``."""

    agent_id: str
    values: dict[str, Any]
    upsert: bool = False
    start: bool = False


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append: its topic, type, JSON text and the agent state it changes, if any."""

    topic: str
    type: str
    data: str
    agent: AgentChange | None = field(default=None)


def _merged(changes: Iterable[AgentChange]) -> list[AgentChange]:
    """One change per agent: the batch's changes applied in order."""
    merged: dict[str, AgentChange] = {}
    for change in changes:
        before = merged.get(change.agent_id)
        if before is None or change.upsert:
            merged[change.agent_id] = change
        else:
            merged[change.agent_id] = AgentChange(
                change.agent_id, {**before.values, **change.values}, before.upsert
            )
    return list(merged.values())


async def _save_agent(conn: AsyncConnection, change: AgentChange) -> None:
    if not change.upsert:
        await conn.execute(update(agents).where(agents.c.id == change.agent_id).values(**change.values))
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(agents).values(id=change.agent_id, **change.values)
    await conn.execute(statement.on_conflict_do_update(index_elements=[agents.c.id], set_=change.values))


class EventLog:
    """The event log: append, read after an id, trim to the retention."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @translate_errors
    async def append(self, batch: Sequence[NewEvent]) -> list[int]:
        """Store a batch of events, and the agent states they change, in one transaction.
        Returns the events' ids in the batch's order (increasing across the whole log)."""
        if not batch:
            return []
        rows = [{"topic": e.topic, "type": e.type, "data": e.data} for e in batch]
        async with writing(self.engine) as conn:
            if conn.dialect.name == "sqlite":
                # One writer holds SQLite's lock, and a multi-row INSERT numbers its rows in
                # order: the ids are the returned ones, ascending (asking SQLAlchemy to sort
                # them instead makes it insert row by row).
                result = await conn.execute(insert(events).returning(events.c.id), rows)
                ids = sorted(int(event_id) for event_id in result.scalars())
            else:
                result = await conn.execute(
                    insert(events).returning(events.c.id, sort_by_parameter_order=True), rows
                )
                ids = [int(event_id) for event_id in result.scalars()]
            changes = [
                AgentChange(e.agent.agent_id, {**e.agent.values, "start_event_id": event_id}, e.agent.upsert)
                if e.agent.start
                else e.agent
                for e, event_id in zip(batch, ids, strict=True)
                if e.agent is not None
            ]
            for change in _merged(changes):
                await _save_agent(conn, change)
        return ids

    @translate_errors
    async def after(self, *, after_id: int, topics: Iterable[str], limit: int) -> list[StoredEvent]:
        """Up to ``limit`` events of ``topics`` with ids above ``after_id``, oldest first."""
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
    async def recent(self, *, topic: str, limit: int = 50, since_id: int = 0) -> list[StoredEvent]:
        """The ``limit`` newest events of ``topic`` with ids from ``since_id``, oldest first."""
        query = (
            select(events.c.id, events.c.topic, events.c.type, events.c.data)
            .where(events.c.topic == topic, events.c.id >= since_id)
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
        async with writing(self.engine) as conn:
            newest = (await conn.execute(select(func.max(events.c.id)))).scalar()
            if newest is None:
                return 0
            result = await conn.execute(delete(events).where(events.c.id <= newest - keep))
        return result.rowcount
