"""The short read of a one-edit update (``yjs_format._one_item``) against the general reader
(``_read_update``): for every update it takes, the same facts; everything the general reader
refuses, and every update of another shape, it leaves to that reader."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text, write_var_uint

from server.protocol import ProtocolError
from server.yjs_format import MAX_CLIENT, MAX_CLOCK, _one_item, _read_update, check_update
from tests.support.damage import mutated

# Text with astral characters (two UTF-16 units each) and multi-byte ones.
TEXT = st.text(alphabet=st.sampled_from("ab é€😀\n"), min_size=1, max_size=6)


def _edit(doc: Doc, action: tuple[str, int, str]) -> None:
    kind, at, value = action
    text = doc.get("text", type=Text)
    array = doc.get("array", type=Array)
    chars = str(text)

    def offset(index: int) -> int:  # pycrdt's text offsets count UTF-8 bytes
        return len(chars[:index].encode())

    if kind == "insert":
        text.insert(offset(at % (len(chars) + 1)), value)
    elif kind == "delete" and chars:
        start = at % len(chars)
        del text[offset(start) : offset(start + 1)]
    elif kind == "format" and chars:
        text.format(0, offset(at % len(chars) + 1), {"bold": True})
    elif kind == "map":
        doc.get("map", type=Map)[value[:1]] = at
    else:
        array.insert(at % (len(array) + 1), value)


ACTIONS = st.tuples(
    st.sampled_from(["insert", "insert", "delete", "format", "map", "array"]), st.integers(0, 50), TEXT
)


@st.composite
def edits(draw: st.DrawFn) -> bytes:
    """The update one edit makes in a document two clients wrote: what a Yjs client sends."""
    base = Doc(client_id=draw(st.integers(1, 2**32 - 1)))
    for action in draw(st.lists(ACTIONS, max_size=6)):
        _edit(base, action)
    doc = Doc(client_id=draw(st.integers(1, MAX_CLIENT)))
    doc.apply_update(base.get_update())
    for action in draw(st.lists(ACTIONS, max_size=3)):
        _edit(doc, action)
    before = doc.get_state()
    _edit(doc, draw(ACTIONS))
    return doc.get_update(before)


# Numbers spliced into damaged updates: at and past the limits of clocks and client ids.
EDGE_NUMBERS = [0, MAX_CLOCK, MAX_CLOCK + 1, MAX_CLIENT + 1]


def assert_same_as_general(update: bytes) -> None:
    short = _one_item(update)
    if short is None:
        return
    assert short == _read_update(update)  # raises if the general reader refuses it


@settings(max_examples=400, deadline=None)
@given(edits())
def test_an_edit_reads_as_the_general_reader_reads_it(update: bytes) -> None:
    assert_same_as_general(update)
    assert check_update(update) == _read_update(update)


@settings(max_examples=600, deadline=None)
@given(mutated(edits().filter(lambda update: _one_item(update) is not None), EDGE_NUMBERS, most=2, junk=4))
def test_a_damaged_edit_is_read_the_same_or_left_to_the_general_reader(update: bytes) -> None:
    assert_same_as_general(update)


def one_item(
    client: bytes = b"\x05",
    clock: bytes = b"\x03",
    info: int = 0x84,
    ids: bytes = b"\x05\x02",
    content: bytes = b"\x02ab",
) -> bytes:
    """A one-client, one-item update, written field by field (by default: client 5 appends "ab"
    after its own (5, 2))."""
    return b"\x01\x01" + client + clock + bytes([info]) + ids + content + b"\x00"


def test_typing_takes_the_short_read() -> None:
    doc = Doc(client_id=7)
    text = doc.get("text", type=Text)
    text += "hello"
    before = doc.get_state()
    text.insert(2, "é😀")  # in the middle: a left and a right origin
    update = doc.get_update(before)
    facts = _one_item(update)
    assert facts is not None
    assert (facts.structs, facts.length, facts.clocks, facts.starts, facts.needs) == (
        1,
        3,
        {7: 8},
        {7: 5},
        {7: 5},
    )
    assert facts == _read_update(update)
    assert _one_item(one_item()) == _read_update(one_item())


@pytest.mark.parametrize(
    "update",
    [
        one_item(ids=b"\x05\x03"),  # its origin is the item itself
        one_item(info=0xC4, ids=b"\x05\x01\x05\x04"),  # its right origin lies inside it
        one_item(content=b"\x00"),  # an empty string: an item of length 0
        one_item(content=b"\x02\xff\xfe"),  # not UTF-8
        one_item(content=b"\x03ab"),  # the string runs into the delete set
        one_item(info=0x82, content=b"\x01"),  # ContentJSON
        one_item(clock=write_var_uint(MAX_CLOCK - 1)),  # passes 32-bit clocks
        one_item(client=write_var_uint(MAX_CLIENT + 1)),  # a client id over 53 bits
        one_item(ids=write_var_uint(MAX_CLIENT + 1) + b"\x00"),  # an origin's client over 53 bits
        one_item(ids=b"\x05" + write_var_uint(MAX_CLOCK + 1)),  # an origin's clock over 32 bits
        one_item() + b"\x00",  # a byte after the delete set
        one_item()[:-2] + b"\x00",  # cut inside the string
        one_item(info=0x04, ids=b"\x01\x04text"),  # no origin: the parent is written
        one_item(info=0x80, ids=b"\x05\x02", content=b"\x03"),  # a garbage-collected range
        b"\x01\x02" + one_item()[2:],  # two structs
    ],
)
def test_what_the_short_read_leaves_to_the_general_reader(update: bytes) -> None:
    assert _one_item(update) is None
    try:
        facts = check_update(update)
    except ProtocolError:
        return
    assert facts == _read_update(update)
