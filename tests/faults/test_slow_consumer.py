"""A client that stops reading is cut off with 1013 once its queue is full; others are unaffected."""

from __future__ import annotations

from collections.abc import Callable

from server.close_codes import CLOSE_1013_SEND_QUEUE_FULL
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
            for i in range(400):
                writer.text().insert(len(writer.text()), chunk)

                def cut_off() -> bool:
                    room = next(iter(server.services.rooms.rooms.values()))
                    return any(c.close_code is CLOSE_1013_SEND_QUEUE_FULL for c in room.connections)

                if i % 20 == 0 and cut_off():
                    break
            await wait_until(cut_off, timeout=20)
            expected = len(writer.text())
            await wait_until(lambda: len(reader.text()) == expected, timeout=30)
            # Once it reads again, the stalled client drains what was in flight and gets the close.
            code, reason = await stalled.wait_closed(timeout=30)
    assert code == CLOSE_1013_SEND_QUEUE_FULL.code
    assert "reconnect" in reason
