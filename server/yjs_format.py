"""The Yjs v1 binary formats, read strictly: updates and state vectors.

Sources: Yjs's ``UpdateDecoderV1`` and ``readClientsStructRefs`` / ``readDeleteSet``
(yjs/src/utils/UpdateDecoder.js, yjs/src/utils/encoding.js, yjs/src/utils/DeleteSet.js), the item
content readers (yjs/src/structs/Content*.js) and lib0's variable-length integers and ``readAny``
(lib0/decoding.js). The y-websocket protocol carries v1 updates only.

pycrdt (Yrs) trusts the counts it reads: a 5-byte update that declares 268 million clients makes it
allocate half a gigabyte before it notices the bytes are missing, and deeply nested values crash it.
So an update or state vector that comes from outside is read here first, and refused with
``ProtocolError`` unless:

- every count and length fits in the bytes that remain (each element takes at least one byte);
- strings are UTF-8 (Yrs reads them strictly, and would fail part-way through the update);
- no item holds ContentJSON (Yjs writes ContentAny since version 13; Yrs reads one string more
  than ContentJSON's count, so the bytes after it would mean to Yrs what no check read);
- values nest at most ``MAX_NESTING`` levels;
- client ids fit 53 bits (lib0) and clocks 32 bits (Yrs), the clock after a client's last struct
  or deletion too (Yrs keeps a client's next clock in 32 bits: one past it would wrap to 0, and
  the document would no longer encode what it holds);
- the update ends exactly where its delete set ends (a v2-encoded update, read as v1, ends early);
- each client's structs come in one section (Yjs's ``writeClientsStructs`` writes each client once).

Reading is linear in the size of the input and allocates nothing per declared element. It also
tells (``UpdateFacts``) what the update needs the document to hold, and how many of its structs may
split an item or walk among concurrent ones, so that the room can refuse what would wait in Yrs
and apply a costly update in parts (``UpdateParts``).

``root_kinds`` also reads the structure of a whole document (its own encoding) to tell what each
root shared type is, from its content: Yjs does not send a root's type, and reading a root as a
type it is not makes Yrs loop.
"""

from __future__ import annotations

import asyncio
import itertools
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from operator import itemgetter
from typing import NamedTuple, TypeVar

from .protocol import Message, MessageType, ProtocolError, SyncType, read_var_uint

T = TypeVar("T")

MAX_NESTING = 1_000  # nesting of values (arrays, objects) inside one item
MAX_CLIENT = (1 << 53) - 1  # lib0 reads at most 53 bits; Yjs client ids are 32 bits
MAX_CLOCK = (1 << 32) - 1  # Yrs keeps clocks, and a client's next clock, in 32 bits

# Item content kinds: the low five bits of an item's info byte (yjs/src/structs/Item.js).
GC, DELETED, JSON, BINARY, STRING, EMBED, FORMAT, TYPE, ANY, DOC, SKIP = range(11)
_BIT_ORIGIN, _BIT_RIGHT_ORIGIN, _BIT_PARENT_SUB = 0x80, 0x40, 0x20

# Type references of ContentType (yjs/src/types/*.js, ``YArrayRefID`` ...).
TYPE_ARRAY, TYPE_MAP, TYPE_TEXT, TYPE_XML_ELEMENT, TYPE_XML_FRAGMENT, TYPE_XML_HOOK, TYPE_XML_TEXT = range(7)
_XML_CHILDREN = {TYPE_XML_ELEMENT, TYPE_XML_HOOK, TYPE_XML_TEXT}


# lib0 ``readAny`` values of a fixed size: undefined, null, false, true (no payload), float32,
# float64, bigint64.
_ANY_FIXED_SIZE = {127: 0, 126: 0, 121: 0, 120: 0, 124: 4, 123: 8, 122: 8}


class _Reader:
    """A cursor over untrusted bytes; every read checks what remains. The hot reads take the
    one-byte case inline: updates are read on every edit."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def byte(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise ProtocolError("the update ends too early")
        self.pos = pos + 1
        return self.data[pos]

    def uint(self) -> int:
        pos = self.pos
        if pos < self.end and self.data[pos] < 0x80:
            self.pos = pos + 1
            return self.data[pos]
        value, self.pos = read_var_uint(self.data, pos)
        return value

    def skip_int(self) -> None:
        """lib0 ``readVarInt`` (sign in the first byte), skipped."""
        byte = self.byte()
        shift = 6
        while byte & 0x80:
            byte = self.byte()
            shift += 7
            if shift > 60:
                raise ProtocolError("a variable-length integer is longer than 53 bits")

    def count(self, what: str) -> int:
        """A count of elements that each take at least one byte."""
        value = self.uint()
        if value > self.end - self.pos:
            raise ProtocolError(f"{what} count {value} exceeds the {self.remaining} bytes left")
        return value

    def skip(self, length: int) -> None:
        if length > self.end - self.pos:
            raise ProtocolError(f"length {length} exceeds the {self.remaining} bytes left")
        self.pos += length

    def buffer(self) -> bytes:
        """lib0 ``readVarUint8Array`` / ``readVarString``: a length, then that many bytes."""
        length = self.uint()
        start = self.pos
        self.skip(length)
        return self.data[start : self.pos]

    def skip_buffer(self) -> None:
        self.skip(self.uint())

    def string(self) -> bytes:
        """lib0 ``readVarString``, which Yrs reads as strict UTF-8 (and fails on otherwise)."""
        text = self.buffer()
        if not text.isascii():
            try:
                text.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("a string is not valid UTF-8") from None
        return text

    def client(self) -> int:
        client = self.uint()
        if client > MAX_CLIENT:
            raise ProtocolError(f"client id {client} is longer than 53 bits")
        return client

    def item_id(self) -> tuple[int, int]:
        """An item's id: ``varUint client, varUint clock``."""
        client, pos = read_var_uint(self.data, self.pos)
        clock, self.pos = read_var_uint(self.data, pos)
        if client > MAX_CLIENT or clock > MAX_CLOCK:
            raise ProtocolError(f"item id ({client}, {clock}) does not fit 53-bit clients and 32-bit clocks")
        return client, clock

    def clock(self) -> int:
        clock = self.uint()
        if clock > MAX_CLOCK:
            raise ProtocolError(f"clock {clock} does not fit 32 bits")
        return clock

    def skip_any(self) -> None:
        """lib0 ``readAny``, skipped, with nesting bounded by ``MAX_NESTING``."""
        open_containers: list[list[int]] = []  # [values left, 1 for an object (keyed values)]
        while True:
            kind = self.byte()
            if kind == 125:  # integer
                self.skip_int()
            elif kind in _ANY_FIXED_SIZE:
                self.skip(_ANY_FIXED_SIZE[kind])
            elif kind == 119:  # string
                self.string()
            elif kind == 116:  # Uint8Array
                self.skip_buffer()
            elif kind == 118 or kind == 117:  # object (key, value pairs), array
                size = self.count("object" if kind == 118 else "array")
                if size:
                    if len(open_containers) >= MAX_NESTING:
                        raise ProtocolError(f"values nest deeper than {MAX_NESTING} levels")
                    open_containers.append([size, kind == 118])
            else:
                raise ProtocolError(f"unknown value type {kind}")
            while open_containers and open_containers[-1][0] == 0:
                open_containers.pop()
            if not open_containers:
                return
            container = open_containers[-1]
            container[0] -= 1
            if container[1]:
                self.string()  # the key of the next value


# -- updates ---------------------------------------------------------------------------------------


# What a struct may cost Yrs besides a constant (UpdateFacts.walks, .splits), as indices into
# ``Costs``.
WALKS, SPLITS = 2, 1


class Costs(NamedTuple):
    """What applying one struct or deletion may cost at most, in seconds, in a document of
    ``units`` clock units (``room.struct_costs``)."""

    plain: float  # a struct that neither splits an item nor walks among concurrent ones
    split: float  # one that may split an item (so may each end of a deletion)
    walk: float  # one that may walk among concurrent items
    deleted: float  # each clock unit a deletion covers (Yjs marks each item in its range)
    units: int  # no item is longer, no walk or deletion passes more items

    @property
    def deletion_ends(self) -> float:
        """What a deletion may cost besides the units it covers: a split at each end."""
        return 2 * self.split - self.plain

    def deletion(self, length: int) -> float:
        """What deleting a range of ``length`` clock units may cost."""
        return self.deletion_ends + min(length, self.units) * self.deleted


class RootKind(StrEnum):
    """What a root shared type is, as far as its content tells."""

    TEXT = "text"
    ARRAY = "array"
    MAP = "map"
    XML_FRAGMENT = "xml_fragment"


class _Items:
    """What ``root_kinds`` needs of each item (GC and skipped ranges are not items), in columns."""

    __slots__ = ("client", "clock", "keyed", "kind", "length", "origin", "parent", "right_origin", "type_ref")

    def __init__(self) -> None:
        self.client: list[int] = []
        self.clock: list[int] = []
        self.length: list[int] = []
        self.origin: list[tuple[int, int] | None] = []
        self.right_origin: list[tuple[int, int] | None] = []
        self.parent: list[str | tuple[int, int] | None] = []  # a root's name, a type item's id, or inherited
        self.keyed: list[bool] = []  # a map entry (has a parent key)
        self.kind: list[int] = []  # the content (STRING, ANY, TYPE ...)
        self.type_ref: list[int | None] = []  # for a shared type: which (TYPE_ARRAY ...)


@dataclass(slots=True)
class UpdateFacts:
    """What checking an update found that only the document it is applied to can confirm."""

    structs: int = 0  # items, garbage-collected and skipped ranges
    deletions: int = 0  # ranges in the delete set
    deleted: int = 0  # the clock units they cover, together
    length: int = 0  # clock units its structs span (what it adds to the document, at most)
    # client -> the clock the document must have reached for it (its structs continue the
    # client's, their origins and parents, and the items it deletes, outside the update itself)
    needs: dict[int, int] = field(default_factory=dict)
    clocks: dict[int, int] = field(default_factory=dict)  # client -> the clock after what it holds
    starts: dict[int, int] = field(default_factory=dict)  # client -> the first clock it holds
    # Items Yjs may have to place among concurrent ones, walking them: no origin, one outside
    # what the update brings, or one that other items of the update name too (siblings); and
    # items that may split an item: one whose origin is not the end of its own client's previous
    # struct, or that has a right origin. (Read for a document, ``known``, what the update holds
    # below the document's clocks counts as the document's.)
    walks: int = 0
    splits: int = 0
    # Shared types the update names as parents by id (the first item inserted into a nested
    # type), outside the update itself: the document must already hold them.
    parents: list[tuple[int, int]] = field(default_factory=list)

    def missing_parent(self, state_vector: dict[int, int]) -> tuple[int, int] | None:
        """The first parent the document (its state vector: client -> clock) does not hold."""
        for client, clock in self.parents:
            if clock >= state_vector.get(client, 0):
                return client, clock
        return None

    def overlaps(self, state_vector: dict[int, int]) -> bool:
        """Whether the update holds structs the document (its state vector) holds already."""
        return any(start < state_vector.get(client, 0) for client, start in self.starts.items())

    def missing_dependency(self, state_vector: dict[int, int]) -> tuple[int, int] | None:
        """The first id the update needs that the document (its state vector) does not hold."""
        for client, clock in self.needs.items():
            if clock > state_vector.get(client, 0):
                return client, clock - 1
        return None


@dataclass(slots=True)
class _Sections:
    """Where each client's structs lie in the update (for ``split_update``)."""

    # (client, [(start offset, end offset, first clock, clock after)] of each struct)
    sections: list[tuple[int, list[tuple[int, int, int, int]]]] = field(default_factory=list)
    # the ids each struct names (origin, right origin, parent), in the order of the sections
    names: list[list[tuple[int, int]]] = field(default_factory=list)
    # for each struct, in the same order: WALKS, SPLITS or 0 (see UpdateFacts)
    costs: bytearray = field(default_factory=bytearray)
    structs_end: int = 0
    empty_items: bool = False  # items of length 0 (Yrs writes some), whose successor shares their clock
    # (client, [(first clock, length)] of each range) of the delete set
    deletions: list[tuple[int, list[tuple[int, int]]]] = field(default_factory=list)


def _utf16_length(encoded: bytes) -> int:
    """Yjs counts text in UTF-16 code units."""
    return len(encoded.decode("utf-8").encode("utf-16-le")) // 2


def _read_content(r: _Reader, kind: int, items: _Items | None) -> int:
    """Read an item's content; returns its length in clock units."""
    length = 1
    ref = None
    if kind == STRING:
        text = r.string()
        length = len(text) if text.isascii() else _utf16_length(text)
    elif kind == DELETED:
        length = r.uint()
    elif kind == ANY:
        length = r.count("value")
        for _ in range(length):
            r.skip_any()
    elif kind == FORMAT:
        r.string()  # the attribute
        r.string()  # its value, as JSON
    elif kind == EMBED:
        r.string()  # JSON
    elif kind == BINARY:
        r.skip_buffer()
    elif kind == TYPE:
        ref = _read_type_ref(r)
    elif kind == JSON:
        # Yjs has written ContentAny since version 13, and Yrs reads one string more than the
        # count says: such bytes mean something else to Yrs than to any reader checking them.
        raise ProtocolError("JSON item content (ContentJSON) is not supported; Yjs writes ContentAny")
    elif kind == DOC:
        r.string()  # the subdocument's guid
        r.skip_any()  # its options
    else:
        raise ProtocolError(f"unknown item content {kind}")
    if items is not None:
        items.kind.append(kind)
        items.type_ref.append(ref)
    return length


def _read_type_ref(r: _Reader) -> int:
    """A shared type's content: which type, and an XML element's or hook's name (skipped)."""
    ref = r.uint()
    if ref > TYPE_XML_TEXT:
        raise ProtocolError(f"unknown shared type {ref}")
    if ref in (TYPE_XML_ELEMENT, TYPE_XML_HOOK):
        r.string()
    return ref


# One loop over every struct, as Yjs's ``readClientsStructRefs``: this is the hot path of every
# update a client sends, and splitting it would cost a call per item.
def _read_structs(  # noqa: C901
    r: _Reader,
    facts: UpdateFacts,
    items: _Items | None,
    layout: _Sections | None,
    known: dict[int, int] | None = None,
) -> dict[int, list[tuple[int, int]]]:
    """Read the structs; returns the clock ranges each client's hold (without skipped ones).
    ``known``: the state vector of the document the update is for (see ``UpdateFacts``)."""
    ranges: dict[int, list[tuple[int, int]]] = {}  # client -> clock ranges this update holds
    types: set[tuple[int, int]] = set()  # ids of the shared types it creates
    named_parents: list[tuple[tuple[int, int], tuple[int, int]]] = []  # (parent id, item id)
    named: list[tuple[int, int]] = []  # ids the items name: origins, right origins, parents
    empty_items: set[tuple[int, int]] = set()  # ids of items of length 0 (Yrs writes some)
    # (index among the structs, its client, clock, origin, right origin) of each item
    placed: list[tuple[int, int, int, tuple[int, int] | None, tuple[int, int] | None]] = []
    index = 0
    names = layout.names if layout is not None else None
    for _ in range(r.count("client")):
        structs = r.count("struct")
        client = r.client()
        if client in ranges:  # Yjs writes each client's structs once (readClientsStructRefs keeps one)
            raise ProtocolError(f"client {client}'s structs come in two sections")
        held = ranges[client] = []
        clock = first = r.clock()
        offsets: list[tuple[int, int, int, int]] | None = [] if layout is not None else None
        for _ in range(structs):
            start, start_clock = r.pos, clock
            info = r.byte()
            kind = info & 0x1F
            if kind in (GC, SKIP):
                length = r.uint()
                if not length:  # Yjs never writes one, and Yrs cannot encode a document holding one
                    raise ProtocolError("an empty garbage-collected or skipped range")
                if kind == SKIP:  # a gap: what follows continues what the document holds
                    if clock > first:
                        held.append((first, clock))
                    first = clock + length
                clock += length
                if names is not None:
                    names.append([])
            else:
                origin = r.item_id() if info & _BIT_ORIGIN else None
                right_origin = r.item_id() if info & _BIT_RIGHT_ORIGIN else None
                parent: str | tuple[int, int] | None = None
                keyed = False
                start_named = len(named)
                if origin is not None:
                    named.append(origin)
                if right_origin is not None:
                    named.append(right_origin)
                if not info & (_BIT_ORIGIN | _BIT_RIGHT_ORIGIN):
                    # The parent is written only when it cannot be taken from a neighbour.
                    if r.uint() == 1:
                        parent = r.string().decode("utf-8")
                    else:
                        parent = r.item_id()
                        named_parents.append((parent, (client, clock)))
                        named.append(parent)
                    if info & _BIT_PARENT_SUB:
                        r.string()
                        keyed = True
                if names is not None:
                    names.append(named[start_named:])
                placed.append((index, client, clock, origin, right_origin))
                if items is not None:
                    items.client.append(client)
                    items.clock.append(clock)
                    items.origin.append(origin)
                    items.right_origin.append(right_origin)
                    items.parent.append(parent)
                    items.keyed.append(keyed)
                if kind == TYPE:
                    types.add((client, clock))
                length = _read_content(r, kind, items)
                if items is not None:
                    items.length.append(length)
                clock += length
            if clock == start_clock:  # an empty item: what names it names the update's
                empty_items.add((client, clock))
            if offsets is not None:
                offsets.append((start, r.pos, start_clock, clock))
            index += 1
        if clock > MAX_CLOCK:
            raise ProtocolError(f"clocks of client {client} pass 32 bits")
        if clock > first:
            held.append((first, clock))
        if held:  # a skipped range at the end holds nothing: the client's clock stays
            facts.starts[client] = held[0][0]
            facts.clocks[client] = held[-1][1]
        facts.structs += structs
        facts.length += sum(end - start for start, end in held)
        if layout is not None and offsets is not None:
            layout.sections.append((client, offsets))
    for parent, item in named_parents:
        if not _within(ranges.get(parent[0]), parent[1]):
            facts.parents.append(parent)
        elif parent not in types or parent == item:
            raise ProtocolError(f"item {item} names {parent} as its parent, which is not a shared type")
    # What the update needs the document to hold: each run of a client's structs continues the
    # client's clock, and what the items name outside the update.
    needs = facts.needs
    for client, held in ranges.items():
        for start, _ in held:
            if start > needs.get(client, 0):
                needs[client] = start
    for client, clock in named:
        if (
            clock >= needs.get(client, 0)
            and not _within(ranges.get(client), clock)
            and (client, clock) not in empty_items
        ):
            needs[client] = clock + 1
    new = ranges if not known else _above(ranges, known)  # what the document lacks
    costs = bytearray(index)
    named_by: dict[tuple[int, int], int] = {}  # an origin -> the first item naming it
    for at, client, clock, origin, right_origin in placed:
        if origin is None or not _within(new.get(origin[0]), origin[1]):
            costs[at] = WALKS
            continue
        first_named = named_by.setdefault(origin, at)
        if first_named != at:  # siblings: Yjs places each by walking the others
            costs[at] = costs[first_named] = WALKS
        elif right_origin is not None or origin != (client, clock - 1):
            # It may split an item: its origin's, unless that ends its own client's previous
            # struct (which, applied in parts, ends what an earlier part merged it into), and
            # its right origin's.
            costs[at] = SPLITS
    facts.walks = costs.count(WALKS)
    facts.splits = costs.count(SPLITS)
    if layout is not None:
        layout.empty_items = bool(empty_items)
        layout.structs_end = r.pos
        layout.costs = costs
    return ranges


def _above(
    ranges: dict[int, list[tuple[int, int]]], known: dict[int, int]
) -> dict[int, list[tuple[int, int]]]:
    """``ranges`` (client -> clock ranges) from each client's clock in ``known`` on."""
    above = {}
    for client, held in ranges.items():
        floor = known.get(client, 0)
        above[client] = [(max(start, floor), end) for start, end in held if end > floor]
    return above


def _within(held: list[tuple[int, int]] | None, clock: int) -> bool:
    """Whether ``clock`` lies in one of ``held``'s ranges (``(start, end)``, in clock order)."""
    if not held:
        return False
    if len(held) == 1:
        return held[0][0] <= clock < held[0][1]
    at = bisect_right(held, clock, key=itemgetter(0)) - 1
    return at >= 0 and clock < held[at][1]


def _read_delete_set(
    r: _Reader, facts: UpdateFacts, layout: _Sections | None, ranges: dict[int, list[tuple[int, int]]]
) -> None:
    for _ in range(r.count("delete set client")):
        client = r.client()
        count = r.count("deletion")
        deleted: list[tuple[int, int]] = []
        for _ in range(count):
            clock = r.clock()
            length = r.uint()
            end = clock + length
            if end > MAX_CLOCK:
                raise ProtocolError("a deletion passes 32-bit clocks")
            # Deleting what neither the update nor the document holds would wait in Yrs.
            if not _within(ranges.get(client), end - 1) and end > facts.needs.get(client, 0):
                facts.needs[client] = end
            facts.deleted += length
            if layout is not None:
                deleted.append((clock, length))
        facts.deletions += count
        if layout is not None and deleted:
            layout.deletions.append((client, deleted))


def _read_update(
    update: bytes,
    items: _Items | None = None,
    layout: _Sections | None = None,
    known: dict[int, int] | None = None,
) -> UpdateFacts:
    r = _Reader(update)
    facts = UpdateFacts()
    ranges = _read_structs(r, facts, items, layout, known)
    _read_delete_set(r, facts, layout, ranges)
    if r.remaining:
        raise ProtocolError(
            f"{r.remaining} bytes after the end of the update: not a Yjs v1 update "
            "(v2-encoded updates are not supported; y-websocket sends v1)"
        )
    return facts


def _one_item(update: bytes) -> UpdateFacts | None:
    """What ``_read_update`` finds in the update a Yjs client sends for one edit: one client,
    one item with a left and/or a right origin (so no parent is written), no deletions. Read
    in a few steps, without the bookkeeping that many structs need; None, never an error, for
    any other update, and for one that ``_read_update`` would refuse or that names its own
    range: those are left to it."""
    last = len(update) - 1  # the delete set: no clients
    if last < 5 or update[0] != 1 or update[1] != 1 or update[last] != 0:
        return None
    try:
        client, pos = read_var_uint(update, 2)
        clock, pos = read_var_uint(update, pos)
        info = update[pos]
        kind = info & 0x1F
        if kind in (GC, SKIP) or not info & (_BIT_ORIGIN | _BIT_RIGHT_ORIGIN):
            return None
        origin = right_origin = None
        pos += 1
        if info & _BIT_ORIGIN:
            origin_client, pos = read_var_uint(update, pos)
            origin_clock, pos = read_var_uint(update, pos)
            origin = origin_client, origin_clock
        if info & _BIT_RIGHT_ORIGIN:
            right_client, pos = read_var_uint(update, pos)
            right_clock, pos = read_var_uint(update, pos)
            right_origin = right_client, right_clock
        if kind == STRING:
            size, pos = read_var_uint(update, pos)
            text = update[pos : pos + size]
            pos += size
            length = size if text.isascii() else _utf16_length(text)
        else:
            r = _Reader(update)
            r.pos = pos
            length = _read_content(r, kind, None)
            pos = r.pos
    except (ProtocolError, IndexError, UnicodeDecodeError):
        return None
    end = clock + length
    if pos != last or not length or client > MAX_CLIENT or end > MAX_CLOCK:
        return None
    needs = _one_item_needs(client, clock, end, origin, right_origin)
    if needs is None:
        return None
    # Its origin is outside the update: Yjs may walk concurrent items to place it.
    return UpdateFacts(1, 0, 0, length, needs, {client: end}, {client: clock}, 1, 0, [])


def _one_item_needs(
    client: int, clock: int, end: int, *names: tuple[int, int] | None
) -> dict[int, int] | None:
    """``UpdateFacts.needs`` of one item of ``client`` from ``clock`` to ``end`` naming
    ``names`` (its origins); None if one is out of range or inside the item itself."""
    needs = {client: clock} if clock else {}
    for named in names:
        if named is not None:
            named_client, named_clock = named
            if named_client > MAX_CLIENT or named_clock > MAX_CLOCK:
                return None
            if named_client == client and clock <= named_clock < end:
                return None
            if named_clock >= needs.get(named_client, 0):
                needs[named_client] = named_clock + 1
    return needs


def check_update(update: bytes, known: dict[int, int] | None = None) -> UpdateFacts:
    """Refuse (``ProtocolError``) a v1 update that is malformed, or whose counts, nesting,
    client ids or clocks exceed what its bytes and pycrdt can hold (see the module's rules).
    Returns what the document it is applied to must confirm (``UpdateFacts``); ``known``: that
    document's state vector, when the update may hold some of what the document holds."""
    if known is None:
        facts = _one_item(update)
        if facts is not None:
            return facts
    return _read_update(update, known=known)


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """A state vector (Yjs ``writeStateVector``: ``varUint count`` then ``count`` pairs of
    ``varUint client, varUint clock``, nothing after) as client -> clock. Raises
    ``ProtocolError`` for a malformed one."""
    r = _Reader(state_vector)
    clocks = {}
    for _ in range(r.count("state vector entry")):
        client = r.client()
        clocks[client] = r.clock()
    if r.remaining:
        raise ProtocolError(f"{r.remaining} bytes after the end of the state vector")
    return clocks


def check_state_vector(state_vector: bytes) -> None:
    """Refuse (``ProtocolError``) a malformed state vector (see ``decode_state_vector``)."""
    decode_state_vector(state_vector)


def _causal_order(update: bytes, layout: _Sections, flat: list[tuple[int, int]]) -> list[int]:
    """The structs (indices into ``flat``: section index, index in it) in the order Yrs
    integrates an update's clients, highest client id first (Yjs ``integrateStructs``), except
    that each comes after the structs of the update it continues or names (its origin, right
    origin, parent). Yjs places siblings (items with one origin) by client id, so that order
    passes none of them; in the sections' order, each would walk all those before it. A
    client's structs only name its earlier ones, so that order needs no more when no struct
    names one of a lower client; otherwise a depth-first walk."""
    sections = layout.sections
    section_of = {client: si for si, (client, _) in enumerate(sections)}
    first_index = list(itertools.accumulate((len(offsets) for _, offsets in sections), initial=0))
    by_client = sorted(range(len(sections)), key=lambda si: sections[si][0], reverse=True)
    order = [index for si in by_client for index in range(first_index[si], first_index[si + 1])]
    names = layout.names
    if all(
        client >= sections[si][0] or client not in section_of
        for (si, _), named in zip(flat, names, strict=True)
        for client, _ in named
    ):
        return order
    starts = [[struct[2] for struct in offsets] for _, offsets in sections]

    def struct_at(client: int, clock: int) -> int | None:
        si = section_of.get(client)
        if si is None:
            return None
        offsets = sections[si][1]
        k = bisect_right(starts[si], clock) - 1
        if k < 0 or clock >= offsets[k][3] or update[offsets[k][0]] & 0x1F == SKIP:
            return None
        return first_index[si] + k

    def depends_on(index: int) -> Iterator[int]:
        if flat[index][1]:
            yield index - 1
        for client, clock in names[index]:
            named = struct_at(client, clock)
            if named is not None and named != index:
                yield named

    return _depth_first(order, depends_on)


def _depth_first(roots: list[int], depends_on: Callable[[int], Iterator[int]]) -> list[int]:
    """``roots`` (``0 .. n - 1`` in some order) in that order, except that each comes after
    those it ``depends_on`` (a cycle, which Yjs never writes, is broken where the walk meets it)."""
    order: list[int] = []
    state = bytearray(len(roots))  # 0: not seen, 1: its dependencies being walked, 2: placed
    for root in roots:
        stack = [root]
        while stack:
            index = stack[-1]
            if state[index] == 0:
                state[index] = 1
                stack.extend(named for named in depends_on(index) if state[named] == 0)
            else:
                stack.pop()
                if state[index] == 1:
                    state[index] = 2
                    order.append(index)
    return order


def _var_uint(value: int) -> bytes:
    """lib0's writeVarUint: seven bits a byte, lowest first."""
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes((value,)) for value in range(0x80)]


class UpdateParts:
    """A checked update taken as updates of a chosen number of structs and deletions each,
    which applied in order make the whole (Yjs updates commute): the structs first, each after
    the structs of the update it continues or names (so that a part never waits in Yrs for a
    later one, to integrate with it at once), then the delete set's ranges. Raises
    ``ProtocolError`` for a malformed update, and for one holding empty items: Yrs writes some
    (when an edit cuts a multi-byte character), their successors share their clocks, and Yrs
    resolves such ids by the order it saw them, so such an update applied in parts is not the
    update. ``known``: the state vector of the document it is for (see ``UpdateFacts``)."""

    def __init__(self, update: bytes, known: dict[int, int] | None = None) -> None:
        layout = _Sections()
        self.facts = _read_update(update, layout=layout, known=known)
        if layout.empty_items:
            raise ProtocolError("an update holding items of length 0 applies only whole")
        self._update = update
        self._layout = layout
        self._flat = [(si, k) for si, (_, offsets) in enumerate(layout.sections) for k in range(len(offsets))]
        self._order = _causal_order(update, layout, self._flat)
        self._at = 0  # in the order
        # client -> the clock after what the parts taken hold of it (since its taker cleared it)
        self.clocks: dict[int, int] = {}
        # (client, first clock, length) of each range not taken yet, the next one first
        self._deletions = [
            (client, clock, length)
            for client, ranges in reversed(layout.deletions)
            for clock, length in reversed(ranges)
        ]

    @property
    def left(self) -> int:
        """Structs and deletions not yet taken."""
        return len(self._order) - self._at + len(self._deletions)

    def take(self, budget: float, costs: Costs) -> bytes:
        """The next part: the structs that fit ``budget`` seconds (at least one) by ``costs``
        (fewer where a client's next struct does not follow its last one in the part), or once
        the structs are taken the deletions that fit, a range that does not fit alone cut to
        what does. Raises ``IndexError`` when nothing is left."""
        if self._at < len(self._order):
            return self._structs(budget, costs)
        if self._deletions:
            return self._deletes(budget, costs)
        raise IndexError("no part left")

    def _structs(self, budget: float, costs: Costs) -> bytes:
        runs: dict[int, list[int]] = {}  # section index -> [first, last] index in it
        classes = self._layout.costs
        spent = 0.0
        while self._at < len(self._order):
            index = self._order[self._at]
            spent += costs[classes[index]]
            if runs and spent > budget:
                break
            si, k = self._flat[index]
            run = runs.get(si)
            if run is None:
                runs[si] = [k, k]
            elif k == run[1] + 1:
                run[1] = k
            else:
                break
            self._at += 1
        update, sections = self._update, self._layout.sections
        written = [_var_uint(len(runs))]
        for si, (first, last) in runs.items():
            client, offsets = sections[si]
            held = next((k for k in range(last, first - 1, -1) if update[offsets[k][0]] & 0x1F != SKIP), None)
            if held is not None:
                self.clocks[client] = max(self.clocks.get(client, 0), offsets[held][3])
            written += (_var_uint(last - first + 1), _var_uint(client), _var_uint(offsets[first][2]))
            written.append(update[offsets[first][0] : offsets[last][1]])
        # Yjs writeStructs (count, client, first clock, structs) and an empty delete set.
        written.append(b"\x00")
        return b"".join(written)

    def _deletes(self, budget: float, costs: Costs) -> bytes:
        left = self._deletions
        clients: dict[int, list[tuple[int, int]]] = {}
        spent = 0.0
        while left:
            client, clock, length = left[-1]
            spent += costs.deletion(length)
            if spent > budget:
                if clients:
                    break
                # Alone over the budget: the part deletes as many units as the budget covers
                # (besides its ends, which no cut makes cheaper), the next the rest.
                fits = max(1, int(budget / costs.deleted)) if costs.deleted else length
                if fits < length:
                    left[-1] = (client, clock + fits, length - fits)
                    clients[client] = [(clock, fits)]
                    break
            left.pop()
            clients.setdefault(client, []).append((clock, length))
        # No structs, then Yjs writeDeleteSet (clients: client, count, ranges).
        return (
            b"\x00"
            + _var_uint(len(clients))
            + b"".join(
                _var_uint(client)
                + _var_uint(len(ranges))
                # in order of clock, as Yjs writes them (Yrs merges others wrongly)
                + b"".join(_var_uint(clock) + _var_uint(length) for clock, length in sorted(ranges))
                for client, ranges in clients.items()
            )
        )


def split_update(update: bytes, max_size: int) -> list[bytes]:
    """``update`` as parts of at most ``max_size`` structs or deletions (``UpdateParts``), or
    whole if it holds no more. Raises ``ProtocolError`` as ``UpdateParts`` does."""
    facts = check_update(update)
    if facts.structs + facts.deletions <= max_size:
        return [update]
    parts = UpdateParts(update)
    each = Costs(plain=1, split=1, walk=1, deleted=0, units=0)  # a struct or deletion counts 1
    return [parts.take(max_size, each) for _ in iter(lambda: parts.left, 0)]


# Larger payloads are read in a worker thread: the event loop gets the interpreter back every few
# milliseconds and keeps serving everyone else meanwhile.
OFF_LOOP_BYTES = 64 * 1024


async def check_message(message: Message, *, updates: bool = True) -> UpdateFacts | None:
    """Check the Yjs payload of a y-websocket message: the state vector of sync step 1, the
    update of sync step 2 and of an update message (whose ``UpdateFacts`` are returned; not
    read when ``updates`` is false: from a client that cannot write, an update is refused
    unread). Raises ``ProtocolError``."""
    if message.type is not MessageType.SYNC:
        return None
    if message.sync_type is SyncType.STEP1:
        await _off_loop(check_state_vector, message.payload)
        return None
    return await _off_loop(check_update, message.payload) if updates else None


async def check_update_soon(update: bytes, known: dict[int, int] | None = None) -> UpdateFacts:
    """``check_update(update, known)``, in a worker thread when the update is large."""
    return await _off_loop(lambda payload: check_update(payload, known), update)


async def update_parts_soon(update: bytes, known: dict[int, int] | None = None) -> UpdateParts:
    """``UpdateParts(update, known)``, read in a worker thread when the update is large."""
    return await _off_loop(lambda payload: UpdateParts(payload, known), update)


async def _off_loop(check: Callable[[bytes], T], payload: bytes) -> T:
    if len(payload) > OFF_LOOP_BYTES:
        return await asyncio.to_thread(check, payload)
    return check(payload)


# What each content makes of the sequence it is in (deleted content says nothing).
_TEXT_CONTENT = {STRING, FORMAT, EMBED}
_VALUE_CONTENT = {ANY, JSON, BINARY, DOC}


def _holds(ref: int, kind: int, child_ref: int | None) -> bool:
    """May a nested shared type of type ``ref`` hold this content in its sequence? (Yjs's own
    types never mix: an array holds values and types, a text holds text and embedded types, an
    XML node holds XML nodes.)"""
    if kind == DELETED:
        return True
    if ref in (TYPE_TEXT, TYPE_XML_TEXT):
        return kind in _TEXT_CONTENT or kind == TYPE
    if ref in (TYPE_XML_ELEMENT, TYPE_XML_FRAGMENT):
        return kind == TYPE and child_ref in _XML_CHILDREN
    return kind in _VALUE_CONTENT or kind == TYPE  # array, map, XML hook (a map)


def root_kinds(update: bytes) -> dict[str, RootKind]:
    """What each root shared type of a document is, read from the document's own encoding
    (``doc.get_update()``): a root holding keyed entries is a map, one holding text (strings,
    formatting, embeds) a text, one holding XML nodes an XML fragment, one holding other values
    an array. A root whose content was all deleted (and garbage-collected) no longer shows what
    it was; it counts as an empty text. Raises ``ProtocolError`` for a malformed update, and for
    a nested shared type holding content its type cannot hold (which Yjs never writes, and
    which pycrdt cannot read)."""
    items = _Items()
    _read_update(update, items)
    parents = _resolve_parents(items)
    type_refs = {
        (client, clock): ref
        for client, clock, ref in zip(items.client, items.clock, items.type_ref, strict=True)
        if ref is not None
    }
    found: dict[str, set[RootKind]] = {}
    keyed: set[str] = set()
    for index, parent in enumerate(parents):
        kind, child_ref = items.kind[index], items.type_ref[index]
        if isinstance(parent, tuple):
            ref = type_refs.get(parent)
            if ref is None:
                raise ProtocolError(f"item {parent} holds content but is not a shared type")
            if not items.keyed[index] and not _holds(ref, kind, child_ref):
                raise ProtocolError(f"a nested shared type ({parent}) holds content its type cannot hold")
        elif isinstance(parent, str):
            if items.keyed[index]:
                keyed.add(parent)
            elif kind in _TEXT_CONTENT:
                found.setdefault(parent, set()).add(RootKind.TEXT)
            elif kind == TYPE and child_ref in _XML_CHILDREN:
                found.setdefault(parent, set()).add(RootKind.XML_FRAGMENT)
            elif kind != DELETED:
                found.setdefault(parent, set()).add(RootKind.ARRAY)
            else:
                found.setdefault(parent, set())
    return {name: _root_kind(found.get(name, set()), name in keyed) for name in found.keys() | keyed}


def _root_kind(seen: set[RootKind], keyed: bool) -> RootKind:
    """A root's kind from the kinds of content it holds (text first, as Yjs reads it)."""
    for root_kind in (RootKind.TEXT, RootKind.XML_FRAGMENT, RootKind.ARRAY):
        if root_kind in seen:
            return root_kind
    return RootKind.MAP if keyed else RootKind.TEXT


def _resolve_parents(items: _Items) -> list[str | tuple[int, int] | None]:
    """Each item's parent (a root's name or a type item's id). An item written without one has
    its left neighbour's (origin) or else its right neighbour's (Yjs ``Item.integrate``), and
    inherits its parent key with it."""
    by_client: dict[int, tuple[list[int], list[int]]] = {}
    for index, (client, clock) in enumerate(zip(items.client, items.clock, strict=True)):
        starts, indices = by_client.setdefault(client, ([], []))
        starts.append(clock)
        indices.append(index)
    for starts, indices in by_client.values():
        if any(a > b for a, b in itertools.pairwise(starts)):
            order = sorted(range(len(starts)), key=starts.__getitem__)
            starts[:] = [starts[i] for i in order]
            indices[:] = [indices[i] for i in order]

    def containing(item_id: tuple[int, int] | None) -> int | None:
        if item_id is None or item_id[0] not in by_client:
            return None
        starts, indices = by_client[item_id[0]]
        at = bisect_right(starts, item_id[1]) - 1
        if at < 0:
            return None
        index = indices[at]
        return index if item_id[1] < items.clock[index] + items.length[index] else None

    parents = list(items.parent)
    unresolved = object()
    state: list[object] = [p if p is not None else unresolved for p in parents]
    for start in range(len(parents)):
        chain: list[int] = []
        current: int | None = start
        while current is not None and state[current] is unresolved:
            state[current] = None  # visiting: a cycle resolves to unknown
            chain.append(current)
            neighbour = containing(items.origin[current])
            if neighbour is None:
                neighbour = containing(items.right_origin[current])
            current = neighbour
        found = state[current] if current is not None else None
        keyed = items.keyed[current] if current is not None else False
        for index in chain:
            state[index] = found
            items.keyed[index] = keyed
    return [p if isinstance(p, str | tuple) else None for p in state]
