"""``server.websocket.binary_frame`` and ``text_frame``: the frames the server writes directly are the ones
``websockets`` itself would write (unmasked, final, binary or text), at every length encoding."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from server.websocket import binary_frame, text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_a_binary_frame_is_what_websockets_serialises(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = Frame(Opcode.BINARY, payload).serialize(mask=False, extensions=[])
    assert binary_frame(payload) == expected


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
def test_a_text_frame_is_what_websockets_serialises(size: int) -> None:
    text = ("é☃😀" * (size // 3 + 1))[:size]  # characters of 2, 3 and 4 bytes in UTF-8
    expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    assert text_frame(text) == expected
