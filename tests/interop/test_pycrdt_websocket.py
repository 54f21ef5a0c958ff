"""pycrdt-websocket as a client of the server: sync, awareness, reconnect, and the Python example.

pycrdt-websocket 0.16 has no ``WebsocketProvider`` any more: its client side is pycrdt's
``Provider``, over ``pycrdt.websocket.websocket.HttpxWebsocket``, the ``Channel`` it ships for an
httpx-ws connection (pycrdt-websocket's own tests connect the same way; its published client page
still shows the removed ``WebsocketProvider``). These tests drive exactly that pair against a real
server, next to the suite's own pycrdt client (``yclient``) and raw protocol clients.

What the provider does not do, and the tests pin down: it neither sends nor applies awareness
(presence) messages, it ignores the y-protocols auth message a viewer gets, and it does not
reconnect nor say that the server closed the connection (``HttpxWebsocket`` turns the close into
the end of its iteration). ``TapChannel`` below adds only observation (close frame, message types
received) and, when given a ``pycrdt.Awareness``, the awareness side that the provider lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import pytest
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws
from pycrdt import (
    Array,
    Awareness,
    Doc,
    Map,
    Provider,
    Text,
    YMessageType,
    create_awareness_message,
    read_message,
)
from pycrdt.websocket.websocket import HttpxWebsocket
from wsproto.utilities import LocalProtocolError

from server.config import Settings
from tests.support.auth import SECRET, client, token
from tests.support.rawclient import awareness_update, parse_awareness, raw_client
from tests.support.server import ROOT, RunningServer, run_server
from tests.support.wait import wait_until
from tests.support.yclient import text_of, yclient

SYNC, AWARENESS, AUTH = YMessageType.SYNC, YMessageType.AWARENESS, 2
EXAMPLE = ROOT / "examples" / "python_client.py"


class TapChannel(HttpxWebsocket):
    """pycrdt-websocket's ``HttpxWebsocket``, unchanged on the wire, that also records the server's
    close frame and the type of every message received; with an ``Awareness``, it applies the
    awareness messages to it (instead of passing them to the provider, which drops them) and can
    announce the local state."""

    def __init__(self, websocket: AsyncWebSocketSession, path: str, awareness: Awareness | None = None):
        super().__init__(websocket, path)
        self.awareness = awareness
        self.closed: WebSocketDisconnect | None = None
        self.kinds: list[int] = []
        self.auth_messages: list[bytes] = []

    async def recv(self) -> bytes:
        while True:
            try:
                message = await super().recv()
            except WebSocketDisconnect as exc:
                self.closed = exc
                raise
            self.kinds.append(message[0])
            if message[0] == AUTH:
                self.auth_messages.append(message)
            if self.awareness is not None and message[0] == AWARENESS:
                self.awareness.apply_awareness_update(read_message(message[1:]), "remote")
                continue
            return message

    async def announce(self) -> None:
        """Send the local awareness state (y-protocols awareness message)."""
        assert self.awareness is not None
        update = self.awareness.encode_awareness_update([self.awareness.client_id])
        await self.send(create_awareness_message(update))


@dataclass
class Connected:
    doc: Doc
    provider: Provider
    channel: TapChannel
    websocket: AsyncWebSocketSession

    def text(self, name: str = "text") -> Text:
        return self.doc.get(name, type=Text)


@contextlib.asynccontextmanager
async def provider(
    url: str, doc: Doc | None = None, *, awareness: Awareness | None = None, sync_timeout: float = 10
) -> AsyncIterator[Connected]:
    """A ``Provider`` on ``doc`` over httpx-ws, as pycrdt-websocket documents it; yields once the
    first sync completed."""
    doc = doc if doc is not None else Doc()
    async with aconnect_ws(url) as websocket:
        channel = TapChannel(websocket, url, awareness)
        async with Provider(doc, channel) as running:
            with anyio.fail_after(sync_timeout):
                await running.synced.wait()
            yield Connected(doc, running, channel, websocket)


def server_has(url: str, expected: str) -> Callable[[], Any]:
    """A ``wait_until`` predicate: a client opening ``url`` now gets ``expected`` as its text."""

    async def predicate() -> bool:
        return await text_of(url) == expected

    return predicate


def the_room(server: RunningServer) -> Any:
    """The one room loaded on ``server``."""
    rooms = list(server.services.rooms.rooms.values())
    assert len(rooms) == 1
    return rooms[0]


def presence_on_server(server: RunningServer, client_id: int) -> bool:
    rooms = list(server.services.rooms.rooms.values())
    return any(client_id in room.awareness.states for room in rooms)


def merged_text(*docs: Doc, name: str = "text") -> str:
    """What Yjs itself makes of these documents' edits: the reference for convergence."""
    reference: Doc = Doc()
    for doc in docs:
        reference.apply_update(doc.get_update())
    return str(reference.get(name, type=Text))


# -- sync -------------------------------------------------------------------------------------------


async def test_provider_syncs_both_ways_with_a_pycrdt_client(server: RunningServer, workspace: str) -> None:
    url = server.doc_url(workspace)
    async with yclient(url) as other:
        other.text().insert(0, "Hello")
        await wait_until(server_has(url, "Hello"))
        async with provider(url) as py:
            # The server's sync step 2 carried the whole document before `synced` was set.
            assert str(py.text()) == "Hello"
            py.text().insert(5, " from pycrdt-websocket")
            await wait_until(lambda: str(other.text()) == "Hello from pycrdt-websocket")
            other.text().insert(0, "[other] ")
            other.doc.get("meta", type=Map)["title"] = "greeting"
            await wait_until(lambda: str(py.text()) == "[other] Hello from pycrdt-websocket")
            await wait_until(lambda: py.doc.get("meta", type=Map).to_py() == {"title": "greeting"})
    # Both clients gone: the server kept the result.
    assert await text_of(url) == "[other] Hello from pycrdt-websocket"


async def test_two_providers_converge_on_concurrent_edits(server: RunningServer, workspace: str) -> None:
    url = server.doc_url(workspace)
    async with provider(url) as a, provider(url) as b:
        # Both edit before either hears of the other: the same position, then more of each.
        a.text().insert(0, "[a]")
        b.text().insert(0, "[b]")
        a.doc.get("list", type=Array).append("from a")
        b.doc.get("list", type=Array).append("from b")
        expected = merged_text(a.doc, b.doc)
        assert sorted(expected.replace("][", "]|[").split("|")) == ["[a]", "[b]"]
        await wait_until(lambda: str(a.text()) == expected and str(b.text()) == expected)
        await wait_until(
            lambda: a.doc.get("list", type=Array).to_py() == b.doc.get("list", type=Array).to_py()
        )
        assert sorted(a.doc.get("list", type=Array).to_py()) == ["from a", "from b"]
    assert await text_of(url) == expected


# -- awareness --------------------------------------------------------------------------------------


async def test_provider_alone_neither_sends_nor_applies_awareness(
    server: RunningServer, workspace: str
) -> None:
    url = server.doc_url(workspace)
    async with raw_client(url) as watcher:
        await watcher.send(awareness_update(4242, 1, {"user": {"name": "Watcher"}}))
        await wait_until(lambda: presence_on_server(server, 4242))
        async with provider(url) as py:
            # The server sent the watcher's presence right after its sync step 1: the provider got
            # it, dropped it, and still synced.
            assert AWARENESS in py.channel.kinds
            py.text().insert(0, "typed")
            seen: dict[int, Any] = {}
            while True:  # until the edit arrives: an awareness frame sent before it comes first
                frame = await watcher.next_frame()
                if frame[0] == AWARENESS:
                    seen.update(parse_awareness(frame))
                elif frame[0] == SYNC and b"typed" in frame:
                    break
            assert py.doc.client_id not in seen
            assert the_room(server).awareness.states == {4242: {"user": {"name": "Watcher"}}}


async def test_awareness_through_the_provider_channel_both_ways(
    server: RunningServer, workspace: str
) -> None:
    url = server.doc_url(workspace)
    watcher_state = {"user": {"name": "Watcher"}}
    async with raw_client(url) as stay, raw_client(url) as watcher:
        await watcher.send(awareness_update(4242, 1, watcher_state))
        assert parse_awareness(await stay.next_frame(kind=AWARENESS)) == {4242: watcher_state}
        doc: Doc = Doc()
        awareness = Awareness(doc)
        async with provider(url, doc, awareness=awareness) as alice:
            # The presence the server sends a joiner is in pycrdt's Awareness once synced.
            assert awareness.states == {doc.client_id: {}, 4242: watcher_state}

            # Alice's presence reaches the others, exactly.
            alice_state = {"user": {"name": "Alice", "color": "#f783ac"}, "cursor": 3}
            awareness.set_local_state(alice_state)
            await alice.channel.announce()
            states: dict[int, Any] = {}
            while doc.client_id not in states:
                states.update(parse_awareness(await stay.next_frame(kind=AWARENESS)))
            assert states[doc.client_id] == alice_state

            # A remote change, and a remote departure, reach Alice's Awareness.
            await watcher.send(awareness_update(4242, 2, {**watcher_state, "cursor": 9}))
            await wait_until(lambda: awareness.states.get(4242, {}).get("cursor") == 9)
            await watcher.ws.close()
            await wait_until(lambda: 4242 not in awareness.states)
            assert awareness.states == {doc.client_id: alice_state}

        # Alice's connection closed: the server withdraws her presence for those who stay.
        while True:
            update = parse_awareness(await stay.next_frame(kind=AWARENESS))
            if doc.client_id in update:
                break
        assert update[doc.client_id] is None


# -- reconnect --------------------------------------------------------------------------------------


async def test_new_provider_on_the_same_doc_resyncs_after_a_server_restart(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    settings = make_settings()
    doc: Doc = Doc()  # the client's document outlives its connections
    text = doc.get("text", type=Text)
    async with run_server(settings) as first:
        url = first.doc_url(workspace)
        async with yclient(url) as other, provider(url, doc) as py:
            text += "before;"
            await wait_until(lambda: str(other.text()) == "before;")
            first.server.should_exit = True  # shutdown closes every connection, then the app stops
            await wait_until(lambda: py.channel.closed is not None, timeout=10)
            assert py.channel.closed is not None
            # 1012, service restart (sent by uvicorn's shutdown, without a reason). The provider itself
            # neither stopped nor said anything: it merely receives no more.
            assert py.channel.closed.code == 1012
        # Edited while no server runs: kept in the document only.
        text.insert(0, "offline;")

    async with run_server(settings) as second:
        url = second.doc_url(workspace)
        async with yclient(url) as other:
            assert str(other.text()) == "before;"  # stored by the first server on its way out
            other.text().insert(len(other.text()), "remote;")
            async with provider(url, doc) as py:
                # Sync step 2 both ways: the offline edit goes up, the missed one comes down.
                await wait_until(lambda: str(py.text()) == "offline;before;remote;")
                await wait_until(lambda: str(other.text()) == "offline;before;remote;")
                # And the provider is live again.
                text += "live;"
                await wait_until(lambda: str(other.text()) == "offline;before;remote;live;")
        assert await text_of(url) == "offline;before;remote;live;"


async def test_an_edit_after_the_server_closed_fails_the_provider_and_arrives_on_reconnect(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    async with run_server(make_settings(jwt_secret=SECRET)) as server:
        async with client(server.http_url, "alice") as alice:
            created = await alice.post(
                "/workspaces", json={"id": workspace, "name": "r", "visibility": "open"}
            )
            assert created.status_code == 201
        url = server.doc_url(workspace)
        doc: Doc = Doc()
        text = doc.get("text", type=Text)

        async def edit_once_closed(other: Any) -> None:
            # A token about to expire: the server closes the connection at its `exp`, and stays up.
            async with provider(f"{url}?token={token('alice', ttl=3)}", doc) as py:
                text.insert(0, "live;")
                await wait_until(lambda: str(other.text()) == "live;")
                await wait_until(lambda: py.channel.closed is not None, timeout=10)
                assert py.channel.closed is not None
                assert (py.channel.closed.code, py.channel.closed.reason) == (4401, "token expired")
                # Edited while disconnected, with the provider still running: its send fails
                # (wsproto refuses to send on a closed connection) and that fails the provider.
                text.insert(0, "offline;")
                with anyio.fail_after(10):
                    await anyio.sleep_forever()

        async with yclient(f"{url}?token={token('bob')}") as other:
            with pytest.raises(BaseExceptionGroup) as failed:
                await edit_once_closed(other)
            assert failed.group_contains(LocalProtocolError, depth=None)
            assert str(text) == "offline;live;"  # the edit is in the document all the same

            other.text().insert(len(other.text()), "remote;")
            async with provider(f"{url}?token={token('alice')}", doc) as py:
                await wait_until(lambda: str(py.text()) == "offline;live;remote;")
                await wait_until(lambda: str(other.text()) == "offline;live;remote;")


async def test_viewer_provider_ignores_the_permission_denied_message(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    async with run_server(make_settings(jwt_secret=SECRET)) as server:
        async with client(server.http_url, "alice") as alice:
            await alice.post("/workspaces", json={"id": workspace, "name": "v", "visibility": "private"})
            assert (
                await alice.put(f"/workspaces/{workspace}/members/vic", json={"role": "viewer"})
            ).status_code == 200
        url = server.doc_url(workspace)
        async with yclient(f"{url}?token={token('alice')}") as editor:
            editor.text().insert(0, "[editor]")
            await wait_until(server_has(f"{url}?token={token('alice')}", "[editor]"))
            async with provider(f"{url}?token={token('vic')}") as viewer:
                assert str(viewer.text()) == "[editor]"
                viewer.text().insert(0, "[viewer]")
                await wait_until(lambda: bool(viewer.channel.auth_messages))
                assert b"read-only" in viewer.channel.auth_messages[0]
                # The provider keeps going: it still receives, and its document now differs.
                editor.text().insert(len(editor.text()), "[more]")
                await wait_until(lambda: str(viewer.text()) == "[viewer][editor][more]")
                assert str(editor.text()) == "[editor][more]"
        assert await text_of(f"{url}?token={token('alice')}") == "[editor][more]"


# -- the example and the README ---------------------------------------------------------------------


async def run_python(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """Run a Python program of this repository as its user would; exit status, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_example_script_syncs_appends_and_prints(server: RunningServer, workspace: str) -> None:
    url = server.doc_url(workspace)
    async with yclient(url) as other:
        other.text().insert(0, "Hi. ")
        await wait_until(server_has(url, "Hi. "))
        status, out, err = await run_python(str(EXAMPLE), server.ws_url, workspace, "Hello from Python")
        assert (status, out, err) == (0, "Hi. Hello from Python\n", "")
        await wait_until(lambda: str(other.text()) == "Hi. Hello from Python")
        # Without text it only prints the document.
        status, out, _ = await run_python(str(EXAMPLE), server.ws_url, workspace)
        assert (status, out) == (0, "Hi. Hello from Python\n")


async def test_example_script_with_token_and_document_path(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    path = "notes/ünï code #1.md"
    async with run_server(make_settings(jwt_secret=SECRET)) as server:
        async with client(server.http_url, "alice") as alice:
            await alice.post("/workspaces", json={"id": workspace, "name": "e", "visibility": "private"})
            args = [str(EXAMPLE), server.ws_url, workspace, "Grüße ✓", "--path", path]

            status, out, err = await run_python(*args, "--token", token("alice"))
            assert (status, out, err) == (0, "Grüße ✓\n", "")
            document = await alice.get(f"/workspaces/{workspace}/documents/{quote(path)}")
            assert document.json()["content"] == {"text": "Grüße ✓"}
            # The token may come from the environment instead; without text, it only prints.
            reader = [str(EXAMPLE), server.ws_url, workspace, "--path", path]
            status, out, err = await run_python(*reader, env={"COLLAB_TOKEN": token("alice")})
            assert (status, out, err) == (0, "Grüße ✓\n", "")

            # Refusals before the upgrade: the status and the server's JSON error, exit status 1.
            status, out, err = await run_python(*args)
            assert (status, out) == (1, "")
            assert err.startswith("refused: HTTP 401 ")
            assert json.loads(err[len("refused: HTTP 401 ") :])["error"]["code"]
            status, out, err = await run_python(*args, "--token", token("mallory"))
            assert (status, out) == (1, "") and err.startswith("refused: HTTP 403 ")
            assert json.loads(err[len("refused: HTTP 403 ") :])["error"]["code"] == "forbidden"
            # Nothing of the refused runs was written.
            document = await alice.get(f"/workspaces/{workspace}/documents/{quote(path)}")
            assert document.json()["content"] == {"text": "Grüße ✓"}


def readme_python_snippet() -> str:
    """The code block of the README's "From Python" paragraph."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("From Python")
    match = re.compile(r"```python\n(.*?)```", re.S).search(readme, start)
    assert match is not None
    return match.group(1)


async def test_readme_python_snippet_runs_as_written(
    server: RunningServer, workspace: str, tmp_path: Path
) -> None:
    snippet = readme_python_snippet()
    assert "ws://localhost:3006/ws/workspaces/ws-789" in snippet
    program = tmp_path / "snippet.py"
    program.write_text(snippet.replace("ws://localhost:3006", server.ws_url).replace("ws-789", workspace))
    status, _, err = await run_python(str(program))
    assert status == 0, err
    assert await text_of(server.doc_url(workspace)) == "Hello from Python"
