"""A raw y-websocket protocol client, for tests that need to see or send individual frames."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import websockets
from pycrdt import Decoder, Doc, Encoder, create_awareness_message, create_sync_message, create_update_message
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed


def awareness_update(client_id: int, clock: int, state: dict[str, Any] | None) -> bytes:
    encoder = Encoder()
    encoder.write_var_uint(1)
    encoder.write_var_uint(client_id)
    encoder.write_var_uint(clock)
    encoder.write_var_string(json.dumps(state))
    return create_awareness_message(encoder.to_bytes())


def parse_awareness(frame: bytes) -> dict[int, Any]:
    """Client id -> state (None when removed) of an awareness frame."""
    assert frame[0] == 1, frame[:4]
    decoder = Decoder(frame[1:])
    payload = Decoder(decoder.read_message() or b"")
    states = {}
    for _ in range(payload.read_var_uint()):
        client_id = payload.read_var_uint()
        payload.read_var_uint()
        states[client_id] = json.loads(payload.read_var_string())
    return states


class RawClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()

    async def send(self, frame: bytes | str) -> None:
        await self.ws.send(frame)

    async def next_frame(self, *, kind: int | None = None, timeout: float = 5) -> bytes:
        """The next frame received (of message type ``kind`` if given)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.ws.recv()
                assert isinstance(frame, bytes)
                if kind is None or frame[0] == kind:
                    return frame

    async def wait_closed(self, timeout: float = 5) -> tuple[int | None, str]:
        """Read until the server closes; return the close code and reason."""
        async with asyncio.timeout(timeout):
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await self.ws.recv()
        rcvd = self.ws.protocol.close_rcvd
        return (rcvd.code, rcvd.reason) if rcvd else (None, "")


@contextlib.asynccontextmanager
async def raw_client(url: str, **kwargs: Any) -> AsyncIterator[RawClient]:
    async with websockets.connect(url, max_size=None, open_timeout=10, **kwargs) as ws:
        yield RawClient(ws)


def update_frame(doc: Doc) -> bytes:
    return create_update_message(doc.get_update())


def step1_frame(doc: Doc) -> bytes:
    return create_sync_message(doc)
