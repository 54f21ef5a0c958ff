"""A document's own encoded state, built from stored updates applied in any order.

Compaction replaces a log of updates by what the document holds: the updates are applied to a
pycrdt ``Doc`` (Yrs), which garbage-collects deleted content, and ``Doc.get_update()`` encodes
the result. The encoding keeps the identity (client id, clock) of every item, deleted ones as
tombstone ranges, so a client that kept its own copy merges it without duplicating anything
(Yjs: "Document updates", https://docs.yjs.dev/api/document-updates).

One thing the encoding drops: updates the document could not integrate yet because an update
they depend on is missing (Yrs keeps them pending, and ``get_update`` leaves pending structs and
deletions out). Stored updates can arrive in that order when several instances store what their
own clients sent. ``StateBuilder`` therefore checks each update after applying it and carries the
part that was not integrated over into the result, so nothing stored is lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pycrdt import Doc, get_update, merge_updates

# Stored updates are applied this many to a Yrs transaction. At each commit Yrs merges the new
# items into their neighbours of the same client ("squash"), at a cost that grows with the merged
# item (one client's uninterrupted run of text) and, within one transaction, with the number of
# items merged: a log of 10,000 appends by one client to its own text takes about 1 s applied
# one by one, 2 s in one transaction and 30 ms in transactions of 50-200; logs of interleaved
# clients, random edits or map entries take half as long in transactions of 100 as one by one.
APPLY_BATCH = 100


def apply_batched(doc: Doc[Any], updates: Sequence[bytes]) -> None:
    """Apply ``updates`` to ``doc`` in order, ``APPLY_BATCH`` to a transaction. Raises what
    ``Doc.apply_update`` raises (``ValueError`` for bytes that are not an update); the updates of
    the failing batch before it are applied."""
    for start in range(0, len(updates), APPLY_BATCH):
        with doc.transaction():
            for update in updates[start : start + APPLY_BATCH]:
                doc.apply_update(update)


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode one lib0 variable-length unsigned integer at ``pos``; returns it and the next
    position. Raises ``ValueError`` when the data ends inside the number."""
    value = 0
    shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated variable-length integer")


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """A Yjs state vector (``varUint count``, then ``client, clock`` pairs) as {client: clock}."""
    count, pos = read_var_uint(state_vector, 0)
    clocks: dict[int, int] = {}
    for _ in range(count):
        client, pos = read_var_uint(state_vector, pos)
        clocks[client], pos = read_var_uint(state_vector, pos)
    return clocks


def unintegrated(update: bytes, state_vector: bytes, clocks: dict[int, int]) -> bytes | None:
    """The part of ``update`` a document with this state vector has not integrated, or None
    when it has integrated all of it.

    ``get_update(update, state_vector)`` keeps the structs the state vector does not cover and the
    whole delete set (Yjs update format v1: structs by client, then the delete set as
    ``client, [clock, length]...``). The update is integrated when no struct is left and every
    deleted range lies within the document's clocks. Anything unreadable counts as not integrated.
    """
    rest = get_update(update, state_vector)
    try:
        struct_clients, pos = read_var_uint(rest, 0)
        if struct_clients:
            return rest
        delete_clients, pos = read_var_uint(rest, pos)
        for _ in range(delete_clients):
            client, pos = read_var_uint(rest, pos)
            ranges, pos = read_var_uint(rest, pos)
            for _ in range(ranges):
                clock, pos = read_var_uint(rest, pos)
                length, pos = read_var_uint(rest, pos)
                if clock + length > clocks.get(client, 0):
                    return rest
    except ValueError:
        return rest
    return None


class StateBuilder:
    """Applies updates to a fresh document and encodes what it holds.

    Memory: the document (live content and tombstone ranges) plus whatever the caller passes to
    one ``apply`` call, plus the not-yet-integrated remainders (normally none).
    """

    def __init__(self) -> None:
        self._doc: Doc[Any] = Doc(skip_gc=False)
        self._waiting: list[bytes] = []  # parts not integrated when they were applied

    def apply(self, updates: Iterable[bytes]) -> None:
        """Apply updates, in any order. Raises ``ValueError`` for bytes that are not an update."""
        batch = list(updates)
        apply_batched(self._doc, batch)
        state_vector = self._doc.get_state()
        clocks = decode_state_vector(state_vector)
        for update in batch:
            rest = unintegrated(update, state_vector, clocks)
            if rest is not None:
                self._waiting.append(rest)

    def encode(self) -> bytes:
        """The document's own encoding (``Doc.get_update()``), merged with whatever part of the
        applied updates is still waiting for an update it depends on."""
        state = self._doc.get_update()
        if not self._waiting:
            return state
        state_vector = self._doc.get_state()
        clocks = decode_state_vector(state_vector)
        carried = [rest for part in self._waiting if (rest := unintegrated(part, state_vector, clocks))]
        return merge_updates(state, *carried) if carried else state
