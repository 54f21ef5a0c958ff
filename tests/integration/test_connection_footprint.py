"""What a WebSocket leaves behind on the server. The HTTP protocol that parsed its upgrade request
is freed as soon as the WebSocket protocol takes over, and the WebSocket protocol as soon as the
connection is over, closed cleanly or dropped: by reference counting alone. A reference cycle
would keep them (parser, request, buffers, queues) until the garbage collector runs, and make
every collection longer while thousands of clients connect or reconnect."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from server.config import Settings
from server.serving import GuardedHttpProtocol
from server.websocket import CollabWebSocketProtocol
from tests.support.rawframes import CLOSE, client_frame, connected, read_frame
from tests.support.server import run_server
from tests.support.wait import wait_until


def recorded(monkeypatch: pytest.MonkeyPatch, cls: type, method: str) -> list[weakref.ref[Any]]:
    """Weak references to every instance of ``cls`` whose ``method`` is called from now on."""
    made: list[weakref.ref[Any]] = []
    original = getattr(cls, method)

    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(weakref.ref(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, recording)
    return made


@contextmanager
def without_the_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def served(port: int, workspace: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await connected(port, f"/ws/workspaces/{workspace}")
    opcode, payload = await read_frame(reader)  # the room's sync step 1: the connection is served
    assert payload[:2] == b"\x00\x00", (opcode, payload)
    return reader, writer


async def test_the_http_protocol_of_an_upgraded_connection_is_freed_at_once(
    make_settings: Callable[..., Settings], workspace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    http = recorded(monkeypatch, GuardedHttpProtocol, "connection_made")
    async with run_server(make_settings()) as server:
        with without_the_collector():
            _, writer = await served(server.port, workspace)
            try:
                assert len(http) == 1
                assert http[0]() is None, gc.get_referrers(http[0]())
            finally:
                writer.close()


@pytest.mark.parametrize("ending", ["close handshake", "dropped"])
async def test_a_websocket_is_freed_once_its_connection_is_over(
    make_settings: Callable[..., Settings], workspace: str, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    websockets = recorded(monkeypatch, CollabWebSocketProtocol, "adopt")
    async with run_server(make_settings(room_unload_grace=60.0)) as server:
        _, keeper = await served(server.port, workspace)  # keeps the room loaded
        try:
            with without_the_collector():
                reader, writer = await served(server.port, workspace)
                assert len(websockets) == 2 and websockets[1]() is not None
                if ending == "close handshake":
                    writer.write(client_frame(CLOSE, (1000).to_bytes(2, "big")))
                    assert (await read_frame(reader))[0] == CLOSE
                writer.close()
                await wait_until(lambda: server.services.connections == 1)
                await wait_until(lambda: websockets[1]() is None)
                assert websockets[0]() is not None
        finally:
            keeper.close()
