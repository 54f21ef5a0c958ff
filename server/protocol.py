"""The y-websocket wire protocol: strict decoding of client frames, encoding of server frames.

A frame holds exactly one message: ``varUint type`` then, for SYNC, ``varUint subtype`` and a
``varUint8Array`` payload; for AWARENESS a ``varUint8Array`` awareness update. Decoding checks
every length against the frame, so a truncated or padded frame is an error, not a silent slice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from pycrdt import (
    create_awareness_message,
    create_update_message,
    write_var_uint,
)

from .vocabulary import parse_json

MAX_VAR_UINT_BYTES = 8  # 56 bits: more than any length or Yjs client id (53 bits) needs
MAX_SAFE_INTEGER = 2**53 - 1  # awareness client ids and clocks are JavaScript numbers
MAX_AWARENESS_BYTES = 1024 * 1024  # one awareness update: presence, cursors and names, not documents


class ProtocolError(ValueError):
    """A frame that does not follow the y-websocket protocol."""


class MessageType(IntEnum):
    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3


class SyncType(IntEnum):
    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


class Message(NamedTuple):
    """One decoded client frame (a tuple: one is made for every frame a client sends)."""

    type: MessageType
    sync_type: SyncType | None
    payload: bytes


# By value: an enum's own lookup (``MessageType(value)``) takes several times as long.
_MESSAGE_TYPES = tuple(MessageType)
_SYNC_TYPES = tuple(SyncType)


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    client_id: int
    clock: int
    state: object  # the decoded JSON state; None means the client is gone


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    """lib0 ``readVarUint`` at ``pos``: 7 bits per byte, low bits first, at most 8 bytes (enough
    for a Yjs client id's 53 bits). Returns the value and the position after it; raises
    ``ProtocolError`` when the data ends inside the number or it is longer. Unrolled: Yjs client
    ids take five bytes, and every item of an update names one or two."""
    try:
        byte = data[pos]
        value = byte & 0x7F
        if byte < 0x80:
            return value, pos + 1
        for shift in (7, 14, 21, 28, 35, 42, 49):
            pos += 1
            byte = data[pos]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos + 1
    except IndexError:
        raise ProtocolError("the data ends inside a variable-length integer") from None
    raise ProtocolError(f"a variable-length integer is longer than {MAX_VAR_UINT_BYTES} bytes")


def read_var_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = read_var_uint(data, pos)
    end = pos + length
    if end > len(data):
        raise ProtocolError(f"length {length} runs past the end of the frame")
    return data[pos:end], end


def decode(frame: bytes) -> Message:
    """Decode one client frame."""
    if not frame:
        raise ProtocolError("empty frame")
    raw_type, pos = read_var_uint(frame, 0)
    if raw_type >= len(_MESSAGE_TYPES):
        raise ProtocolError(f"unknown message type {raw_type}")
    message_type = _MESSAGE_TYPES[raw_type]
    sync_type = None
    if message_type is MessageType.SYNC:
        raw_sync, pos = read_var_uint(frame, pos)
        if raw_sync >= len(_SYNC_TYPES):
            raise ProtocolError(f"unknown sync message type {raw_sync}")
        sync_type = _SYNC_TYPES[raw_sync]
    if message_type is MessageType.QUERY_AWARENESS:
        payload = b""
    else:
        payload, pos = read_var_bytes(frame, pos)
    if pos != len(frame):
        raise ProtocolError(f"{len(frame) - pos} unexpected bytes after the message")
    return Message(message_type, sync_type, payload)


def decode_awareness(update: bytes) -> list[AwarenessEntry]:
    """Decode an awareness update (y-protocols awareness): ``varUint count`` then ``(client id,
    clock, JSON state)`` entries. Client ids and clocks are JavaScript numbers (at most 2^53-1),
    states strict UTF-8 JSON objects or ``null``, the whole at most ``MAX_AWARENESS_BYTES``."""
    if len(update) > MAX_AWARENESS_BYTES:
        raise ProtocolError(f"awareness update of {len(update)} bytes (at most {MAX_AWARENESS_BYTES})")
    count, pos = read_var_uint(update, 0)
    entries = []
    for _ in range(count):
        client_id, pos = read_var_uint(update, pos)
        clock, pos = read_var_uint(update, pos)
        if client_id > MAX_SAFE_INTEGER or clock > MAX_SAFE_INTEGER:
            raise ProtocolError(f"awareness client id {client_id} or clock {clock} passes 2^53")
        raw_state, pos = read_var_bytes(update, pos)
        try:
            state = parse_json(raw_state) if raw_state else None
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(
                f"awareness state of client {client_id} is not JSON: {str(exc)[:100]}"
            ) from None
        if state is not None and not isinstance(state, dict):
            raise ProtocolError(f"awareness state of client {client_id} is not a JSON object or null")
        entries.append(AwarenessEntry(client_id, clock, state))
    if pos != len(update):
        raise ProtocolError("unexpected bytes after the awareness entries")
    return entries


def awareness_update(entries: list[tuple[int, int, object]]) -> bytes:
    """Encode ``(client id, clock, state)`` entries as an awareness update (None: removed)."""
    parts = [write_var_uint(len(entries))]
    for client_id, clock, state in entries:
        encoded = json.dumps(state, separators=(",", ":"), allow_nan=False).encode()
        parts += [write_var_uint(client_id), write_var_uint(clock), write_var_uint(len(encoded)), encoded]
    return b"".join(parts)


def sync_step1(state_vector: bytes) -> bytes:
    return bytes((MessageType.SYNC, SyncType.STEP1)) + write_var_uint(len(state_vector)) + state_vector


def sync_step2(update: bytes) -> bytes:
    return bytes((MessageType.SYNC, SyncType.STEP2)) + write_var_uint(len(update)) + update


def sync_update(update: bytes) -> bytes:
    return create_update_message(update)


def awareness(update: bytes) -> bytes:
    return create_awareness_message(update)


def auth_permission_denied(reason: str) -> bytes:
    """The y-protocols auth message a read-only client receives when its write is refused."""
    encoded = reason.encode()
    return bytes((MessageType.AUTH, 0)) + write_var_uint(len(encoded)) + encoded


# An awareness update with no entries: every Yjs client accepts and ignores it, and receiving it
# resets the stock y-websocket client's 30 s "no message received" reconnect timer.
KEEPALIVE = awareness(b"\x00")
EMPTY_UPDATE = b"\x00\x00"
