"""The agent service: the one writer of agent state. Who may report an execution, who may see it,
the latest state of each agent, and the events.

Publishers are tokens with the ``service`` role, or the user who started the agent. A start may
name the workspace the agent works in; that attaches the agent to the workspace (a
``workspace_update`` event, and the agent's presence in the workspace's main document, which
``agent_presence`` draws from the events).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from crdt_store import AgentChange, AgentState, Store, StoredEvent

from . import metrics
from .access import resolve_access
from .audience import AgentOwners, Audience, Verdict, agent_topic
from .auth import Principal
from .cluster import Cluster, SubscribeUser
from .config import Settings
from .errors import Forbidden, NotFoundError, ValidationFailed
from .events.hub import EventHub
from .events.models import AgentEvent, AgentExecutionComplete, AgentExecutionStart, AgentExecutionUpdate
from .vocabulary import AgentStatus, iso_z, utcnow
from .workspaces import WorkspaceEvents

__all__ = ["AgentService", "AgentState", "StoredEvent", "agent_public"]

log = logging.getLogger(__name__)

STATUSES_KEPT = 10_000  # agents whose last status is kept for counting status changes


def agent_public(state: AgentState) -> dict[str, Any]:
    """An agent's latest state as the API shows it (``user_id``: who it runs for;
    ``started_by``: who sent its ``agent_execution_start``)."""

    def iso(value: datetime | None) -> str | None:
        return None if value is None else iso_z(value)

    return {
        "agent_id": state.id,
        "workspace_id": state.workspace_id,
        "user_id": state.user_id,
        "started_by": state.started_by,
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


@dataclass(frozen=True, slots=True)
class TextLimits:
    """Characters allowed in agents' texts (``AGENT_*_MAX_LENGTH``), sized for LLM agents."""

    task: int = 65_536
    current_step: int = 16_384
    result: int = 65_536

    @classmethod
    def of(cls, settings: Settings) -> TextLimits:
        return cls(
            settings.agent_task_max_length, settings.agent_step_max_length, settings.agent_result_max_length
        )

    def check(self, message: AgentEvent) -> None:
        """Raise ``ValidationFailed`` naming each text over its limit."""
        problems = []
        for name, setting in (
            ("task", "AGENT_TASK_MAX_LENGTH"),
            ("current_step", "AGENT_STEP_MAX_LENGTH"),
            ("result", "AGENT_RESULT_MAX_LENGTH"),
        ):
            text = getattr(message.data, name, None)
            limit: int = getattr(self, name)
            if isinstance(text, str) and len(text) > limit:
                problems.append(
                    {"loc": ["data", name], "msg": f"at most {limit} characters ({setting}); got {len(text)}"}
                )
        if problems:
            fields = ", ".join(str(p["loc"][-1]) for p in problems)
            raise ValidationFailed(f"invalid {message.type}: {fields} too long", details=problems)


class AgentService:
    """Reports executions, and answers who may see which agent (by ``Audience``'s rule).

    Arguments:
        store: agents' state, subscriptions and the event log.
        audience: who may see what; keeps agents' owners.
        limits: how long agents' texts may be.
        hub: where the events go (stored with the agent states they change).
        workspace_events: announces agents added to and removed from workspaces.
        cluster: applies stored subscriptions to event connections on every instance.
    """

    def __init__(
        self,
        store: Store,
        audience: Audience,
        limits: TextLimits,
        hub: EventHub,
        workspace_events: WorkspaceEvents,
        cluster: Cluster,
    ) -> None:
        self.store = store
        self.audience = audience
        self.limits = limits
        self.hub = hub
        self.workspace_events = workspace_events
        self.cluster = cluster
        self._statuses: OrderedDict[str, str] = OrderedDict()  # agent -> the status last stored here

    def is_privileged(self, principal: Principal) -> bool:
        return self.audience.is_privileged(principal)

    # -- seeing -----------------------------------------------------------------------------------

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
        readable: dict[str, bool] = {}  # workspace -> may read, asked once per workspace

        async def sees(owners: AgentOwners) -> bool:
            if owners.workspace_id is None or self.is_privileged(principal):
                return (await self.audience.agent(principal, owners)).allowed
            if principal.user_id in (owners.started_by, owners.user_id):
                return True
            if owners.workspace_id not in readable:
                readable[owners.workspace_id] = await self.audience.may_read_workspace(
                    principal, owners.workspace_id
                )
            return readable[owners.workspace_id]

        return [state for state in found if await sees(AgentOwners.of(state))]

    async def detail(
        self, principal: Principal, agent_id: str, *, limit: int
    ) -> tuple[AgentState, list[StoredEvent]]:
        """The agent's state and its ``limit`` most recent events. Raises ``NotFoundError`` when
        it has not reported or the caller may not see it."""
        state = await self.store.agents.get(agent_id=agent_id)
        verdict = None if state is None else await self.audience.agent(principal, AgentOwners.of(state))
        if state is None or verdict is None or not verdict.allowed:
            raise NotFoundError(f"agent {agent_id!r} has not reported (or you may not see it)")
        recent = await self.store.events.recent(
            topic=agent_topic(agent_id), limit=limit, since_id=verdict.since
        )
        return state, recent

    async def states(self, principal: Principal, agent_ids: list[str]) -> list[dict[str, Any]]:
        """The public state of each of the agents that has reported and ``principal`` may see."""
        found = []
        for agent_id in agent_ids:
            state = await self.store.agents.get(agent_id=agent_id)
            if state is not None and (await self.audience.agent(principal, AgentOwners.of(state))).allowed:
                found.append(agent_public(state))
        return found

    # -- subscribing ------------------------------------------------------------------------------

    async def may_watch(self, principal: Principal, agent_id: str) -> Verdict:
        """Raise ``Forbidden`` when the agent exists and ``principal`` may not see it. Watching an
        agent that has not started is allowed: its events are judged as they come."""
        verdict = await self.audience.agent(principal, await self.audience.owners(agent_id))
        if not verdict.allowed:
            raise Forbidden(f"you may not watch agent {agent_id!r}")
        return verdict

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
        """``submit``, then wait until the event is stored. Returns its id. Raises as
        ``submit`` does, or ``StoreUnavailable`` when it could not be stored."""
        return await (await self.submit(principal, message))

    async def submit(self, principal: Principal, message: AgentEvent) -> asyncio.Future[int]:
        """Check the publisher's authority and queue the event with the agent state it changes
        (stored together, in the order submitted); the workspaces concerned are told once it is
        stored. Returns a future of the event's id, resolved once it is stored. Raises
        ``ValidationFailed``, ``Forbidden``, ``UnknownWorkspace`` or ``StoreUnavailable``."""
        self.limits.check(message)
        agent_id = message.data.agent_id
        current = await self.audience.owners(agent_id)
        self._check_authority(principal, message, current)
        owners = current
        if isinstance(message, AgentExecutionStart):
            values, payload, owners = await self._start(principal, message)
        elif isinstance(message, AgentExecutionComplete):
            values, payload = self._complete(message, current)
        else:
            values, payload = self._update(message)
        if owners is not None and owners.workspace_id is not None:
            payload.setdefault("workspace_id", owners.workspace_id)
        values["updated_at"] = utcnow()
        started = isinstance(message, AgentExecutionStart)
        change = AgentChange(agent_id, values, upsert=current is None or started, start=started)
        stored = self.hub.submit(agent_topic(agent_id), message.type, payload, agent=change)
        if owners is not current:
            self.audience.remember(agent_id, owners)  # what this publisher sends next is judged by it

        def announce(done: asyncio.Future[int]) -> None:
            if done.cancelled() or done.exception() is not None:
                self.audience.forget(agent_id)
                return
            self._count_status(agent_id, message)
            if owners is not None:
                self._announce(message, owners, current.workspace_id if current else None)

        stored.add_done_callback(announce)
        return stored

    def _count_status(self, agent_id: str, message: AgentEvent) -> None:
        """Count an execution entering a status (``collab_agent_executions_total``): every start
        and completion, and an update that changes the status last reported here."""
        status = message.data.status.value
        if isinstance(message, AgentExecutionUpdate) and self._statuses.get(agent_id) == status:
            return
        metrics.AGENT_EXECUTIONS.labels(status).inc()
        self._statuses[agent_id] = status
        self._statuses.move_to_end(agent_id)
        if len(self._statuses) > STATUSES_KEPT:
            self._statuses.popitem(last=False)

    def _check_authority(
        self, principal: Principal, message: AgentEvent, current: AgentOwners | None
    ) -> None:
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
        self, principal: Principal, message: AgentExecutionStart
    ) -> tuple[dict[str, Any], dict[str, Any], AgentOwners]:
        """A new execution: its owners are its starter and the user it runs for, nobody
        earlier (a start never inherits the rights of an earlier execution of the id)."""
        data = message.data
        if (
            data.user_id is not None
            and data.user_id != principal.user_id
            and not self.is_privileged(principal)
        ):
            raise Forbidden("user_id names the user the agent works for: a user may name only themself")
        if data.workspace_id is not None:
            # Attaching an agent to a workspace needs the workspace, and the right to edit there.
            access = await resolve_access(self.store, principal, data.workspace_id)
            if not access.role.can_write:
                raise Forbidden("attaching an agent to a workspace needs the editor role there")
        payload = data.model_dump(mode="json")
        user_id = data.user_id or principal.user_id
        payload["user_id"] = user_id
        owners = AgentOwners(principal.user_id, user_id, data.workspace_id, data.timestamp)
        values = {
            "workspace_id": data.workspace_id,
            "started_by": principal.user_id,
            "user_id": user_id,
            "task": data.task,
            "status": data.status.value,
            "progress": 0.0,
            "current_step": None,
            "result": None,
            "execution_time": None,
            "started_at": data.timestamp,
            "completed_at": None,
        }
        return values, payload, owners

    def _update(self, message: AgentExecutionUpdate) -> tuple[dict[str, Any], dict[str, Any]]:
        data = message.data
        values = {"status": data.status.value, "progress": data.progress, "current_step": data.current_step}
        return values, data.model_dump(mode="json")

    def _complete(
        self, message: AgentExecutionComplete, current: AgentOwners | None
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

    def _announce(self, message: AgentEvent, owners: AgentOwners, previous: str | None) -> None:
        tell = self.workspace_events.announce
        if isinstance(message, AgentExecutionStart):
            if previous is not None and previous != owners.workspace_id:
                tell(previous, "agent_removed", agent_id=message.data.agent_id)
            if owners.workspace_id is not None:
                tell(owners.workspace_id, "agent_added", agent_id=message.data.agent_id)
        elif isinstance(message, AgentExecutionComplete) and owners.workspace_id is not None:
            tell(owners.workspace_id, "agent_removed", agent_id=message.data.agent_id)


def event_json(event: StoredEvent) -> dict[str, Any]:
    """A stored event as the API shows it."""
    return {"id": event.id, "type": event.type, "data": json.loads(event.data)}
