"""WebSocket keepalive (RFC 6455 5.5.2-5.5.3): the server pings every ``HEARTBEAT_INTERVAL``
seconds; a peer that answers stays connected, one that does not is closed with 1011."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from server.config import Settings
from tests.protection.helpers import upgrade_request
from tests.support.server import run_server

PING, PONG, CLOSE = 0x9, 0xA, 0x8


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked frame from the server: its opcode and payload."""
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    return head[0] & 0x0F, await reader.readexactly(size)


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A final, masked frame (RFC 6455 5.3) with a payload under 126 bytes."""
    mask = os.urandom(4)
    return (
        bytes((0x80 | opcode, 0x80 | len(payload)))
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


async def connected(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(path))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def test_a_peer_that_answers_pings_stays_connected(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    async with run_server(make_settings(heartbeat_interval=0.2)) as server:
        reader, writer = await connected(server.port, f"/ws/workspaces/{workspace}")
        pings: list[bytes] = []
        try:
            async with asyncio.timeout(20):
                while len(pings) < 4:
                    opcode, payload = await read_frame(reader)
                    assert opcode != CLOSE, payload
                    if opcode == PING:
                        pings.append(payload)
                        writer.write(client_frame(PONG, payload))
            assert server.services.admission.open == 1
        finally:
            writer.close()
    assert len(set(pings)) == 4  # each ping carries its own payload


async def test_a_peer_that_does_not_answer_pings_is_closed_with_1011(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    async with run_server(make_settings(heartbeat_interval=0.2)) as server:
        reader, writer = await connected(server.port, f"/ws/workspaces/{workspace}")
        seen: list[int] = []
        try:
            async with asyncio.timeout(20):
                while True:
                    opcode, payload = await read_frame(reader)
                    seen.append(opcode)
                    if opcode == CLOSE:
                        break
        finally:
            writer.close()
    assert PING in seen[:-1]
    assert int.from_bytes(payload[:2], "big") == 1011
    assert b"keepalive ping timeout" in payload[2:]
