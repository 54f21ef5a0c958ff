"""A client that stops reading is cut off with 1013 once its queue is full; others are unaffected;
one that never reads again is let go after the keepalive timeout."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Callable

from pycrdt import Map

from server.close_codes import CLOSE_1013_SEND_QUEUE_FULL, CLOSE_4403_ACCESS_REVOKED
from server.config import Settings
from tests.support.rawclient import raw_client
from tests.support.server import run_server
from tests.support.wait import wait_until
from tests.support.yclient import yclient


async def test_stalled_reader_is_cut_off_and_others_keep_receiving(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    async with run_server(make_settings(message_queue_size=20)) as server:
        url = server.doc_url(workspace)
        # max_queue=1: the client library stops reading the socket after one unread frame, so the
        # kernel buffers fill and the server's queue for this connection grows.
        async with raw_client(url, max_queue=1) as stalled, yclient(url) as writer, yclient(url) as reader:
            chunk = "z" * 32 * 1024
            entries = writer.doc.get("entries", type=Map)  # side by side: no text growing to 13 MB
            for i in range(400):
                entries[f"e{i}"] = chunk

                def cut_off() -> bool:
                    room = next(iter(server.services.rooms.rooms.values()))
                    return any(c.close_code is CLOSE_1013_SEND_QUEUE_FULL for c in room.connections)

                if i % 20 == 0 and cut_off():
                    break
            await wait_until(cut_off, timeout=20)
            expected = dict(entries)
            await wait_until(lambda: dict(reader.doc.get("entries", type=Map)) == expected, timeout=30)
            # Once it reads again, the stalled client drains what was in flight and gets the close.
            code, reason = await stalled.wait_closed(timeout=30)
    assert code == CLOSE_1013_SEND_QUEUE_FULL.code
    assert "reconnect" in reason


async def test_a_peer_that_never_reads_again_is_let_go_after_the_keepalive_timeout(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    """A peer that keeps its TCP connection open but stops reading, with the server's send buffer
    full: closing it (here: its access is revoked) cannot send the close frame, and uvicorn's own
    close would wait for the buffer for ever. After the keepalive timeout the transport is
    aborted, and the connection's place is given back."""
    async with run_server(make_settings(message_queue_size=100_000, heartbeat_interval=1.0)) as server:
        url = server.doc_url(workspace)
        async with yclient(url) as writer:
            # A small receive buffer from the start (set before connecting, so the window it
            # advertises stays small): the server's send buffer fills after a few updates.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
            reader, stream = await asyncio.open_connection(sock=sock, limit=2**16)
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                f"GET /ws/workspaces/{workspace} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            stream.write(request.encode())
            try:
                await reader.readuntil(b"\r\n\r\n")
                room_of = server.services.rooms.rooms
                await wait_until(lambda: sum(len(r.connections) for r in room_of.values()) == 2, timeout=10)
                room = next(iter(room_of.values()))
                silent = max(room.connections, key=lambda c: c.id)
                stream.transport.pause_reading()  # from here on it reads nothing
                entries = writer.doc.get("entries", type=Map)  # values side by side, no growing text
                for i in range(3000):
                    entries[f"e{i}"] = "q" * 32 * 1024
                    await asyncio.sleep(0)
                    if i > 20 and silent._writing:  # its writer waits for the transport
                        break
                assert silent._writing
                room.eject(silent, CLOSE_4403_ACCESS_REVOKED)
                await wait_until(lambda: server.services.admission.open == 1, timeout=10)
                assert silent not in room.connections
            finally:
                stream.transport.abort()
