"""Agents' latest execution state, and per-user agent subscriptions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import insert_ignore, translate_errors, writing
from .tables import agent_subscriptions, agents


@dataclass(frozen=True, slots=True)
class AgentState:
    id: str
    workspace_id: str | None
    started_by: str | None
    user_id: str | None
    start_event_id: int | None
    task: str | None
    status: str
    progress: float
    current_step: str | None
    result: str | None
    execution_time: float | None
    started_at: datetime | None
    updated_at: datetime
    completed_at: datetime | None


class AgentRepository:
    """Agents' latest execution state and users' subscriptions to agents."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @translate_errors
    async def get(self, *, agent_id: str) -> AgentState | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(agents).where(agents.c.id == agent_id))).one_or_none()
        return AgentState(**row._mapping) if row else None

    @translate_errors
    async def find(
        self, *, workspace_id: str | None = None, status: str | None = None, limit: int = 500
    ) -> list[AgentState]:
        query = select(agents).order_by(agents.c.updated_at.desc(), agents.c.id).limit(limit)
        if workspace_id is not None:
            query = query.where(agents.c.workspace_id == workspace_id)
        if status is not None:
            query = query.where(agents.c.status == status)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [AgentState(**row._mapping) for row in rows]

    @translate_errors
    async def subscribe(self, *, user_id: str, agent_id: str) -> None:
        async with writing(self.engine) as conn:
            await conn.execute(
                insert_ignore(conn, agent_subscriptions, {"user_id": user_id, "agent_id": agent_id})
            )

    @translate_errors
    async def unsubscribe(self, *, user_id: str, agent_id: str) -> bool:
        async with writing(self.engine) as conn:
            result = await conn.execute(
                delete(agent_subscriptions).where(
                    agent_subscriptions.c.user_id == user_id, agent_subscriptions.c.agent_id == agent_id
                )
            )
        return result.rowcount > 0

    @translate_errors
    async def subscriptions(self, *, user_id: str) -> set[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(agent_subscriptions.c.agent_id).where(agent_subscriptions.c.user_id == user_id)
            )
            return set(rows.scalars())
