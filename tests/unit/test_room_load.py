"""``server.room.load_updates``: a room's stored updates (snapshot, then the log) give the same
document as applying them one by one, whatever their order, sizes and how they fall into
``APPLY_BATCH``-update transactions; a large update among them is applied in parts."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from crdt_store.yjs_state import APPLY_BATCH
from server import room as room_module
from server.room import LOAD_PARTS_BYTES, load_updates


def edit_log(count: int, seed: int) -> list[bytes]:
    """``count`` updates from three clients editing one text and one map, each edit its own update,
    the clients syncing now and then (so their items interleave and deletions cross clients)."""
    rng = random.Random(seed)
    peers = [Doc(client_id=client_id) for client_id in (11, 22, 33)]
    log: list[bytes] = []
    for peer in peers:
        peer.observe(lambda event: log.append(event.update))
    while len(log) < count:
        peer = rng.choice(peers)
        text = peer.get("text", type=Text)
        if len(text) > 10 and rng.random() < 0.2:
            start = rng.randrange(len(text) - 3)
            del text[start : start + 3]
        elif rng.random() < 0.3:
            peer.get("map", type=Map)[f"k{rng.randrange(20)}"] = len(log)
        else:
            text.insert(rng.randint(0, len(text)), f"<{len(log)}>")
        if rng.random() < 0.1:
            for other in peers:
                if other is not peer:
                    other.apply_update(peer.get_update(other.get_state()))
    # The observers also saw the syncs: keep the edits, each once.
    return list(dict.fromkeys(log))[:count]


def content(doc: Doc[Any]) -> tuple[str, dict[str, Any]]:
    return str(doc.get("text", type=Text)), doc.get("map", type=Map).to_py() or {}


def one_by_one(updates: list[bytes]) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    for update in updates:
        doc.apply_update(update)
    return doc


async def test_a_log_of_several_batches_loads_to_the_document_applied_one_by_one() -> None:
    log = edit_log(APPLY_BATCH * 3 + 17, seed=1)
    snapshot = one_by_one(log[:40]).get_update()
    stored = [snapshot, *log[40:]]

    loaded: Doc[Any] = Doc()
    await load_updates(loaded, stored)

    reference = one_by_one(log)
    assert loaded.get_state() == reference.get_state()
    assert content(loaded) == content(reference)


@pytest.mark.parametrize("seed", range(4))
async def test_rows_stored_out_of_order_load_as_they_do_one_by_one(seed: int) -> None:
    """Instances store what their own clients sent, so a row can come before a row it depends
    on; Yrs keeps it pending until the other arrives, in a later transaction too. Each row is
    moved by up to one and a half batches."""
    log = edit_log(APPLY_BATCH * 4, seed=seed)
    rng = random.Random(seed)
    order = sorted(range(len(log)), key=lambda i: i + rng.uniform(0, APPLY_BATCH * 1.5))
    stored = [log[i] for i in order]
    assert stored != log

    loaded: Doc[Any] = Doc()
    await load_updates(loaded, stored)

    reference = one_by_one(stored)
    assert loaded.get_state() == reference.get_state()
    assert content(loaded) == content(reference)


async def test_a_large_update_among_small_ones_is_applied_in_parts_in_its_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    author = Doc(client_id=7)
    text = author.get("text", type=Text)
    log: list[bytes] = []
    author.observe(lambda event: log.append(event.update))
    for i in range(APPLY_BATCH + 5):
        text += f"[{i}]"
    entries = author.get("map", type=Map)
    with author.transaction():  # one update of many structs, larger than LOAD_PARTS_BYTES
        for i in range(25_000):
            entries[f"key {i:06d}"] = f"value {i:06d}"
    for i in range(APPLY_BATCH + 5):
        text += f"({i})"
    large = max(log, key=len)
    assert len(large) > LOAD_PARTS_BYTES

    applied_in_parts: list[bytes] = []
    real = room_module.apply_in_parts

    async def recording(update: bytes, apply: Any) -> None:
        applied_in_parts.append(update)
        await real(update, apply)

    monkeypatch.setattr(room_module, "apply_in_parts", recording)
    loaded: Doc[Any] = Doc()
    await load_updates(loaded, log)

    assert applied_in_parts == [large]
    assert str(loaded.get("text", type=Text)) == str(text)
    assert loaded.get("map", type=Map).to_py() == entries.to_py()


async def test_a_stored_row_that_is_not_an_update_fails_the_load() -> None:
    log = edit_log(10, seed=3)
    with pytest.raises(ValueError, match="Cannot decode update"):
        await load_updates(Doc(), [*log[:5], b"\x01\x02 not an update", *log[5:]])


async def test_a_long_load_lets_the_loop_serve_others_between_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(room_module, "LOAD_TURN_SECONDS", 0.0)  # every batch is past its turn
    log = edit_log(APPLY_BATCH * 5, seed=4)
    loading = asyncio.create_task(load_updates(Doc(), log))
    others_turns = 0
    while not loading.done():
        others_turns += 1
        await asyncio.sleep(0)
    await loading
    assert others_turns >= 4
