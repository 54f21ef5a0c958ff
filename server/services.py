"""The long-lived objects of one app instance, built by the lifespan and kept on ``app.state``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from crdt_store import Store
from crdt_store.agents import AgentState

from .agent_presence import AgentPresence
from .agents import AgentService
from .broker import Broker
from .config import Settings
from .document_view import DocumentViews
from .events.hub import EventHub
from .persistence import UpdateWriter
from .presence import Presence
from .replication import Replication
from .room import RoomKey
from .rooms import RoomManager
from .workspaces import WorkspaceService

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    writer: UpdateWriter
    rooms: RoomManager
    events: EventHub
    presence: Presence
    agents: AgentService
    agent_presence: AgentPresence
    broker: Broker
    replication: Replication
    views: DocumentViews
    workspaces: WorkspaceService
    started_at: float = field(default_factory=time.time)
    connections: int = 0  # open WebSocket connections of every kind

    def workspace_update(self, workspace_id: str, update_type: str, **details: Any) -> None:
        """Announce a change of a workspace to its event subscribers."""
        self.workspaces.announce(workspace_id, update_type, **details)

    # -- changes every instance applies to its own connections ------------------------------------

    def update_access(self, workspace_id: str, user_id: str, can_write: bool | None) -> None:
        """A membership changed: ``None`` closes the user's connections (4403)."""
        self._everywhere("update_access", workspace_id=workspace_id, user_id=user_id, can_write=can_write)

    def close_workspace(self, workspace_id: str, document_ids: list[int]) -> None:
        self._everywhere("close_workspace", workspace_id=workspace_id, document_ids=document_ids)

    def close_document(self, workspace_id: str, path: str, document_id: int) -> None:
        self._everywhere("close_document", workspace_id=workspace_id, path=path, document_id=document_id)

    def subscribe_user(self, user_id: str, agent_id: str, *, subscribed: bool) -> None:
        """A stored (REST) subscription changed: apply it to the user's open event connections."""
        self._everywhere("subscribe_user", user_id=user_id, agent_id=agent_id, subscribed=subscribed)

    def show_agent(self, agent: AgentState) -> None:
        """An agent reported: show it in its workspace's main document, on every instance."""
        self._everywhere(
            "show_agent",
            agent_id=agent.id,
            workspace_id=agent.workspace_id,
            status=agent.status,
            progress=agent.progress,
            current_step=agent.current_step,
        )

    def _everywhere(self, operation: str, **arguments: Any) -> None:
        self.apply(operation, arguments)
        self.broker.publish_control(operation, arguments)

    def apply(self, operation: str, arguments: dict[str, Any]) -> None:
        """Apply a change made here or announced by another instance."""
        match operation:
            case "update_access":
                self.rooms.update_access(**arguments)
            case "close_workspace":
                self.rooms.close_workspace(**arguments)
            case "close_document":
                key = RoomKey(arguments["workspace_id"], arguments["path"])
                self.rooms.close_document(key, arguments["document_id"])
            case "subscribe_user":
                self.events.subscribe_user(**arguments)
            case "show_agent":
                self.agent_presence.show(**arguments)
            case _:
                log.warning("ignored an unknown cluster operation %r", operation)
