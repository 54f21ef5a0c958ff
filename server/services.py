"""The long-lived objects of one app instance, built by the lifespan and kept on ``app.state``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from crdt_store import Store

from .agent_presence import AgentPresence
from .agents import AgentService
from .config import Settings
from .events.hub import EventHub, workspace_topic
from .events.models import WorkspaceUpdateData
from .persistence import UpdateWriter
from .presence import Presence
from .rooms import RoomManager


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
    started_at: float = field(default_factory=time.time)
    connections: int = 0  # open WebSocket connections of every kind

    def workspace_update(self, workspace_id: str, update_type: str, **details: Any) -> None:
        """Announce a change of a workspace to its event subscribers."""
        data = WorkspaceUpdateData(workspace_id=workspace_id, update_type=update_type, **details)  # type: ignore[arg-type]
        self.events.publish_soon(
            workspace_topic(workspace_id), "workspace_update", data.model_dump(mode="json")
        )
