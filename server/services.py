"""The long-lived objects of one app instance, built by the lifespan and kept on ``app.state``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from crdt_store import Store

from .config import Settings
from .persistence import UpdateWriter
from .rooms import RoomManager


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    writer: UpdateWriter
    rooms: RoomManager
    started_at: float = field(default_factory=time.time)
    connections: int = 0  # open WebSocket connections of every kind
