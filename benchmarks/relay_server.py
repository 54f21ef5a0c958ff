"""The ceiling for any Python server: a bare WebSocket relay, in memory, without Yjs.

    python -m benchmarks.relay_server PORT

Each request path is a room. A sync step 1 is answered with an empty sync step 2; every update and
awareness frame is sent on, as received, to the room's other connections (``websockets``'
``broadcast``: one frame built per connection, no queue, no check, nothing applied or stored), on
uvloop. Any server that applies, checks and stores updates does more per frame than this.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

EMPTY_STEP2 = bytes((0, 1, 2, 0, 0))
rooms: dict[str, set[ServerConnection]] = {}


async def handler(ws: ServerConnection) -> None:
    assert ws.request is not None
    room = rooms.setdefault(ws.request.path, set())
    room.add(ws)
    try:
        async for frame in ws:
            if not isinstance(frame, bytes) or len(frame) < 2:
                continue
            if frame[0] == 0 and frame[1] == 0:
                await ws.send(EMPTY_STEP2)
            elif frame[0] == 1 or (frame[0] == 0 and frame[1] == 2):
                broadcast([other for other in room if other is not ws], frame)
    finally:
        room.discard(ws)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=None, ping_interval=None):
        await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
