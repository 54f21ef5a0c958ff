"""Agent executions: who may report them, the latest state of each agent, and the events.

Publishers are tokens with the ``service`` role, or the user who started the agent. A start may
name the workspace the agent works in; that attaches the agent to the workspace (a
``workspace_update`` event, and the agent's presence in the workspace's main document).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from crdt_store import Store
from crdt_store import agents as agent_store
from crdt_store.agents import AgentState

from .access import resolve_access
from .auth import GlobalRole, Principal
from .config import Settings
from .errors import Forbidden, ServiceError
from .events.hub import EventHub, agent_topic, workspace_topic
from .events.models import (
    AgentEvent,
    AgentExecutionComplete,
    AgentExecutionStart,
    AgentStatus,
    WorkspaceUpdateData,
    iso_z,
)

log = logging.getLogger(__name__)


def agent_public(state: AgentState) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return None if value is None else iso_z(value)

    return {
        "agent_id": state.id,
        "workspace_id": state.workspace_id,
        "user_id": state.started_by,
        "task": state.task,
        "status": state.status,
        "progress": state.progress,
        "current_step": state.current_step,
        "result": state.result,
        "execution_time": state.execution_time,
        "started_at": iso(state.started_at),
        "updated_at": iso(state.updated_at),
        "completed_at": iso(state.completed_at),
    }


class AgentService:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        hub: EventHub,
        *,
        on_state: Callable[[AgentState], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.hub = hub
        self.on_state = on_state  # e.g. the agent's presence in its workspace's document

    def is_privileged(self, principal: Principal) -> bool:
        return principal.role in (GlobalRole.SERVICE, GlobalRole.ADMIN) or not self.settings.auth_enabled

    async def can_see(
        self, principal: Principal, state: AgentState | None, _access: dict[str, bool] | None = None
    ) -> bool:
        """Privileged callers and the starter see an agent; others need access to its workspace.
        ``_access`` caches that answer per workspace across calls (see ``visible``)."""
        if state is None or self.is_privileged(principal) or state.started_by == principal.user_id:
            return True
        if state.workspace_id is None:
            return False
        cache = _access if _access is not None else {}
        if state.workspace_id not in cache:
            try:
                await resolve_access(self.store, principal, state.workspace_id)
                cache[state.workspace_id] = True
            except ServiceError:  # not found or forbidden: either way, not visible
                cache[state.workspace_id] = False
        return cache[state.workspace_id]

    async def visible(self, principal: Principal, states: list[AgentState]) -> list[AgentState]:
        """The agents ``principal`` may see, resolving each workspace's access once."""
        access: dict[str, bool] = {}
        return [state for state in states if await self.can_see(principal, state, access)]

    async def report(self, principal: Principal, message: AgentEvent) -> int:
        """Validate authority, record the new state, publish the event. Returns the event id."""
        data = message.data
        current = await agent_store.get_agent(self.store.engine, agent_id=data.agent_id)
        if not self.is_privileged(principal):
            if current is not None and current.started_by not in (None, principal.user_id):
                raise Forbidden(
                    f"agent {data.agent_id!r} was started by someone else; "
                    "only they or a service may report it"
                )
            if current is None and not isinstance(message, AgentExecutionStart):
                raise Forbidden(f"agent {data.agent_id!r} has not started: send agent_execution_start first")
        payload = data.model_dump(mode="json")
        now = datetime.now(UTC)
        values: dict[str, Any] = {"updated_at": now}
        previous_workspace = current.workspace_id if current else None
        if isinstance(message, AgentExecutionStart):
            if data.workspace_id is not None:
                # Attaching an agent to a workspace needs the workspace, and the right to edit there.
                access = await resolve_access(self.store, principal, data.workspace_id)
                if not access.role.can_write:
                    raise Forbidden("attaching an agent to a workspace needs the editor role there")
            payload["user_id"] = data.user_id or principal.user_id
            values.update(
                workspace_id=data.workspace_id,
                started_by=principal.user_id
                if current is None or not current.started_by
                else current.started_by,
                task=data.task,
                status=data.status.value,
                progress=0.0,
                current_step=None,
                result=None,
                execution_time=None,
                started_at=data.timestamp,
                completed_at=None,
            )
        elif isinstance(message, AgentExecutionComplete):
            execution_time = data.execution_time
            if execution_time is None and current is not None and current.started_at is not None:
                started = (
                    current.started_at
                    if current.started_at.tzinfo
                    else current.started_at.replace(tzinfo=UTC)
                )
                execution_time = max(0.0, (data.timestamp - started).total_seconds())
            payload["execution_time"] = execution_time
            values.update(
                status=data.status.value,
                result=data.result,
                execution_time=execution_time,
                completed_at=data.timestamp,
            )
            if data.status is AgentStatus.COMPLETED:
                values["progress"] = 100.0
        else:
            values.update(status=data.status.value, progress=data.progress, current_step=data.current_step)
        state = await agent_store.save_agent(self.store.engine, agent_id=data.agent_id, values=values)
        if state.workspace_id is not None:
            payload.setdefault("workspace_id", state.workspace_id)
        event_id = await self.hub.publish(agent_topic(data.agent_id), message.type, payload)
        await self._workspace_changes(message, state, previous_workspace)
        if self.on_state is not None:
            self.on_state(state)
        return event_id

    async def _workspace_changes(self, message: AgentEvent, state: AgentState, previous: str | None) -> None:
        async def tell(workspace_id: str, update_type: str) -> None:
            data = WorkspaceUpdateData(workspace_id=workspace_id, update_type=update_type, agent_id=state.id)  # type: ignore[arg-type]
            await self.hub.publish(
                workspace_topic(workspace_id), "workspace_update", data.model_dump(mode="json")
            )

        if isinstance(message, AgentExecutionStart):
            if previous is not None and previous != state.workspace_id:
                await tell(previous, "agent_removed")
            if state.workspace_id is not None:
                await tell(state.workspace_id, "agent_added")
        elif isinstance(message, AgentExecutionComplete) and state.workspace_id is not None:
            await tell(state.workspace_id, "agent_removed")
