"""The REST JSON view of a document gives, for every root, what the JS client's own ``toJSON()``
gives: text with non-BMP characters and combining marks, formatting and embeds, arrays of every
value kind, nested shared types, maps, XML with attributes and formatting, and emptied roots."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx

from tests.interop.node import JS_DIR, node_binary
from tests.support.server import RunningServer
from tests.support.wait import wait_until
from tests.support.yclient import yclient


async def test_json_view_matches_yjs_to_json(server: RunningServer, workspace: str) -> None:
    process = await asyncio.create_subprocess_exec(
        node_binary(),
        str(JS_DIR / "tojson.mjs"),
        f"{server.ws_url}/ws/workspaces",
        workspace,
        cwd=JS_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        expected: dict[str, Any] = json.loads(line)
        view: dict[str, Any] = {}
        async with httpx.AsyncClient(base_url=server.http_url) as http:

            async def same() -> bool:
                response = await http.get(f"/workspaces/{workspace}/document")
                assert response.status_code == 200, response.text
                view.update(response.json()["content"])
                return view == expected

            with contextlib.suppress(TimeoutError):
                await wait_until(same, timeout=15)
        assert view == expected
    finally:
        process.stdin.close()
        await asyncio.wait_for(process.wait(), 10)
    # The document stays intact for Yjs clients.
    async with yclient(server.doc_url(workspace)) as reader:
        assert str(reader.text("emoji")) == expected["emoji"]
