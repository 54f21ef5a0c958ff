"""Yjs's v2 update encoding is refused with a clear error (the y-websocket protocol carries v1),
never acknowledged and dropped; the same document in v1 is applied."""

from __future__ import annotations

import asyncio
import json

import httpx
from pycrdt import Doc, Text, create_update_message

from server.close_codes import CLOSE_4400_BAD_MESSAGE
from tests.interop.node import JS_DIR, node_binary
from tests.support.rawclient import raw_client
from tests.support.server import RunningServer
from tests.support.yclient import yclient

OCTET = {"Content-Type": "application/octet-stream"}


async def encodings(text: str) -> tuple[bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        node_binary(), str(JS_DIR / "encodings.mjs"), text, cwd=JS_DIR, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    both = json.loads(stdout)
    return bytes.fromhex(both["v1"]), bytes.fromhex(both["v2"])


async def test_a_v2_update_is_refused_over_rest_and_on_the_socket(
    server: RunningServer, workspace: str
) -> None:
    v1, v2 = await encodings("hello 👋")
    url = f"/workspaces/{workspace}/documents/n.md/update"
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        refused = await http.post(url, content=v2, headers=OCTET)
        assert refused.status_code == 400
        assert "not a Yjs v1 update" in refused.json()["error"]["message"]
        assert (
            await http.get(f"/workspaces/{workspace}/documents/n.md")
        ).status_code == 404  # nothing stored
        async with raw_client(server.doc_url(workspace, "n.md")) as client:
            await client.send(create_update_message(v2))
            code, reason = await client.wait_closed()
        assert code == CLOSE_4400_BAD_MESSAGE.code and "not a Yjs v1 update" in reason
        applied = await http.post(url, content=v1, headers=OCTET)
        assert applied.status_code == 200 and applied.json()["applied_bytes"] == len(v1)
        assert (await http.get(f"/workspaces/{workspace}/documents/n.md")).json()["content"] == {
            "text": "hello 👋"
        }
    async with yclient(server.doc_url(workspace, "n.md")) as reader:
        assert str(reader.text()) == "hello 👋"


async def test_an_update_with_a_non_bmp_character_reads_back_as_json(
    server: RunningServer, workspace: str
) -> None:
    doc = Doc()
    doc.get("text", type=Text).insert(0, "😀")
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
        posted = await http.post(
            f"/workspaces/{workspace}/documents/n.md/update", content=doc.get_update(), headers=OCTET
        )
        assert posted.status_code == 200
        response = await http.get(f"/workspaces/{workspace}/documents/n.md")
        assert response.status_code == 200
        assert response.json()["content"] == {"text": "😀"}
        assert (await http.get("/health")).status_code == 200


async def test_lying_counts_are_refused_over_rest(server: RunningServer, workspace: str) -> None:
    base = f"/workspaces/{workspace}/document"
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        update = await http.post(f"{base}/update", content=bytes.fromhex("ffffff7f00"), headers=OCTET)
        assert update.status_code == 400
        assert update.json()["error"]["message"] == (
            "not a valid Yjs update: client count 268435455 exceeds the 1 bytes left"
        )
        await http.post(f"{base}/update", content=b"\x00\x00", headers=OCTET)  # the empty update
        vector = await http.get(f"{base}/update", params={"state_vector": "____fw"})  # ff ff ff 7f
        assert vector.status_code == 400
        assert "state vector entry count 268435455 exceeds" in vector.json()["error"]["message"]
