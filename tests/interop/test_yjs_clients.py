"""The real JavaScript Yjs client (yjs + y-websocket) against the server, next to pycrdt clients."""

from __future__ import annotations

from collections.abc import Callable

from server.config import Settings
from tests.interop.node import start_node_client
from tests.support.rawclient import awareness_update, parse_awareness, raw_client
from tests.support.server import RunningServer, run_server
from tests.support.wait import wait_until
from tests.support.yclient import yclient

AWARENESS = 1


async def test_js_and_python_clients_converge(server: RunningServer, workspace: str) -> None:
    base = f"{server.ws_url}/ws/workspaces"
    async with yclient(server.doc_url(workspace)) as py:
        py.text().insert(0, "[python]")
        js_a = await start_node_client(
            url=base, room=workspace, insert="[js-a]", expect=["[python]", "[js-b]"]
        )
        js_b = await start_node_client(
            url=base, room=workspace, insert="[js-b]", expect=["[python]", "[js-a]"]
        )
        a, b = await js_a.result(), await js_b.result()
        await wait_until(lambda: "[js-a]" in str(py.text()) and "[js-b]" in str(py.text()), timeout=10)
        assert a["synced"] and b["synced"]
        # Each JS client reported a text holding all three writes; the Python document agrees.
        for report in (a, b):
            assert sorted(report["text"].replace("][", "]|[").split("|")) == ["[js-a]", "[js-b]", "[python]"]
        assert len(str(py.text())) == len("[python][js-a][js-b]")
    async with yclient(server.doc_url(workspace)) as fresh:
        assert sorted(str(fresh.text()).replace("][", "]|[").split("|")) == ["[js-a]", "[js-b]", "[python]"]


async def test_js_client_sees_python_presence_and_its_own_is_relayed(
    server: RunningServer, workspace: str
) -> None:
    base = f"{server.ws_url}/ws/workspaces"
    async with raw_client(server.doc_url(workspace)) as watcher:
        await watcher.send(awareness_update(4242, 1, {"user": {"name": "py-watcher"}}))
        js = await start_node_client(
            url=base, room=workspace, awareness={"user": {"name": "js-user"}}, idleMs=300
        )
        states = {}
        while not any(s and s.get("user", {}).get("name") == "js-user" for s in states.values()):
            states.update(parse_awareness(await watcher.next_frame(kind=AWARENESS, timeout=10)))
        report = await js.result()
        assert {"user": {"name": "py-watcher"}} in report["peers"]
        # The JS client closed: its presence is withdrawn for the Python watcher.
        js_ids = [cid for cid, s in states.items() if s and s.get("user", {}).get("name") == "js-user"]
        while True:
            update = parse_awareness(await watcher.next_frame(kind=AWARENESS, timeout=10))
            if any(cid in update and update[cid] is None for cid in js_ids):
                break


async def test_idle_js_client_stays_connected(make_settings: Callable[..., Settings], workspace: str) -> None:
    # y-websocket reconnects after 30 s without a message; the keep-alive must come well before.
    # With a 1 s heartbeat, 4 s of idling must bring keep-alives and no disconnect.
    async with run_server(make_settings(heartbeat_interval=1.0)) as server:
        js = await start_node_client(url=f"{server.ws_url}/ws/workspaces", room=workspace, idleMs=4000)
        report = await js.result()
    assert report["disconnects"] == 0
    assert report["messages"] >= 4  # sync step 1 + step 2 + keep-alives while idle
