"""Updates and awareness that are well-formed bytes but that pycrdt cannot take: refused at the
door, or, when pycrdt fails part-way, the document is reloaded from storage; in every case the
document stays readable, honest edits are kept, and nobody else is harmed."""

from __future__ import annotations

import httpx
from pycrdt import Doc, Text

from server.close_codes import CLOSE_1011_RELOADED, CLOSE_4400_BAD_MESSAGE
from server.protocol import write_var_uint
from tests.support.rawclient import awareness_update, raw_client
from tests.support.server import RunningServer
from tests.support.wait import wait_until
from tests.support.yclient import yclient

OCTET = {"Content-Type": "application/octet-stream"}


async def post(server: RunningServer, workspace: str, update: bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        return await http.post(f"/workspaces/{workspace}/documents/d/update", content=update, headers=OCTET)


async def text_of(server: RunningServer, workspace: str) -> str:
    async with yclient(server.doc_url(workspace, "d")) as reader:
        return str(reader.text("t"))


def typed(client_id: int, text: str, doc: Doc | None = None) -> tuple[Doc, bytes]:
    doc = doc or Doc(client_id=client_id)
    before = doc.get_state()
    root = doc.get("t", type=Text)
    root.insert(len(root), text)
    return doc, doc.get_update(before)


async def test_an_empty_garbage_collected_range_is_refused(server: RunningServer, workspace: str) -> None:
    # Seven bytes that Yrs accepts and then cannot encode: every later reader would fail.
    refused = await post(server, workspace, bytes.fromhex("01010101000000"))
    assert refused.status_code == 400
    assert "empty garbage-collected" in refused.json()["error"]["message"]
    assert (await post(server, workspace, typed(1, "still fine")[1])).status_code == 200
    assert await text_of(server, workspace) == "still fine"


def gc_then_text(client: int, gc_length: int, text: str) -> bytes:
    """One update: ``client``'s garbage-collected range of ``gc_length`` clocks from 0, then
    ``text`` in root "t" (Yjs v1: a GC struct, then a string item without origins)."""
    content = bytes([0x04, 1, 1]) + b"t" + write_var_uint(len(text)) + text.encode()
    structs = bytes([0]) + write_var_uint(gc_length) + content
    return bytes([1, 2]) + write_var_uint(client) + bytes([0]) + structs + bytes([0])


async def test_a_clock_past_32_bits_is_refused_and_the_highest_one_is_kept(
    server: RunningServer, workspace: str
) -> None:
    # Yrs keeps a client's next clock in 32 bits: structs ending at 2**32 would wrap it to 0, and
    # the client's next update would be stored beside them in a document that no longer encodes
    # what it holds.
    refused = await post(server, workspace, gc_then_text(99, 2**32 - 2, "ab"))
    assert refused.status_code == 400
    assert "clocks of client 99 pass 32 bits" in refused.json()["error"]["message"]
    deletion = bytes([0, 1]) + write_var_uint(99) + bytes([1, 2]) + write_var_uint(2**32 - 2)
    refused = await post(server, workspace, deletion)
    assert refused.status_code == 400
    assert "a deletion passes 32-bit clocks" in refused.json()["error"]["message"]
    # Ending at 2**32 - 1 fits: kept, and what a new reader is sent holds it.
    assert (await post(server, workspace, gc_then_text(99, 2**32 - 3, "ab"))).status_code == 200
    assert (await post(server, workspace, typed(5, "cd")[1])).status_code == 200
    assert sorted(await text_of(server, workspace)) == sorted("abcd")


async def test_content_yrs_would_read_otherwise_than_it_was_checked_is_refused(
    server: RunningServer, workspace: str
) -> None:
    # ContentJSON (Yrs reads one string more than its count: the bytes after it would be read as
    # structs nobody checked), and a string that is not UTF-8 (Yrs fails on it part-way).
    root = bytes([1, 1]) + b"t"  # no origins: the parent, a root by name
    cases = {
        bytes([1, 1, 7, 0, 0x02]) + root + bytes([1, 1]) + b"1" + bytes([0]): "ContentJSON",
        bytes([1, 1, 7, 0, 0x04]) + root + bytes([2, 0xFF, 0xFE, 0]): "not valid UTF-8",
    }
    for update, reason in cases.items():
        refused = await post(server, workspace, update)
        assert refused.status_code == 400
        assert reason in refused.json()["error"]["message"]
    assert (await post(server, workspace, typed(7, "fine")[1])).status_code == 200
    assert await text_of(server, workspace) == "fine"


async def test_a_parent_the_document_lacks_is_refused(server: RunningServer, workspace: str) -> None:
    honest, hello = typed(555, "hello")
    assert (await post(server, workspace, hello)).status_code == 200
    # Another client's item whose parent is (555, 5), which does not exist yet: Yrs would keep it
    # waiting and fail the honest client's next edit, the one that creates (555, 5).
    trap = await post(server, workspace, bytes.fromhex("01019a050004 00ab0405 017800".replace(" ", "")))
    assert trap.status_code == 400
    assert "(555, 5) as a parent type" in trap.json()["error"]["message"]
    _, world = typed(555, " world", honest)
    assert (await post(server, workspace, world)).status_code == 200
    assert await text_of(server, workspace) == "hello world"


async def test_a_parent_that_is_not_a_type_is_refused_before_pycrdt_sees_it(
    server: RunningServer, workspace: str
) -> None:
    # "ab" in root t, then an item whose parent is "ab" itself, in one update; and an item that
    # is its own parent.
    for update in ("0102d2090004010174026162 0400d20900017800", "0101030308000303017e 00"):
        refused = await post(server, workspace, bytes.fromhex(update.replace(" ", "")))
        assert refused.status_code == 400
        assert "not a shared type" in refused.json()["error"]["message"]
    assert (await post(server, workspace, typed(3, "intact")[1])).status_code == 200
    assert await text_of(server, workspace) == "intact"


async def test_an_update_pycrdt_fails_part_way_reloads_the_document(
    server: RunningServer, workspace: str
) -> None:
    writer, ab = typed(1234, "ab")
    url = server.doc_url(workspace, "d")
    async with yclient(url) as reader:
        assert (await post(server, workspace, ab)).status_code == 200
        await wait_until(lambda: str(reader.text("t")) == "ab")
        # "xy" by another client, then an item whose parent is (1234, 0), the existing "ab":
        # the document holds it, so only Yrs can tell it is not a type, part-way through.
        refused = await post(
            server, workspace, bytes.fromhex("0102e2090004010174027879 0400d20900017800".replace(" ", ""))
        )
        assert refused.status_code == 400
        await reader.ws.wait_closed()
        assert (reader.ws.close_code, reader.ws.close_reason) == (
            CLOSE_1011_RELOADED.code,
            CLOSE_1011_RELOADED.reason,
        )
    # Nothing of the refused update remains; what was accepted before, and after, is all there.
    assert await text_of(server, workspace) == "ab"
    assert (await post(server, workspace, typed(1234, "cd", writer)[1])).status_code == 200
    assert await text_of(server, workspace) == "abcd"


async def test_awareness_that_json_or_yjs_cannot_carry_is_refused(
    server: RunningServer, workspace: str
) -> None:
    url = server.doc_url(workspace)
    async with yclient(url) as honest:
        honest.provider  # noqa: B018 - connected and synced
        cases = [
            b"\x01" + bytes.fromhex("0105010e") + b'{"n":NaN}',
            awareness_update(2**56 - 1, 1, {"user": {"name": "too big"}}),
            b"\x01" + bytes.fromhex("01050107") + b"\xef\xbb\xbf{}".ljust(7, b" "),
        ]
        for frame in cases:
            async with raw_client(url) as bad:
                await bad.send(frame)
                code, reason = await bad.wait_closed()
            assert code == CLOSE_4400_BAD_MESSAGE.code, reason
        # The honest client is still served.
        async with yclient(url) as later:
            honest.text().insert(0, "still here")
            await wait_until(lambda: str(later.text()) == "still here")


async def test_a_nested_type_holding_content_its_type_cannot_is_unreadable_at_once(
    server: RunningServer, workspace: str
) -> None:
    # Map "m" holds at "k" a Y.Array whose item is the text "Hi 👋": Yjs never writes that, and
    # pycrdt's array reader loops on it. The view is refused from the structure alone.
    nested = bytes.fromhex("0102d20900270101 6d016b00 0400d2090007486920f09f918b00".replace(" ", ""))
    assert (await post(server, workspace, nested)).status_code == 200
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        view = await http.get(f"/workspaces/{workspace}/documents/d")
        assert view.status_code == 422
        assert view.json()["error"]["code"] == "document_unreadable"
        assert "holds content its type cannot hold" in view.json()["error"]["message"]
        assert (await http.get(f"/workspaces/{workspace}/documents/d/update")).status_code == 200
