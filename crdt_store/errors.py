"""Errors raised by the store. Callers never see a driver exception type."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every store error."""


class StoreUnavailable(StoreError):
    """The database could not be reached or refused the operation; the caller may retry."""


class NotFound(StoreError):
    """The requested row does not exist."""


class Conflict(StoreError):
    """The row already exists or the change conflicts with another."""
