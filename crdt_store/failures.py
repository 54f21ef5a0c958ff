"""Telling "the database is unavailable" apart from every other database error.

One kind of failure: the service cannot get a connection, or cannot keep one, or the database
refuses to do any work for now. Whatever the driver or the way it shows, it becomes
``StoreUnavailable`` (HTTP 503, close code 1013, updates kept and retried). Other errors (a bad
query, a constraint) are bugs or conflicts and keep their own type.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from sqlalchemy import exc as sa_exc

# PostgreSQL SQLSTATE classes and codes (PostgreSQL manual, Appendix A "Error Codes").
PG_UNAVAILABLE_CLASSES = (
    "08",  # connection exception
    "53",  # insufficient resources: too many connections, disk full, out of memory
    "57P",  # operator intervention: admin or crash shutdown, cannot connect now, database dropped
    "58",  # system error: I/O error
)
PG_UNAVAILABLE_CODES = frozenset({"25006"})  # read-only transaction: a standby, after a failover

# SQLite primary result codes (https://www.sqlite.org/rescode.html).
SQLITE_UNAVAILABLE = {
    3: "SQLITE_PERM",
    5: "SQLITE_BUSY",
    6: "SQLITE_LOCKED",
    7: "SQLITE_NOMEM",
    8: "SQLITE_READONLY",
    10: "SQLITE_IOERR",
    11: "SQLITE_CORRUPT",
    13: "SQLITE_FULL",
    14: "SQLITE_CANTOPEN",
    15: "SQLITE_PROTOCOL",
    26: "SQLITE_NOTADB",
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, the driver exception SQLAlchemy wrapped, and what caused each."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


def _driver_message(exc: BaseException) -> str:
    """The innermost exception's own message, without SQLAlchemy's statement and links."""
    innermost = list(_chain(exc))[-1]
    text = str(innermost).strip().splitlines()
    return text[0] if text and text[0] else innermost.__class__.__name__


def unavailable_reason(exc: BaseException) -> str | None:
    """A one-line description when ``exc`` means that the database cannot be reached, a
    connection cannot be had or was lost, or the database refuses all work for now; None for
    any other error. The description holds no password (drivers never put one in a message)."""
    message = _driver_message(exc)
    for error in _chain(exc):
        if isinstance(error, sa_exc.TimeoutError):
            return f"no free database connection within the timeout ({error.args[0]})"[:300]
        if isinstance(error, sa_exc.DBAPIError):
            if error.statement is None:
                return f"cannot connect: {message}{_code(exc)}"
            if error.connection_invalidated:
                return f"connection lost: {message}{_code(exc)}"
        sqlstate = getattr(error, "sqlstate", None)
        if isinstance(sqlstate, str) and (
            sqlstate.startswith(PG_UNAVAILABLE_CLASSES) or sqlstate in PG_UNAVAILABLE_CODES
        ):
            return f"{message}{_code(exc)}"
        code = getattr(error, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in SQLITE_UNAVAILABLE:
            return f"{message}{_code(exc)}"
        if isinstance(error, (sa_exc.InterfaceError, sa_exc.DisconnectionError)):
            return f"connection error: {message}"
        if isinstance(error, (OSError, asyncio.TimeoutError)):  # refused, unreachable, timed out
            return f"cannot connect: {message}"
    if isinstance(exc, sa_exc.OperationalError):  # what SQLAlchemy itself calls operational
        return f"{message}{_code(exc)}"
    return None


def _code(exc: BaseException) -> str:
    for error in _chain(exc):
        sqlstate = getattr(error, "sqlstate", None)
        if isinstance(sqlstate, str):
            return f" (SQLSTATE {sqlstate})"
        code = getattr(error, "sqlite_errorcode", None)
        if isinstance(code, int):
            return f" ({SQLITE_UNAVAILABLE.get(code & 0xFF, getattr(error, 'sqlite_errorname', code))})"
    return ""
