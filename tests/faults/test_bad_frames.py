"""Malformed input closes only the offending connection, with a named code; nothing is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from pycrdt import Doc, Text, create_update_message, write_var_uint

from server.close_codes import (
    CLOSE_1003_UNSUPPORTED_DATA,
    CLOSE_1009_MESSAGE_TOO_BIG,
    CLOSE_4400_BAD_MESSAGE,
)
from server.config import Settings
from tests.support.rawclient import raw_client
from tests.support.rawframes import CLOSE, PING, PONG, client_frame, connected, read_frame
from tests.support.server import RunningServer, run_server
from tests.support.wait import wait_until
from tests.support.yclient import yclient

MiB = 1024 * 1024

BAD_FRAMES = {
    "text frame": ("hello", CLOSE_1003_UNSUPPORTED_DATA.code),
    "empty binary frame": (b"", CLOSE_4400_BAD_MESSAGE.code),
    "garbage": (b"\xff\xfe\xfd\xfc garbage", CLOSE_4400_BAD_MESSAGE.code),
    "unknown message type": (b"\x07\x00", CLOSE_4400_BAD_MESSAGE.code),
    "unknown sync type": (b"\x00\x09\x00", CLOSE_4400_BAD_MESSAGE.code),
    "truncated length": (b"\x00\x02" + write_var_uint(1000) + b"short", CLOSE_4400_BAD_MESSAGE.code),
    "trailing bytes": (b"\x00\x02\x02\x00\x00extra", CLOSE_4400_BAD_MESSAGE.code),
    "invalid yjs update": (create_update_message(b"\x01\x05\xff\xff\xff\xff"), CLOSE_4400_BAD_MESSAGE.code),
    "invalid state vector": (b"\x00\x00\x03\x05\x01\x01", CLOSE_4400_BAD_MESSAGE.code),
    "awareness not json": (b"\x01\x06\x01\x07\x01\x02{x", CLOSE_4400_BAD_MESSAGE.code),
    "endless varint": (b"\x00\x02" + b"\xff" * 12, CLOSE_4400_BAD_MESSAGE.code),
    # Counts that promise more than the bytes hold: refused before pycrdt allocates for them.
    "update declaring 268 million clients": (bytes.fromhex("000205ffffff7f00"), CLOSE_4400_BAD_MESSAGE.code),
    "state vector declaring 268 million entries": (
        bytes.fromhex("000004ffffff7f"),
        CLOSE_4400_BAD_MESSAGE.code,
    ),
    "bytes after the update (a v2 update)": (
        create_update_message(b"\x00\x00\x00\x01\x00"),
        CLOSE_4400_BAD_MESSAGE.code,
    ),
    "values nested 100,000 deep": (
        create_update_message(b"\x01\x01\x01\x00\x08\x01\x01a\x01" + b"\x75\x01" * 100_000 + b"\x7e\x00"),
        CLOSE_4400_BAD_MESSAGE.code,
    ),
}


async def test_the_eight_byte_frame_is_refused_at_once_with_its_reason(
    server: RunningServer, workspace: str
) -> None:
    async with raw_client(server.doc_url(workspace)) as bad:
        await bad.send(bytes.fromhex("000205ffffff7f00"))
        code, reason = await bad.wait_closed()
    assert (code, reason) == (
        CLOSE_4400_BAD_MESSAGE.code,
        "malformed message: client count 268435455 exceeds the 1 bytes left",
    )


@pytest.mark.parametrize("name", list(BAD_FRAMES))
async def test_bad_frame_closes_only_that_connection(
    server: RunningServer, workspace: str, name: str
) -> None:
    frame, expected_code = BAD_FRAMES[name]
    url = server.doc_url(workspace)
    async with yclient(url) as good:
        good.text().insert(0, "kept")
        await wait_until(lambda: server.services.writer.pending == 0)
        async with raw_client(url) as bad:
            await bad.send(frame)
            code, reason = await bad.wait_closed()
        assert code == expected_code
        assert reason  # every close says why
        # The good client is still connected and still syncing.
        async with yclient(url) as later:
            good.text().insert(len(good.text()), " and more")
            await wait_until(lambda: str(later.text()) == "kept and more")


# Frames no client library sends (RFC 6455 section 5): each fails the connection (7.1.7) with a
# close frame naming the fault.
PROTOCOL_FAULTS = {
    "unmasked frame": (client_frame(0x2, b"\x00\x00\x01\x00", masked=False), 1002, "incorrect masking"),
    "reserved bit set": (client_frame(0x2, b"x", head1=0x80 | 0x40 | 0x2), 1002, "reserved bits must be 0"),
    "unknown opcode": (client_frame(0x3, b"x"), 1002, "invalid opcode"),
    "fragmented ping": (client_frame(0x9, b"x", head1=0x09), 1002, "fragmented control frame"),
    "ping of 126 bytes": (client_frame(0x9, bytes(126)), 1002, "control frame too long"),
    "continuation of nothing": (client_frame(0x0, b"x"), 1002, "unexpected continuation frame"),
    "text frame inside a fragmented one": (
        client_frame(0x2, b"a", head1=0x02) + client_frame(0x1, b"b"),
        1002,
        "expected a continuation frame",
    ),
    "close code 999": (client_frame(0x8, (999).to_bytes(2, "big")), 1002, "invalid status code"),
    "close of one byte": (client_frame(0x8, b"\x03"), 1002, "close frame too short"),
    "text frame not UTF-8": (client_frame(0x1, b"ok \xff"), 1007, ""),
    "text frame not UTF-8, then a close, in one read": (
        client_frame(0x1, b"\xff") + client_frame(0x8, (1000).to_bytes(2, "big")),
        1000,  # the client's close, echoed; the connection then ends
        "",
    ),
    "close reason not UTF-8": (
        client_frame(0x8, (1000).to_bytes(2, "big") + b"\xff"),
        1007,
        "invalid start byte at position 0",
    ),
}


@pytest.mark.parametrize("name", list(PROTOCOL_FAULTS))
async def test_a_frame_breaking_the_protocol_fails_only_that_connection_with_its_reason(
    server: RunningServer, workspace: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    frames, code, reason = PROTOCOL_FAULTS[name]
    url = server.doc_url(workspace)
    async with yclient(url) as good:
        good.text().insert(0, "kept")
        reader, writer = await connected(server.port, f"/ws/workspaces/{workspace}")
        try:
            writer.write(frames)
            async with asyncio.timeout(10):
                opcode, payload = await read_frame(reader)
                while opcode != CLOSE:  # the room's first messages come before the fault is read
                    opcode, payload = await read_frame(reader)
                assert await reader.read() == b""  # then the server closes the connection
        finally:
            writer.close()
        assert (int.from_bytes(payload[:2], "big"), payload[2:].decode()) == (code, reason)
        assert not [record for record in caplog.records if record.exc_info]  # no traceback logged
        async with yclient(url) as later:
            good.text().insert(len(good.text()), " and more")
            await wait_until(lambda: str(later.text()) == "kept and more")


async def test_a_large_frame_arriving_in_small_reads_does_not_hold_up_other_connections(
    server: RunningServer, workspace: str
) -> None:
    """A frame of 32 MiB (the default limit) trickling in over thousands of reads is collected
    as it comes, not copied whole at every read: meanwhile another connection's pings are
    answered at once (a copy at every read held the event loop for tens of seconds)."""
    path = f"/ws/workspaces/{workspace}"
    big_reader, big_writer = await connected(server.port, path)
    reader, writer = await connected(server.port, path)
    frame = client_frame(0x2, b"\x00\x02" + bytes(32 * 1024 * 1024 - 1024))
    try:

        async def trickle() -> None:
            for start in range(0, len(frame), 64 * 1024):
                big_writer.write(frame[start : start + 64 * 1024])
                await big_writer.drain()

        sending = asyncio.create_task(trickle())
        answered = 0
        while not sending.done():
            writer.write(client_frame(PING, b"%d" % answered))
            async with asyncio.timeout(5):  # a stalled loop took 41 s
                opcode, payload = await read_frame(reader)
                while opcode != PONG:
                    opcode, payload = await read_frame(reader)
            assert payload == b"%d" % answered
            answered += 1
        await sending
        async with asyncio.timeout(30):  # and the large frame itself is read: it is no valid update
            opcode, payload = await read_frame(big_reader)
            while opcode != CLOSE:
                opcode, payload = await read_frame(big_reader)
    finally:
        big_writer.close()
        writer.close()
    assert answered > 1
    assert int.from_bytes(payload[:2], "big") == CLOSE_4400_BAD_MESSAGE.code


async def test_oversize_frame_is_refused_with_1009(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    async with run_server(make_settings(max_message_size=64 * 1024)) as server:
        url = server.doc_url(workspace)
        async with yclient(url) as good:
            good.text().insert(0, "safe")
            big = Doc()
            big.get("text", type=Text).insert(0, "x" * (128 * 1024))
            async with raw_client(url) as bad:
                await bad.send(create_update_message(big.get_update()))
                code, _ = await bad.wait_closed()
            assert code == CLOSE_1009_MESSAGE_TOO_BIG.code
            async with yclient(url) as reader:
                assert str(reader.text()) == "safe"


async def test_default_limit_admits_a_16_mib_update(server: RunningServer, workspace: str) -> None:
    url = server.doc_url(workspace)
    payload = "y" * (16 * MiB)
    async with yclient(url) as writer, yclient(url) as reader:
        writer.text().insert(0, payload)
        await wait_until(lambda: len(reader.text()) == len(payload), timeout=30)
    await wait_until(lambda: server.services.writer.pending == 0, timeout=30)
    async with yclient(url, sync_timeout=30) as fresh:
        assert len(fresh.text()) == len(payload)
