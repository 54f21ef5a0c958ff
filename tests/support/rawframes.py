"""Raw WebSocket frames over a plain TCP connection, for tests of what the server does with
frames a client library would never send (RFC 6455 section 5)."""

from __future__ import annotations

import asyncio
import os

from server.ws_frames import apply_mask
from tests.protection.helpers import upgrade_request

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


def client_frame(opcode: int, payload: bytes, *, head1: int | None = None, masked: bool = True) -> bytes:
    """A frame as a client writes it: final, masked (RFC 6455 5.3), its length in the shortest
    form; ``head1`` replaces the first byte (FIN, RSV, opcode), ``masked=False`` drops the mask."""
    size = len(payload)
    first = bytes((0x80 | opcode if head1 is None else head1,))
    bit = 0x80 if masked else 0
    if size < 126:
        length = bytes((bit | size,))
    elif size < 65536:
        length = bytes((bit | 126,)) + size.to_bytes(2, "big")
    else:
        length = bytes((bit | 127,)) + size.to_bytes(8, "big")
    if not masked:
        return first + length + payload
    mask = os.urandom(4)
    return first + length + mask + apply_mask(payload, mask)


async def connected(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to ``path`` on 127.0.0.1:``port`` whose WebSocket upgrade was answered 101."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(path))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer
