"""Errors raised by the store. Callers never see a driver exception type."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every store error."""


class StoreUnavailable(StoreError):
    """The database could not be reached, a connection could not be had or was lost, or the
    database refuses to work for now; the caller may retry. ``reason`` says what happened in one
    line, ``operation`` which store function met it."""

    def __init__(self, reason: str, *, operation: str | None = None) -> None:
        super().__init__(f"{operation}: {reason}" if operation else reason)
        self.reason = reason
        self.operation = operation


class StoreLocked(StoreError):
    """The SQLite database file is in use by another process (the embedded store serves one)."""


class NotFound(StoreError):
    """The requested row does not exist."""


class Conflict(StoreError):
    """The row already exists or the change conflicts with another."""
