"""``server.websocket.binary_frame``: the frames the server writes directly are the ones ``websockets``
itself would write (unmasked, final, binary), at every length encoding."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from server.websocket import binary_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_a_binary_frame_is_what_websockets_serialises(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = Frame(Opcode.BINARY, payload).serialize(mask=False, extensions=[])
    assert binary_frame(payload) == expected
