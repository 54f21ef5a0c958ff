"""``yjs_format.UpdateParts`` and ``room.struct_costs``: a client's update that could cost Yrs
more than ``PART_SECONDS`` is applied in parts; the parts, applied in order, make the same
document as the whole, each holds at most what its budget allows, none waits for a later one,
and an update Yrs could only take whole is never split."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from pycrdt import Doc, Text, merge_updates

from server import room as room_module
from server.channel import FrameRejected
from server.close_codes import CLOSE_4429_RATE_LIMITED
from server.protocol import ProtocolError, write_var_uint
from server.room import (
    PART_SECONDS,
    STRUCT_SECONDS,
    DocumentBroken,
    Room,
    RoomKey,
    struct_costs,
    update_cost,
)
from server.yjs_format import UpdateParts, check_update, split_update
from tests.unit.test_room_load import content, edit_log, one_by_one


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("size", [1, 2, 7, 50])
def test_the_parts_of_an_update_applied_in_order_make_the_whole(seed: int, size: int) -> None:
    log = edit_log(300, seed=seed)
    base = one_by_one(log[:100])
    update = merge_updates(*log[100:])  # three clients' structs and deletions in one update
    facts = check_update(update)
    assert facts.structs > size and facts.deletions > 0

    parts = split_update(update, size)

    held = [check_update(part) for part in parts]
    assert all(0 < part.structs + part.deletions <= size for part in held)
    assert sum(part.structs for part in held) == facts.structs
    assert sum(part.deletions for part in held) == facts.deletions
    assert sum(part.length for part in held) == facts.length
    whole: Doc[Any] = Doc()
    in_parts: Doc[Any] = Doc()
    for doc in (whole, in_parts):
        doc.apply_update(base.get_update())
    whole.apply_update(update)
    for part in parts:
        in_parts.apply_update(part)
    assert in_parts.get_state() == whole.get_state()
    assert content(in_parts) == content(whole)


def empty_item_update() -> bytes:
    """A document's state holding an item of length 0, which Yrs writes for the part of a
    multi-byte character an edit cuts."""
    author = Doc(client_id=5)
    author.get("emoji", type=Text).insert(0, "a\U0001f600b")
    editor = Doc(client_id=6)
    editor.apply_update(author.get_update())
    del editor.get("emoji", type=Text)[0:1]
    third = Doc(client_id=7)
    third.apply_update(editor.get_update())
    third.get("emoji", type=Text).insert(1, "Z")
    return third.get_update()


def test_an_update_holding_an_empty_item_is_refused_rather_than_split() -> None:
    update = empty_item_update()
    facts = check_update(update)
    assert split_update(update, facts.structs + facts.deletions) == [update]
    with pytest.raises(ProtocolError, match="items of length 0 applies only whole"):
        split_update(update, 1)


def test_what_a_struct_may_cost_grows_with_the_documents_clock_units_and_with_what_it_may_do() -> None:
    empty = struct_costs(0)
    assert (empty.plain, empty.split, empty.walk) == (STRUCT_SECONDS, STRUCT_SECONDS, STRUCT_SECONDS)
    costs = struct_costs(10_000)
    assert costs.plain == STRUCT_SECONDS < costs.split < costs.walk
    # A deletion may split an item at each end, and passes each unit it covers, at most the document's.
    assert costs.deletion(1) < costs.deletion(10_000) == costs.deletion(2**31)
    # Appends after the update's own structs neither split nor walk; insertions into a run do.
    writer: Doc[Any] = Doc(client_id=1)
    text = writer.get("text", type=Text)
    with writer.transaction():
        for i in range(50):
            text.insert(len(text), f"{i} ")
    appends = check_update(writer.get_update())
    assert (appends.walks, appends.splits) == (1, 0)  # the first item has no origin
    _, insertions = run_and_insertions(10_000, 20)
    facts = check_update(insertions)
    assert facts.walks == 20
    assert update_cost(facts, struct_costs(10_000)) == 20 * costs.walk
    assert update_cost(appends, struct_costs(0)) <= PART_SECONDS


def run_and_insertions(run: int, count: int) -> tuple[bytes, bytes]:
    """One writer's run of ``run`` characters, and another client's ``count`` one-character
    insertions into it, two characters apart back from its end, as one update."""
    writer = Doc(client_id=1)
    writer.get("text", type=Text).insert(0, "a" * run)
    other = Doc(client_id=2)
    other.apply_update(writer.get_update())
    text = other.get("text", type=Text)
    before = other.get_state()
    with other.transaction():
        for i in range(count):
            text.insert(run - 2 * i - 1, "x")
    return writer.get_update(), other.get_update(before)


class Stored:
    """A room's ``on_update`` listener: keeps what the room logged, and relays it at once."""

    def __init__(self) -> None:
        self.updates: list[bytes] = []

    def __call__(self, _document_id: int, update: bytes, relay: Callable[[], None]) -> None:
        self.updates.append(update)
        relay()


def loaded_room(run: bytes, stored: Stored) -> Room:
    doc: Doc[Any] = Doc()
    doc.apply_update(run)
    return Room(
        RoomKey("ws-parts", "doc"),
        1,
        doc,
        on_update=stored,
        on_broken=lambda _room: None,
        loaded_bytes=len(run),
    )


def one_part_a_turn(
    monkeypatch: pytest.MonkeyPatch, run_length: int, count: int
) -> tuple[bytes, bytes, Stored, Room]:
    """``run_and_insertions(run_length, count)``, and a room loaded with the run that applies an
    update in parts one part a turn (each part logged on its own): (run, insertions, log, room)."""
    monkeypatch.setattr(room_module, "TURN_SECONDS", 0.0)
    run, insertions = run_and_insertions(run_length, count)
    stored = Stored()
    return run, insertions, stored, loaded_room(run, stored)


def new_room(stored: Stored) -> Room:
    return Room(
        RoomKey("ws-parts", "doc"), 1, Doc(), on_update=stored, on_broken=lambda _room: None, loaded_bytes=0
    )


def replayed(*updates: bytes) -> str:
    """The text of a document built from ``updates``, in order."""
    doc: Doc[Any] = Doc()
    for update in updates:
        doc.apply_update(update)
    return text(doc)


def read_again(_state: bytes) -> dict[int, int]:
    """In place of ``decode_state_vector``, in a room that should not need it."""
    raise AssertionError("the state vector was read again")


def text(doc: Doc[Any]) -> str:
    return str(doc.get("text", type=Text))


async def test_an_update_applied_within_one_turn_is_logged_and_relayed_as_it_came(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        room_module, "TURN_SECONDS", 60.0
    )  # its parts all fit one turn, however busy the machine
    run, insertions = run_and_insertions(100_000, 10)
    facts = check_update(insertions)
    stored = Stored()
    room = loaded_room(run, stored)
    assert update_cost(facts, struct_costs(100_000)) > PART_SECONDS

    await room.apply_update(insertions, facts)

    assert stored.updates == [insertions]
    assert text(room.doc).count("x") == 10


async def test_each_turn_is_logged_as_one_update_and_the_time_allowance_stops_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run, insertions, stored, room = one_part_a_turn(monkeypatch, 100_000, 40)
    costs: list[float] = []

    def spent(seconds: float) -> None:
        costs.append(seconds)
        if len(costs) == 3:
            raise FrameRejected(CLOSE_4429_RATE_LIMITED)

    with pytest.raises(FrameRejected):
        await room.apply_update(insertions, check_update(insertions), spent=spent)

    # Three turns, each logged; nothing after the allowance ran out; what is logged is the room.
    assert len(stored.updates) == 3
    assert costs == sorted(costs) and costs[0] > 0
    assert replayed(run, *stored.updates) == text(room.doc)
    assert 0 < text(room.doc).count("x") < 40


async def test_a_room_reloaded_between_turns_stops_the_update(monkeypatch: pytest.MonkeyPatch) -> None:
    _, insertions, stored, room = one_part_a_turn(monkeypatch, 100_000, 40)

    def break_room(_seconds: float) -> None:
        room.broken = True

    with pytest.raises(DocumentBroken):
        await room.apply_update(insertions, check_update(insertions), spent=break_room)
    assert len(stored.updates) == 1


def chain(clients: int) -> bytes:
    """One update holding ``clients`` clients' one-character insertions into a text, each after
    the previous client's: Yrs writes the clients in descending order of id, so each struct comes
    before the one it names."""
    doc: Doc[Any] = Doc(client_id=1)
    doc.get("text", type=Text).insert(0, "a")
    for client_id in range(2, clients + 1):
        following: Doc[Any] = Doc(client_id=client_id)
        following.apply_update(doc.get_update())
        text = following.get("text", type=Text)
        text.insert(len(text), "b")
        doc = following
    return doc.get_update()


def test_the_parts_come_after_what_they_name_so_that_none_waits_for_a_later_one() -> None:
    update = chain(200)
    parts = split_update(update, 1)
    assert len(parts) == 200
    doc: Doc[Any] = Doc()
    for count, part in enumerate(parts, start=1):
        doc.apply_update(part)
        # Each part's struct is in the document at once, not waiting for the parts after it.
        assert len(doc.get_state()) > 1 or count == 1
        assert len(text(doc)) == count
    whole: Doc[Any] = Doc()
    whole.apply_update(update)
    assert text(doc) == text(whole)


def test_what_an_update_needs_from_the_document_is_read_from_it() -> None:
    run, insertions = run_and_insertions(1_000, 3)
    # Three insertions into client 1's run (its clocks up to 999), by client 2 from clock 0.
    facts = check_update(insertions)
    assert facts.needs[1] <= 1_000 and facts.needs.get(2, 0) == 0
    assert facts.missing_dependency({1: 1_000}) is None
    assert facts.missing_dependency({1: 10}) == (1, facts.needs[1] - 1)
    # A delete set alone needs what it deletes; continuing a client's clock needs what it continues.
    deletion = b"\x00\x01\x01\x01\x05\x02"  # client 1: clocks 5 and 6
    assert check_update(deletion).needs == {1: 7}
    later: Doc[Any] = Doc(client_id=2)
    later.apply_update(run)
    later.apply_update(insertions)
    before = later.get_state()
    later.get("text", type=Text).insert(0, "z")
    assert check_update(later.get_update(before)).needs[2] == 3


def test_one_clients_structs_in_two_sections_are_refused() -> None:
    section = b"\x01\x03\x00" + b"\x04\x01\x01t\x01a"  # 1 struct, client 3, clock 0, "a" in root "t"
    two = b"\x02" + section + b"\x01\x03\x01" + b"\x84\x03\x00\x01b" + b"\x00"
    with pytest.raises(ProtocolError, match="two sections"):
        check_update(two)
    check_update(b"\x01" + section + b"\x00")


async def test_an_update_needing_what_the_document_lacks_is_refused_before_anything_is_applied() -> None:
    run, insertions = run_and_insertions(1_000, 3)
    stored = Stored()
    room = new_room(stored)
    with pytest.raises(ProtocolError, match=r"needs \(1, \d+\), which the document does not hold"):
        await room.apply_update(insertions, check_update(insertions))
    assert stored.updates == [] and text(room.doc) == ""
    await room.apply_update(run, check_update(run))
    await room.apply_update(insertions, check_update(insertions))
    assert text(room.doc).count("x") == 3


def garbage_collected(client: int, length: int) -> bytes:
    """One update: ``client``'s garbage-collected range of ``length`` clocks (Yjs v1 GC struct)."""
    return bytes([1, 1]) + write_var_uint(client) + bytes([0, 0]) + write_var_uint(length) + bytes([0])


async def test_a_long_garbage_collected_range_does_not_make_later_updates_weigh_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A range of 2**32 - 1 clocks in 8 bytes: weighed by clock units alone, every later update of
    # more than one struct would go a struct a turn, and one holding items of length 0 (which
    # applies only whole) would be refused.
    _, insertions, stored, room = one_part_a_turn(monkeypatch, 1_000, 3)
    gc = garbage_collected(99, 2**32 - 1)
    await room.apply_update(gc, check_update(gc))
    await room.apply_update(insertions, check_update(insertions))
    assert stored.updates == [gc, insertions]
    empty_items = empty_item_update()
    await room.apply_update(empty_items, check_update(empty_items))
    assert stored.updates[-1] == empty_items
    expected: Doc[Any] = Doc()
    expected.apply_update(empty_items)
    assert str(room.doc.get("emoji", type=Text)) == str(expected.get("emoji", type=Text))


def string_item(
    origin: tuple[int, int] | None, right_origin: tuple[int, int] | None, content: str, root: str = "t"
) -> bytes:
    """A Yjs v1 item holding ``content`` (a string); its parent, a root by name, is written only
    when it has neither origin."""
    info = 0x04 | (0x80 if origin else 0) | (0x40 if right_origin else 0)
    written = bytes([info])
    for named in (origin, right_origin):
        if named is not None:
            written += write_var_uint(named[0]) + write_var_uint(named[1])
    if origin is None and right_origin is None:
        written += b"\x01" + write_var_uint(len(root)) + root.encode()
    return written + write_var_uint(len(content.encode())) + content.encode()


def gc_range(length: int) -> bytes:
    return b"\x00" + write_var_uint(length)


def encode_update(sections: dict[int, list[bytes]]) -> bytes:
    """client -> its structs from clock 0, as a Yjs v1 update with an empty delete set."""
    written = write_var_uint(len(sections))
    for client, structs in sections.items():
        written += write_var_uint(len(structs)) + write_var_uint(client) + b"\x00" + b"".join(structs)
    return written + b"\x00"


def test_what_an_update_names_is_weighed_by_what_yjs_does_with_it() -> None:
    # Client 1's "abcdef" as one struct, and "g" going on after it; client 2's "x" after its "c",
    # cutting it; client 3's "y" after the "f" too: a sibling of "g", and Yjs places siblings by
    # walking each other.
    sections = {
        1: [string_item(None, None, "abcdef"), string_item((1, 5), None, "g")],
        2: [string_item((1, 2), None, "x")],
        3: [string_item((1, 5), None, "y")],
    }
    update = encode_update(sections)
    facts = check_update(update)
    assert (facts.walks, facts.splits) == (3, 1)  # "abcdef" (no origin), "g" and "y"; "x"
    # In parts, clients go highest first, as Yrs integrates them (so siblings pass none of each
    # other), each struct after what it names: "abcdef", then "y", "x", "g".
    parts = UpdateParts(update)
    first_clients = [parts.take(0, struct_costs(0))[2] for _ in range(parts.left)]
    assert first_clients == [1, 3, 2, 1]
    alone = check_update(encode_update({1: sections[1]}))
    assert (alone.walks, alone.splits) == (1, 0)


async def test_what_an_update_holds_below_the_documents_clocks_is_weighed_as_the_documents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The document holds client 1's run; the update holds it again (a garbage-collected range)
    # and client 99's insertions into it, which read alone name the update's own range.
    monkeypatch.setattr(room_module, "TURN_SECONDS", 0.0)  # one part to a turn: each part is logged
    writer: Doc[Any] = Doc(client_id=1)
    writer.get("text", type=Text).insert(0, "a" * 1_000)
    clocks = {1: 1_000}
    inserts = [string_item((1, 998 - 2 * i), None, "x") for i in range(20)]
    update = encode_update({1: [gc_range(1_000)], 99: inserts})
    alone = check_update(update)
    assert (alone.walks, alone.splits) == (0, 20)
    assert alone.overlaps(clocks) and not alone.overlaps({})
    known = check_update(update, clocks)
    assert (known.walks, known.splits) == (20, 0)
    # The room weighs it for its document: in parts.
    stored = Stored()
    room = loaded_room(writer.get_update(), stored)
    await room.apply_update(update, alone)
    assert len(stored.updates) > 1
    assert text(room.doc).count("x") == 20


async def test_a_deletion_too_costly_for_one_part_is_cut_into_parts_that_make_it_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(room_module, "TURN_SECONDS", 0.0)  # one part to a turn: each part is logged
    writer: Doc[Any] = Doc(client_id=5)
    typed = writer.get("text", type=Text)
    with writer.transaction():
        for _ in range(40_000):  # 40,000 items of one character (each typed at the start)
            typed.insert(0, "x")
    run = writer.get_update()
    # The delete set alone: client 5, two ranges of 20,000 units.
    deletions = b"\x00\x01" + write_var_uint(5) + b"\x02\x00" + write_var_uint(20_000) * 3
    stored = Stored()
    room = loaded_room(run, stored)
    await room.apply_update(deletions, check_update(deletions))
    # A part covers at most PART_SECONDS / 150 ns units: 13,333.
    assert len(stored.updates) == 4
    assert text(room.doc) == ""
    assert replayed(run, *stored.updates) == ""


async def test_updates_in_parts_take_turns_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each holds the loop for its turns: two at once would hold it twice as long a turn.
    monkeypatch.setattr(room_module, "TURN_SECONDS", 0.0)  # one part to a turn
    run, insertions = run_and_insertions(100_000, 10)
    logged: list[int] = []
    rooms = []
    for document_id in (1, 2):
        doc: Doc[Any] = Doc()
        doc.apply_update(run)
        rooms.append(
            Room(
                RoomKey("ws-parts", f"doc-{document_id}"),
                document_id,
                doc,
                on_update=lambda document, _update, relay: (logged.append(document), relay()),
                on_broken=lambda _room: None,
                loaded_bytes=len(run),
            )
        )
    await asyncio.gather(*(room.apply_update(insertions, check_update(insertions)) for room in rooms))
    assert len(logged) > 2
    assert logged == sorted(logged, key=logged.index)  # one document's parts, then the other's
    assert all(text(room.doc).count("x") == 10 for room in rooms)


async def test_a_skipped_range_at_the_end_of_a_clients_structs_does_not_move_its_clock() -> None:
    # Client 5's "a", then a skipped range of 1,000: Yrs holds (5, 0) only. Were its clock taken
    # to be 1,001, an item at (5, 500) would pass as continuing it, and wait in Yrs.
    update = encode_update({5: [string_item(None, None, "a"), b"\x0a" + write_var_uint(1_000)]})
    facts = check_update(update)
    assert facts.clocks == {5: 1}
    stored = Stored()
    room = new_room(stored)
    await room.apply_update(update, facts)
    later = b"\x01\x01\x05" + write_var_uint(500) + string_item((5, 499), None, "b") + b"\x00"
    with pytest.raises(ProtocolError, match=r"needs \(5, 499\)"):
        await room.apply_update(later, check_update(later))


async def test_the_state_vector_follows_the_parts_and_is_not_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, insertions, stored, room = one_part_a_turn(monkeypatch, 100_000, 10)
    await room.apply_update(insertions, check_update(insertions))
    assert len(stored.updates) > 1
    # Reading a document of many clients' state vector takes long: not after every update in parts.

    monkeypatch.setattr(room_module, "decode_state_vector", read_again)
    writer: Doc[Any] = Doc(client_id=3)
    writer.apply_update(room.doc.get_update())
    before = writer.get_state()
    writer.get("text", type=Text).insert(0, "y")
    await room.apply_update(writer.get_update(before), check_update(writer.get_update(before)))
    assert text(room.doc).startswith("y")


async def test_a_part_yrs_refuses_leaves_what_was_applied_before_it_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run, insertions = run_and_insertions(100_000, 10)
    stored = Stored()
    room = loaded_room(run, stored)
    applied = 0
    apply = room._apply

    def refuse_the_third(update: bytes) -> None:
        nonlocal applied
        applied += 1
        if applied == 3:
            raise ProtocolError("invalid Yjs update: cannot decode")
        apply(update)

    monkeypatch.setattr(room, "_apply", refuse_the_third)
    with pytest.raises(ProtocolError):
        await room.apply_update(insertions, check_update(insertions))
    assert len(stored.updates) == 1  # the two parts before it, as one update
    assert replayed(run, *stored.updates) == text(room.doc) and text(room.doc).count("x") == 2


async def test_the_state_vector_follows_another_instances_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = Stored()
    room = new_room(stored)
    local: Doc[Any] = Doc(client_id=1)
    local.get("text", type=Text).insert(0, "a")
    await room.apply_update(local.get_update(), check_update(local.get_update()))
    remote: Doc[Any] = Doc(client_id=2)
    remote.apply_update(local.get_update())
    before = remote.get_state()
    remote.get("text", type=Text).insert(1, "b")
    room.apply_remote(remote.get_update(before))

    monkeypatch.setattr(room_module, "decode_state_vector", read_again)
    before = local.get_state()
    local.apply_update(remote.get_update())
    local.get("text", type=Text).insert(2, "c")
    update = local.get_update(before)
    await room.apply_update(update, check_update(update))  # needs (2, 0): known from the remote update
    assert text(room.doc) == "abc"


async def test_each_turn_advances_the_state_vector_by_its_own_clients_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 3,000 clients of one garbage-collected struct each: a turn's work must not grow with the
    # clients of the turns before it (at a million clients, that was a minute of turns).
    monkeypatch.setattr(room_module, "TURN_SECONDS", 0.0)  # one part to a turn
    update = encode_update({client: [gc_range(1)] for client in range(1_000, 4_000)})
    stored = Stored()
    room = new_room(stored)
    advanced: list[int] = []
    advance = room._advance

    def counted(reached: dict[int, int], applied: int = 1) -> None:
        advanced.append(len(reached))
        advance(reached, applied)

    monkeypatch.setattr(room, "_advance", counted)
    await room.apply_update(update, check_update(update))
    assert len(advanced) == len(stored.updates) > 1
    assert sum(advanced) == 3_000
    assert room._state_vector()[1] == {client: 1 for client in range(1_000, 4_000)}
