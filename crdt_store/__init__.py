"""Persistence of Yjs documents (update log + snapshots) on SQLAlchemy async: SQLite or PostgreSQL."""

from .documents import Compaction, StoredDocument
from .engine import describe_database, normalise_database_url
from .errors import Conflict, NotFound, StoreError, StoreLocked, StoreUnavailable
from .store import Store, open_store

__all__ = [
    "Compaction",
    "Conflict",
    "NotFound",
    "Store",
    "StoreError",
    "StoreLocked",
    "StoreUnavailable",
    "StoredDocument",
    "describe_database",
    "normalise_database_url",
    "open_store",
]
