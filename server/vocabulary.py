"""The words every layer shares, defined once: ids, names and texts as the store can keep them,
roles, visibilities, agent statuses, and times.

Ids of users and agents are what identity providers and agent runners choose: any printable text
of 1 to 255 characters, without control characters. Workspace ids name rooms in URLs and
y-websocket room names, so they are 1 to 255 of RFC 3986's unreserved characters (letters,
digits, ``.``, ``_``, ``~``, ``-``), starting with a letter or digit. Texts may hold line breaks
and tabs but never NUL, which PostgreSQL cannot store; lone UTF-16 surrogates are refused by the
length constraints (they are not Unicode text). Times are written in ISO 8601, in UTC, with a
``Z`` (RFC 3339).
"""

from __future__ import annotations

import json
import math
import re
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer

ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
ID_RE = re.compile(ID_PATTERN)
MAX_ID_LENGTH = 255
WORKSPACE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,254}$"
WORKSPACE_ID_RE = re.compile(WORKSPACE_ID_PATTERN)
MAX_INT64 = 2**63 - 1  # database keys and offsets are 64-bit


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    return value


def is_id(value: str) -> bool:
    """Whether ``value`` is a valid id (see the module docstring)."""
    return 0 < len(value) <= MAX_ID_LENGTH and ID_RE.fullmatch(value) is not None


def is_workspace_id(value: str) -> bool:
    """Whether ``value`` is a valid workspace id (see the module docstring)."""
    return WORKSPACE_ID_RE.fullmatch(value) is not None


Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
WorkspaceId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=WORKSPACE_ID_PATTERN)]
Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_no_nul)]
ShortText = Annotated[str, Field(max_length=500), AfterValidator(_no_nul)]
# Text whose limit is a setting (agents' task, step and result texts: ``AgentService``); a frame
# or body limit bounds it before that.
Text = Annotated[str, AfterValidator(_no_nul)]


# -- roles, visibilities, statuses -----------------------------------------------------------------


class Role(StrEnum):
    """A member's role in a workspace: owner > editor > viewer."""

    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"

    @property
    def can_write(self) -> bool:
        return self is not Role.VIEWER

    def at_least(self, needed: Role) -> bool:
        order = (Role.VIEWER, Role.EDITOR, Role.OWNER)
        return order.index(self) >= order.index(needed)


class Visibility(StrEnum):
    """``open``: anyone may read and edit (and becomes a member on opening a document);
    ``private``: members only."""

    OPEN = "open"
    PRIVATE = "private"


class AgentStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """The execution is over."""
        return self in (AgentStatus.COMPLETED, AgentStatus.FAILED, AgentStatus.CANCELLED)


# -- times -----------------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_z(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (RFC 3339), as every time the server writes. A time without
    an offset (SQLite keeps none) is UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _iso_text(value: object) -> object:
    """Timestamps are ISO 8601 text: a number is refused, not read as seconds or milliseconds."""
    if not isinstance(value, str | datetime):
        raise ValueError("a timestamp is ISO 8601 text, such as 2024-01-01T12:00:00Z")
    return value


def _in_utc(value: datetime) -> datetime:
    """A time with an offset, converted to UTC (a time without one is taken as UTC). A time that
    has no UTC equivalent between years 1 and 9999 is refused."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is outside years 1 to 9999 once converted to UTC") from None


# A time a client sends: ISO 8601 text, converted to UTC; written back with a ``Z``.
Timestamp = Annotated[
    datetime, BeforeValidator(_iso_text), AfterValidator(_in_utc), PlainSerializer(iso_z, return_type=str)
]
# A time the server shows (a stored one): written with a ``Z``.
UtcTime = Annotated[datetime, PlainSerializer(iso_z, return_type=str)]


# -- JSON ------------------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _double_range(text: str) -> int:
    # An integer beyond a double's range is a number no JSON reader elsewhere can hold.
    if len(text.lstrip("-")) > 308:
        raise ValueError(f"the number {text[:40]}... is out of range")
    value = int(text)
    if abs(value) > sys.float_info.max:
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def parse_json(text: str | bytes) -> Any:
    """Strict JSON (RFC 8259; bytes must be UTF-8): no ``NaN`` or ``Infinity``, no number beyond
    a double's range. Raises ``ValueError`` (``UnicodeDecodeError`` and ``JSONDecodeError`` are
    ones), or ``RecursionError`` for absurd nesting."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite, parse_int=_double_range)
