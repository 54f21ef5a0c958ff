"""WebSocket keepalive (RFC 6455 5.5.2-5.5.3): the server pings every ``HEARTBEAT_INTERVAL``
seconds; a peer that answers stays connected, one that does not is closed with 1011."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from server.config import Settings
from tests.support.rawframes import CLOSE, PING, PONG, client_frame, connected, read_frame
from tests.support.server import run_server


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
