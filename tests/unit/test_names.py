"""Ids, workspace ids and room names: one rule each, checked on the whole text."""

from __future__ import annotations

import pytest

from server.endpoints.sync import room_key
from server.room import RoomKey
from server.vocabulary import is_id, is_workspace_id


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("alice", True),
        ("user@example.com", True),
        ("a b", True),
        ("x" * 255, True),
        ("", False),
        ("x" * 256, False),
        ("abc\n", False),  # a regex `$` would let a trailing newline through
        ("a\x00b", False),
        ("a\x7f", False),
    ],
)
def test_ids(value: str, valid: bool) -> None:
    assert is_id(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("ws-789", True),
        ("W.1_a~b-c", True),
        ("9" + "x" * 254, True),
        ("x" * 256, False),
        ("", False),
        ("-ws", False),
        ("ws 1", False),
        ("ws/1", False),
        ("ws%2F1", False),
        ("ws\n", False),
        ("wé", False),
    ],
)
def test_workspace_ids(value: str, valid: bool) -> None:
    assert is_workspace_id(value) is valid


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ws-1", ("ws-1", "")),
        ("ws-1/", ("ws-1", "")),
        ("ws-1/notes/a.md", ("ws-1", "notes/a.md")),
        ("ws-1//notes/", ("ws-1", "notes")),
        ("ws-1/a\n", None),
        ("ws 1/a", None),
        ("ws-1/" + "é" * 513, None),  # 1,026 bytes of UTF-8
    ],
)
def test_room_names(name: str, expected: tuple[str, str] | None) -> None:
    key = RoomKey.parse(name)
    assert (None if key is None else (key.workspace_id, key.path)) == expected


@pytest.mark.parametrize(
    ("raw_path", "expected"),
    [
        (b"/ws/workspaces/ws-1/notes/a.md", ("ws-1", "notes/a.md")),
        (b"/ws/workspaces/ws-1/caf%C3%A9%20menu.md?token=x", ("ws-1", "café menu.md")),
        (b"/ws/workspaces/ws-1/a%2Fb", ("ws-1", "a/b")),  # an encoded slash inside the path
        (b"/ws/workspaces/bad%2Fws", None),  # ... never splits the workspace id
        (b"/ws/workspaces/ws-1/%FF", None),  # not UTF-8
    ],
)
def test_room_key_splits_before_decoding(raw_path: bytes, expected: tuple[str, str] | None) -> None:
    scope = {"type": "websocket", "path": "/ignored", "raw_path": raw_path}
    key = room_key(scope)
    assert (None if key is None else (key.workspace_id, key.path)) == expected
