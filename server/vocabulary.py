"""The words every layer shares, defined once: ids, names and texts as the store can keep them.

Ids (of workspaces, users, agents) are what Yjs apps and identity providers choose: any printable
text of 1 to 255 characters, without control characters. Texts may hold line breaks and tabs but
never NUL, which PostgreSQL cannot store; lone UTF-16 surrogates are refused by the length
constraints (they are not Unicode text).
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Annotated, Any

from pydantic import AfterValidator, Field

ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
ID_RE = re.compile(ID_PATTERN)
MAX_ID_LENGTH = 255
MAX_INT64 = 2**63 - 1  # database keys and offsets are 64-bit


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    return value


def is_id(value: str) -> bool:
    """Whether ``value`` is a valid id (see the module docstring)."""
    return 0 < len(value) <= MAX_ID_LENGTH and ID_RE.match(value) is not None


Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_no_nul)]
ShortText = Annotated[str, Field(max_length=500), AfterValidator(_no_nul)]
LongText = Annotated[str, Field(max_length=20_000), AfterValidator(_no_nul)]


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
