"""The SQL statements a store runs, recorded while a block runs (SQLAlchemy's
``before_cursor_execute`` event on the engine)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


@contextmanager
def statements(engine: AsyncEngine, starting: str = "") -> Iterator[list[str]]:
    """The statements ``engine`` runs inside the block whose text starts with ``starting``
    (compared without case and leading space), in order."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith(starting.upper()):
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
