"""The long-lived objects of one app instance, built by the lifespan and kept on ``app.state``.

A plain container: the transports (REST routers, WebSocket endpoints) reach the application
services (``workspaces``, ``agents``) and the components through it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from crdt_store import Store

from .agents import AgentService
from .broker import Broker
from .cluster import Cluster
from .config import Settings
from .document_view import DocumentViews
from .events.hub import EventHub
from .limits import Admission, RateLimiter
from .persistence import UpdateWriter
from .presence import Presence
from .replication import Replication
from .rooms import RoomManager
from .workspaces import WorkspaceService


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    broker: Broker
    writer: UpdateWriter
    events: EventHub
    presence: Presence
    replication: Replication
    rooms: RoomManager
    cluster: Cluster
    workspaces: WorkspaceService
    agents: AgentService
    views: DocumentViews
    limiter: RateLimiter  # rates keyed by user and address
    admission: Admission  # open WebSocket connections, in all, per user and per address
    started_at: float = field(default_factory=time.time)
    draining: bool = False  # shutting down: new connections are refused (``drain``)

    @property
    def connections(self) -> int:
        """Open (and being opened) WebSocket connections of every kind."""
        return self.admission.open
