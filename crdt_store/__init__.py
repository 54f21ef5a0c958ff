"""Persistence of Yjs documents (update log + snapshots) on SQLAlchemy async: SQLite or PostgreSQL."""

from .documents import Compaction, StoredDocument
from .engine import normalise_database_url
from .errors import Conflict, NotFound, StoreError, StoreUnavailable
from .store import Store, open_store

__all__ = [
    "Compaction",
    "Conflict",
    "NotFound",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredDocument",
    "normalise_database_url",
    "open_store",
]
