"""The agent service: the one writer of agent state. Who may report an execution, who may see it,
the latest state of each agent, and the events.

Publishers are tokens with the ``service`` role, or the user who started the agent. A start may
name the workspace the agent works in; that attaches the agent to the workspace (a
``workspace_update`` event, and the agent's presence in the workspace's main document, which
``agent_presence`` draws from the events).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from crdt_store import AgentState, Store, StoredEvent

from . import metrics
from .access import resolve_access
from .auth import GlobalRole, Principal
from .cluster import Cluster, SubscribeUser
from .config import Settings
from .errors import Forbidden, NotFoundError, ServiceError
from .events.hub import EventHub, agent_topic
from .events.models import AgentEvent, AgentExecutionComplete, AgentExecutionStart, AgentExecutionUpdate
from .vocabulary import AgentStatus, iso_z
from .workspaces import WorkspaceEvents

__all__ = ["AgentService", "AgentState", "StoredEvent", "agent_public"]

log = logging.getLogger(__name__)


def agent_public(state: AgentState) -> dict[str, Any]:
    """An agent's latest state as the API shows it (``user_id``: who started it)."""

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
    """Reports executions, and answers who may see which agent.

    Arguments:
        store: agents' state, subscriptions and the event log.
        settings: whether tokens are required.
        hub: where the events go.
        workspace_events: announces agents added to and removed from workspaces.
        cluster: applies stored subscriptions to event connections on every instance.
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        hub: EventHub,
        workspace_events: WorkspaceEvents,
        cluster: Cluster,
    ) -> None:
        self.store = store
        self.settings = settings
        self.hub = hub
        self.workspace_events = workspace_events
        self.cluster = cluster

    def is_privileged(self, principal: Principal) -> bool:
        return principal.role in (GlobalRole.SERVICE, GlobalRole.ADMIN) or not self.settings.auth_enabled

    # -- seeing -----------------------------------------------------------------------------------

    async def can_see(
        self, principal: Principal, state: AgentState | None, seen: dict[str, bool] | None = None
    ) -> bool:
        """Privileged callers and the starter see an agent; others need access to its workspace.
        ``seen`` remembers that answer per workspace across calls."""
        if state is None or self.is_privileged(principal) or state.started_by == principal.user_id:
            return True
        if state.workspace_id is None:
            return False
        seen = seen if seen is not None else {}
        if state.workspace_id not in seen:
            try:
                await resolve_access(self.store, principal, state.workspace_id)
                seen[state.workspace_id] = True
            except ServiceError:  # unknown or forbidden: either way, not visible
                seen[state.workspace_id] = False
        return seen[state.workspace_id]

    async def visible(
        self, principal: Principal, *, workspace_id: str | None = None, status: AgentStatus | None = None
    ) -> list[AgentState]:
        """The agents ``principal`` may see, latest first. Raises ``UnknownWorkspace`` or
        ``Forbidden`` for a ``workspace_id`` the caller cannot read."""
        if workspace_id is not None:
            await resolve_access(self.store, principal, workspace_id)
        found = await self.store.agents.find(
            workspace_id=workspace_id, status=status.value if status else None
        )
        seen: dict[str, bool] = {}
        return [state for state in found if await self.can_see(principal, state, seen)]

    async def detail(
        self, principal: Principal, agent_id: str, *, limit: int
    ) -> tuple[AgentState, list[StoredEvent]]:
        """The agent's state and its ``limit`` most recent events. Raises ``NotFoundError`` when
        it has not reported or the caller may not see it."""
        state = await self.store.agents.get(agent_id=agent_id)
        if state is None or not await self.can_see(principal, state):
            raise NotFoundError(f"agent {agent_id!r} has not reported (or you may not see it)")
        return state, await self.store.events.recent(topic=agent_topic(agent_id), limit=limit)

    async def states(self, agent_ids: list[str]) -> list[dict[str, Any]]:
        """The public state of each of the agents that has reported."""
        states = [await self.store.agents.get(agent_id=agent_id) for agent_id in agent_ids]
        return [agent_public(state) for state in states if state is not None]

    # -- subscribing ------------------------------------------------------------------------------

    async def may_watch(self, principal: Principal, agent_id: str) -> None:
        """Raise ``Forbidden`` unless ``principal`` may subscribe to the agent."""
        state = await self.store.agents.get(agent_id=agent_id)
        if not await self.can_see(principal, state):
            raise Forbidden(f"you may not watch agent {agent_id!r}")

    async def subscribe(self, principal: Principal, agent_id: str) -> None:
        """A stored subscription: it applies to all the user's event connections, now and later."""
        await self.may_watch(principal, agent_id)
        await self.store.agents.subscribe(user_id=principal.user_id, agent_id=agent_id)
        self.cluster.run(SubscribeUser(principal.user_id, agent_id, True))

    async def unsubscribe(self, principal: Principal, agent_id: str) -> None:
        await self.store.agents.unsubscribe(user_id=principal.user_id, agent_id=agent_id)
        self.cluster.run(SubscribeUser(principal.user_id, agent_id, False))

    async def subscriptions(self, principal: Principal) -> set[str]:
        return await self.store.agents.subscriptions(user_id=principal.user_id)

    # -- reporting --------------------------------------------------------------------------------

    async def report(self, principal: Principal, message: AgentEvent) -> int:
        """Check the publisher's authority, record the new state, publish the event, and tell
        the workspaces concerned. Returns the event's id."""
        agent_id = message.data.agent_id
        current = await self.store.agents.get(agent_id=agent_id)
        self._check_authority(principal, message, current)
        now = datetime.now(UTC)
        if isinstance(message, AgentExecutionStart):
            values, payload = await self._start(principal, message, current)
        elif isinstance(message, AgentExecutionComplete):
            values, payload = self._complete(message, current)
        else:
            values, payload = self._update(message)
        state = await self.store.agents.save(agent_id=agent_id, values={**values, "updated_at": now})
        if current is None or current.status != state.status or isinstance(message, AgentExecutionStart):
            metrics.AGENT_EXECUTIONS.labels(state.status).inc()
        if state.workspace_id is not None:
            payload.setdefault("workspace_id", state.workspace_id)
        event_id = await self.hub.publish(agent_topic(agent_id), message.type, payload)
        self._announce(message, state, current.workspace_id if current else None)
        return event_id

    def _check_authority(self, principal: Principal, message: AgentEvent, current: AgentState | None) -> None:
        if self.is_privileged(principal):
            return
        agent_id = message.data.agent_id
        if current is not None and current.started_by not in (None, principal.user_id):
            raise Forbidden(
                f"agent {agent_id!r} was started by someone else; only they or a service may report it"
            )
        if current is None and not isinstance(message, AgentExecutionStart):
            raise Forbidden(f"agent {agent_id!r} has not started: send agent_execution_start first")

    async def _start(
        self, principal: Principal, message: AgentExecutionStart, current: AgentState | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        data = message.data
        if data.workspace_id is not None:
            # Attaching an agent to a workspace needs the workspace, and the right to edit there.
            access = await resolve_access(self.store, principal, data.workspace_id)
            if not access.role.can_write:
                raise Forbidden("attaching an agent to a workspace needs the editor role there")
        payload = data.model_dump(mode="json")
        payload["user_id"] = data.user_id or principal.user_id
        started_by = current.started_by if current is not None and current.started_by else principal.user_id
        values = {
            "workspace_id": data.workspace_id,
            "started_by": started_by,
            "task": data.task,
            "status": data.status.value,
            "progress": 0.0,
            "current_step": None,
            "result": None,
            "execution_time": None,
            "started_at": data.timestamp,
            "completed_at": None,
        }
        return values, payload

    def _update(self, message: AgentExecutionUpdate) -> tuple[dict[str, Any], dict[str, Any]]:
        data = message.data
        values = {"status": data.status.value, "progress": data.progress, "current_step": data.current_step}
        return values, data.model_dump(mode="json")

    def _complete(
        self, message: AgentExecutionComplete, current: AgentState | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        data = message.data
        execution_time = data.execution_time
        if execution_time is None and current is not None and current.started_at is not None:
            started = (
                current.started_at if current.started_at.tzinfo else current.started_at.replace(tzinfo=UTC)
            )
            execution_time = max(0.0, (data.timestamp - started).total_seconds())
        payload = data.model_dump(mode="json")
        payload["execution_time"] = execution_time
        values: dict[str, Any] = {
            "status": data.status.value,
            "result": data.result,
            "execution_time": execution_time,
            "completed_at": data.timestamp,
        }
        if data.status is AgentStatus.COMPLETED:
            values["progress"] = 100.0
        return values, payload

    def _announce(self, message: AgentEvent, state: AgentState, previous: str | None) -> None:
        tell = self.workspace_events.announce
        if isinstance(message, AgentExecutionStart):
            if previous is not None and previous != state.workspace_id:
                tell(previous, "agent_removed", agent_id=state.id)
            if state.workspace_id is not None:
                tell(state.workspace_id, "agent_added", agent_id=state.id)
        elif isinstance(message, AgentExecutionComplete) and state.workspace_id is not None:
            tell(state.workspace_id, "agent_removed", agent_id=state.id)


def event_json(event: StoredEvent) -> dict[str, Any]:
    """A stored event as the API shows it."""
    return {"id": event.id, "type": event.type, "data": json.loads(event.data)}
