"""Persistence of Yjs documents (update log + snapshots) on SQLAlchemy async: SQLite or PostgreSQL."""

from .agents import AgentRepository, AgentState
from .documents import Compaction, DocumentRepository, StoredDocument
from .engine import describe_database, normalise_database_url
from .errors import Conflict, NotFound, StoreError, StoreLocked, StoreUnavailable
from .event_log import AgentChange, EventLog, NewEvent, StoredEvent
from .store import Store, open_store
from .workspaces import DocumentInfo, Member, Workspace, WorkspaceRepository

__all__ = [
    "AgentChange",
    "AgentRepository",
    "AgentState",
    "Compaction",
    "Conflict",
    "DocumentInfo",
    "DocumentRepository",
    "EventLog",
    "Member",
    "NewEvent",
    "NotFound",
    "Store",
    "StoreError",
    "StoreLocked",
    "StoreUnavailable",
    "StoredDocument",
    "StoredEvent",
    "Workspace",
    "WorkspaceRepository",
    "describe_database",
    "normalise_database_url",
    "open_store",
]
