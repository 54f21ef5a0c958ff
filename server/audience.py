"""Who may see an agent, and the events of a workspace: the one visibility rule of the event
channel, applied where events are delivered (``EventHub``), in REST reads and at subscription.

An agent is visible to:
- services and administrators (and everyone on a server without tokens);
- whoever started its current execution (sent ``agent_execution_start``);
- the user it runs for (``user_id`` of that start);
- whoever may read its workspace, when it has one (its members; anyone while it is ``open``).

The events of a workspace are visible to whoever may read it (``access.resolve_access``).

An agent's owners change only when an execution starts; a later start replaces them, and its
owners see the events from that start on: nothing passes between executions of the same id, in
either direction (privileged callers see every execution). Decisions are cached by
their users (each event connection keeps its own) and forgotten when what they depended on
changes: the agent restarts, or its workspace's membership or visibility changes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from crdt_store import AgentState, Store

from .access import resolve_access
from .auth import GlobalRole, Principal
from .config import Settings
from .errors import ServiceError

OWNERS_CACHED = 10_000  # agents whose owners are kept in memory


@dataclass(frozen=True, slots=True)
class AgentOwners:
    """Who an agent's current execution belongs to (from its last ``agent_execution_start``)."""

    started_by: str | None
    user_id: str | None
    workspace_id: str | None
    started_at: datetime | None = None
    start_event_id: int | None = None  # events before it belong to earlier executions

    @classmethod
    def of(cls, state: AgentState) -> AgentOwners:
        return cls(
            state.started_by, state.user_id, state.workspace_id, state.started_at, state.start_event_id
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a principal may see a topic's events (those with ids from ``since``: an agent's
    owners see its current execution, not earlier ones), and the workspace that answer depends
    on (forgotten when that workspace's access changes)."""

    allowed: bool
    workspace_id: str | None = None
    since: int = 0

    def admits(self, event_id: int) -> bool:
        return self.allowed and event_id >= self.since


ALLOWED = Verdict(True)
REFUSED = Verdict(False)


def agent_topic(agent_id: str) -> str:
    return f"agent:{agent_id}"


def workspace_topic(workspace_id: str) -> str:
    return f"workspace:{workspace_id}"


def topic_parts(topic: str) -> tuple[str, str]:
    """``("agent", id)`` or ``("workspace", id)`` (or another prefix, which nothing carries)."""
    kind, _, name = topic.partition(":")
    return kind, name


class Audience:
    """Decides who may see agents and workspace events.

    Arguments:
        store: agents' owners and workspaces' membership are read from it.
        settings: whether tokens are required (without them, everyone is privileged).
    """

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._owners: OrderedDict[str, AgentOwners | None] = OrderedDict()

    def is_privileged(self, principal: Principal) -> bool:
        """Services and administrators see every agent; so does everyone without tokens."""
        return principal.role in (GlobalRole.SERVICE, GlobalRole.ADMIN) or not self.settings.auth_enabled

    # -- owners -----------------------------------------------------------------------------------

    async def owners(self, agent_id: str) -> AgentOwners | None:
        """The agent's owners (None: it never started), from memory or the store.
        Raises ``StoreUnavailable``."""
        if agent_id in self._owners:
            self._owners.move_to_end(agent_id)
            return self._owners[agent_id]
        state = await self.store.agents.get(agent_id=agent_id)
        owners = AgentOwners.of(state) if state is not None else None
        self.remember(agent_id, owners)
        return owners

    def remember(self, agent_id: str, owners: AgentOwners | None) -> None:
        """Owners just written by this instance."""
        self._owners[agent_id] = owners
        self._owners.move_to_end(agent_id)
        while len(self._owners) > OWNERS_CACHED:
            self._owners.popitem(last=False)

    def forget(self, agent_id: str) -> None:
        """The agent restarted somewhere: read its owners again when next needed."""
        self._owners.pop(agent_id, None)

    def forget_all(self) -> None:
        """Read every agent's owners again (what other instances did may have been missed)."""
        self._owners.clear()

    # -- decisions --------------------------------------------------------------------------------

    async def may_read_workspace(self, principal: Principal, workspace_id: str) -> bool:
        try:
            await resolve_access(self.store, principal, workspace_id)
        except ServiceError:  # unknown or forbidden: either way, nothing to see
            return False
        return True

    async def agent(self, principal: Principal, owners: AgentOwners | None) -> Verdict:
        """May ``principal`` see an agent with these owners? An agent that never started shows
        nothing, so watching it is allowed (its events are judged when they come)."""
        if owners is None or self.is_privileged(principal):
            return ALLOWED
        since = owners.start_event_id or 0
        if principal.user_id in (owners.started_by, owners.user_id):
            return Verdict(True, since=since)
        if owners.workspace_id is None:
            return REFUSED
        allowed = await self.may_read_workspace(principal, owners.workspace_id)
        return Verdict(allowed, owners.workspace_id, since)

    async def agent_events(self, principal: Principal, agent_id: str) -> Verdict:
        """May ``principal`` receive the events of ``agent_id``? Unlike ``agent``, nothing is
        shown of an agent that has not started."""
        owners = await self.owners(agent_id)
        if owners is None:
            return Verdict(self.is_privileged(principal))
        return await self.agent(principal, owners)

    async def topic(self, principal: Principal, topic: str) -> Verdict:
        """May ``principal`` receive the events of ``topic``?"""
        kind, name = topic_parts(topic)
        if kind == "agent":
            return await self.agent_events(principal, name)
        if kind == "workspace":
            return Verdict(await self.may_read_workspace(principal, name), name)
        return REFUSED
