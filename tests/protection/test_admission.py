"""Admission: the connection limits hold under a storm of parallel upgrades, per user and per
address; a connection has bounded time and bytes to say what it wants; send queues are bounded
in bytes. Each limit is exceeded by a real client, beside a real client it must not harm."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets
from pycrdt import Text
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode

from server.config import Settings
from tests.protection.helpers import (
    close_of,
    parse_response,
    raw_request,
    refusal_of,
    small_updates,
    upgrade_request,
)
from tests.support.auth import SECRET, token
from tests.support.rawclient import raw_client
from tests.support.server import run_server
from tests.support.wait import wait_until
from tests.support.yclient import text_of, yclient

SettingsFactory = Callable[..., Settings]


async def test_a_storm_of_parallel_upgrades_never_passes_max_connections(
    make_settings: SettingsFactory, workspace: str
) -> None:
    async with run_server(make_settings(max_connections=50)) as server:
        async with (
            yclient(server.doc_url(workspace)) as bystander,
            yclient(server.doc_url(workspace)) as peer,
        ):
            outcomes: list[Any] = []
            opened: list[Any] = []

            async def one(i: int) -> None:
                try:
                    ws = await websockets.connect(server.doc_url(workspace, f"doc-{i}"), open_timeout=20)
                except InvalidStatus as exc:
                    outcomes.append(exc.response.status_code)
                else:
                    opened.append(ws)
                    outcomes.append(101)

            await asyncio.gather(*(one(i) for i in range(120)))
            try:
                assert outcomes.count(101) == 48, outcomes  # the two already open count too
                assert set(outcomes) == {101, 503}
                assert server.services.connections == 50
                # The clients already connected are not harmed.
                bystander.text().insert(len(bystander.text()), "still here")
                await wait_until(lambda: str(peer.text()) == "still here")
            finally:
                await asyncio.gather(*(ws.close() for ws in opened))
        await wait_until(lambda: server.services.connections == 0)
        async with yclient(server.doc_url(workspace)):  # room again once they are gone
            pass


async def test_connections_per_user_are_bounded_and_other_users_are_not(
    make_settings: SettingsFactory, workspace: str
) -> None:
    settings = make_settings(jwt_secret=SECRET, auto_create_workspaces=True, max_connections_per_user=3)
    async with run_server(settings) as server:
        url = server.doc_url(workspace)
        alice = f"{url}?token={token('alice')}"
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(yclient(alice))
            for _ in range(2):
                await stack.enter_async_context(yclient(alice))
            status, body, headers = await refusal_of(alice)
            assert status == 429
            assert body["error"]["code"] == "too_many_connections"
            assert int(headers["retry-after"]) >= 1
            # Another user is admitted, and alice's open connections still work.
            async with yclient(f"{url}?token={token('bob')}") as bob:
                first.text().insert(len(first.text()), "from alice")
                await wait_until(lambda: str(bob.text()) == "from alice")
            # The event channel counts against the same share.
            status, body, _ = await refusal_of(f"{server.ws_url}/ws?token={token('alice')}")
            assert (status, body["error"]["code"]) == (429, "too_many_connections")
        # Once closed, the places are free again.
        await wait_until(lambda: server.services.connections == 0)
        async with yclient(alice):
            pass


async def test_connections_per_address_are_bounded_and_other_addresses_are_not(
    make_settings: SettingsFactory, workspace: str
) -> None:
    async with run_server(make_settings(max_connections_per_ip=3)) as server:
        url = server.doc_url(workspace)
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(yclient(url))
            for _ in range(2):
                await stack.enter_async_context(raw_client(url))
            status, body, _ = await refusal_of(url)
            assert (status, body["error"]["code"]) == (429, "too_many_connections")
            # Another address (127.0.0.2 is loopback too) is admitted beside them.
            async with websockets.connect(url, local_addr=("127.0.0.2", 0), max_size=None) as other:
                first.text().insert(len(first.text()), "x")
                frame = await asyncio.wait_for(other.recv(), 5)
                assert isinstance(frame, bytes)


async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_clients(
    make_settings: SettingsFactory, workspace: str
) -> None:
    """The proxy (127.0.0.1, trusted by default: ``FORWARDED_ALLOW_IPS``) forwards two clients:
    each has its own share of connections; a client the proxy forwards twice has not."""
    async with run_server(make_settings(max_connections_per_ip=1)) as server:
        url = server.doc_url(workspace)
        alice = {"additional_headers": {"X-Forwarded-For": "203.0.113.7"}}
        bob = {"additional_headers": {"X-Forwarded-For": "198.51.100.2"}}
        async with raw_client(url, **alice), raw_client(url, **bob):
            status, body, _ = await refusal_of(url, **alice)
            assert (status, body["error"]["code"]) == (429, "too_many_connections")


async def test_connection_attempts_per_address_are_rate_limited(
    make_settings: SettingsFactory, workspace: str
) -> None:
    async with run_server(make_settings(rate_limit_connect_ip="5/minute")) as server:
        url = server.doc_url(workspace)
        async with yclient(url) as steady:  # attempt 1, stays open through the burst
            for _ in range(4):  # attempts 2 to 5
                async with raw_client(url):
                    pass
            status, body, headers = await refusal_of(url)
            assert (status, body["error"]["code"]) == (429, "rate_limited")
            assert 1 <= int(headers["retry-after"]) <= 60
            # The event channel shares the budget of the address.
            status, _, _ = await refusal_of(f"{server.ws_url}/ws")
            assert status == 429
            # Another address is admitted; the open connection keeps working.
            async with websockets.connect(url, local_addr=("127.0.0.2", 0), max_size=None) as other:
                steady.text().insert(len(steady.text()), "y")
                assert isinstance(await asyncio.wait_for(other.recv(), 5), bytes)


async def test_a_connection_that_sends_nothing_or_dribbles_is_cut_off(make_settings: SettingsFactory) -> None:
    async with run_server(make_settings(handshake_timeout=1.0)) as server:
        # Sends nothing at all: closed without an answer.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        assert 0.8 <= time.monotonic() - started < 3
        writer.close()

        # Dribbles a request, one byte at a time: 408 and closed, while others are served.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        started = time.monotonic()

        async def dribble() -> None:
            with contextlib.suppress(OSError):
                for byte in request:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.05)

        dribbling = asyncio.create_task(dribble())
        async with httpx.AsyncClient(base_url=server.http_url) as client:
            assert (await client.get("/health")).status_code == 200
        async with asyncio.timeout(5):
            answer = await reader.read()
        dribbling.cancel()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert b'"request_timeout"' in answer
        assert 0.8 <= time.monotonic() - started < 3
        writer.close()

        # A keep-alive connection's later request has the same bound, and a normal one is served.
        async with httpx.AsyncClient(base_url=server.http_url) as client:
            for _ in range(3):
                assert (await client.get("/health")).status_code == 200


async def test_oversize_request_heads_are_answered_414_or_431_and_closed(
    make_settings: SettingsFactory, workspace: str
) -> None:
    async with run_server(make_settings()) as server:
        long_path = f"/ws/workspaces/{workspace}?token=" + "a" * 9000
        cases = [
            (upgrade_request(long_path), 414, "uri_too_long"),
            (
                upgrade_request(f"/ws/workspaces/{workspace}", extra_headers=f"Cookie: {'c' * 9000}\r\n"),
                431,
                None,
            ),
            (
                upgrade_request(
                    f"/ws/workspaces/{workspace}",
                    extra_headers="".join(f"Cookie: k{i}={'v' * 150}\r\n" for i in range(120)),
                ),
                431,
                "request_header_fields_too_large",
            ),
            (
                upgrade_request(
                    f"/ws/workspaces/{workspace}", extra_headers="".join(f"X-{i}: v\r\n" for i in range(150))
                ),
                431,
                "request_header_fields_too_large",
            ),
            (b"GET /health?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
            (b"GET /health HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 20000 + b"\r\n\r\n", 431, None),
        ]
        async with (
            yclient(server.doc_url(workspace)) as bystander,
            yclient(server.doc_url(workspace)) as peer,
        ):
            for request, status, code in cases:
                response = await raw_request(server.port, request, timeout=5)
                assert response.status == status, (request[:60], response.head)
                assert response.closed
                if code is not None:
                    assert response.json()["error"]["code"] == code
            bystander.text().insert(len(bystander.text()), "unharmed")
            await wait_until(lambda: str(peer.text()) == "unharmed")
        # Within the bounds, a long query and big cookies are fine.
        cookie = "; ".join(f"k{i}={'v' * 100}" for i in range(60))  # about 6.5 KB
        headers = {"Cookie": cookie}
        long_query = "?session=" + "s" * 6000
        async with websockets.connect(
            server.doc_url(workspace) + long_query, additional_headers=headers, max_size=None
        ):
            pass


@pytest.mark.parametrize(
    ("change", "status", "code", "header"),
    [
        (lambda r: r.replace(b"GET ", b"POST ", 1), 405, "method_not_allowed", "allow: get"),
        (
            lambda r: r.replace(b"Version: 13", b"Version: 8"),
            426,
            "upgrade_required",
            "sec-websocket-version: 13",
        ),
        (lambda r: r.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"c2hvcnQ="), 400, "bad_request", None),
        (lambda r: r.replace(b"Sec-WebSocket-Key", b"X-Key"), 400, "bad_request", None),
    ],
)
async def test_an_invalid_upgrade_request_is_answered_with_a_json_error_and_closed(
    make_settings: SettingsFactory,
    workspace: str,
    change: Callable[[bytes], bytes],
    status: int,
    code: str,
    header: str | None,
) -> None:
    """RFC 6455 section 4.2.1 asks a GET with one 16-byte key and version 13; anything else is
    answered (426 names the version spoken, RFC 6455 section 4.2.2) and the connection closed,
    while a client beside it goes on."""
    async with run_server(make_settings()) as server:
        async with (
            yclient(server.doc_url(workspace)) as bystander,
            yclient(server.doc_url(workspace)) as peer,
        ):
            response = await raw_request(server.port, change(upgrade_request(f"/ws/workspaces/{workspace}")))
            assert response.status == status, response.head
            assert response.closed
            assert response.json()["error"]["code"] == code
            if header is not None:
                assert header in response.head.lower().split("\r\n")
            bystander.text().insert(0, "unharmed")
            await wait_until(lambda: str(peer.text()) == "unharmed")


async def test_an_accepted_upgrade_is_answered_with_the_rfc_6455_accept_key(
    make_settings: SettingsFactory, workspace: str
) -> None:
    async with run_server(make_settings()) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(upgrade_request(f"/ws/workspaces/{workspace}"))
            async with asyncio.timeout(5):
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower().split("\r\n")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        assert head[0] == "http/1.1 101 switching protocols"
        assert "upgrade: websocket" in head
        assert "connection: upgrade" in head
        # RFC 6455 section 1.3's example key and answer
        assert "sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in head
        assert any(line.startswith("date: ") for line in head)


async def test_a_keep_alive_connections_next_request_has_the_same_bound_on_its_head(
    make_settings: SettingsFactory,
) -> None:
    async with run_server(make_settings()) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
            assert head.startswith(b"HTTP/1.1 200 ")
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 20000 + b"\r\n\r\n")
            async with asyncio.timeout(5):
                answer = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]


@pytest.mark.parametrize("kind", ["http", "upgrade"])
async def test_a_refused_client_that_goes_on_sending_still_reads_the_whole_answer(
    make_settings: SettingsFactory, workspace: str, kind: str
) -> None:
    """The refusal is answered, then the connection lingers (RFC 9112 section 9.6): the rest of what
    the client sends is dropped instead of reaching a closed socket, whose reset would destroy the
    answer before the client reads it."""
    if kind == "http":
        request, status = b"GET /health HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 20000 + b"\r\n\r\n", 431
    else:  # websockets refuses an upgrade without Sec-WebSocket-Key
        request = f"GET /ws/workspaces/{workspace} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        request += "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
        request, status = request.encode(), 400
    async with run_server(make_settings()) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(request)
            async with asyncio.timeout(5):
                first = await reader.read(1)  # the answer is on its way: the server has refused
            for _ in range(8):
                writer.write(b"x" * 8192)  # more than the answer; before the fix this reached a closed socket
                await writer.drain()
            async with asyncio.timeout(5):
                answer = first + await reader.read()  # the rest, then the server's end of stream
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        response = parse_response(answer, closed=True)
        assert response.status == status, answer[:120]
        headers = {
            name.lower(): value for name, value in (h.split(": ", 1) for h in response.head.split("\r\n")[1:])
        }
        assert len(response.body) == int(headers["content-length"])
        # the lingering connection is let go (the client closed): the server counts none
        await wait_until(lambda: not server.services.admission.open, timeout=5)


async def test_send_queues_are_bounded_in_bytes(make_settings: SettingsFactory, workspace: str) -> None:
    async with run_server(make_settings(message_queue_bytes=256 * 1024)) as server:
        url = server.doc_url(workspace)
        # max_queue=1: the client library stops reading the socket after one unread frame.
        async with raw_client(url, max_queue=1) as stalled, yclient(url) as writer, yclient(url) as reader:
            text: Text = writer.text()
            chunk = "z" * 100_000
            for _ in range(40):  # 4 MB, in 100 KB updates: far more than the socket buffers hold
                text.insert(len(text), chunk)
                await asyncio.sleep(0.01)
            code, reason = await close_of(stalled.ws, timeout=20)
            assert code == 1013, (code, reason)
            await wait_until(lambda: len(str(reader.text())) == 40 * len(chunk), timeout=20)


def client_frame(opcode: Opcode, payload: bytes = b"") -> bytes:
    return Frame(opcode, payload).serialize(mask=True, extensions=[])


async def exchange(port: int, data: bytes, *, until: bytes | None = None, timeout: float = 10) -> bytes:
    """Send ``data`` in one write; read until ``until`` has arrived, or until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = b""
    try:
        writer.write(data)
        async with asyncio.timeout(timeout):
            while until is None or until not in answer:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                answer += chunk
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return answer


async def test_frames_sent_before_the_101_are_answered_after_it(
    make_settings: SettingsFactory, workspace: str
) -> None:
    """A ping and a close sent with the upgrade request: the 101 comes first, then the pong and
    the close; nothing is written before the status line."""
    async with run_server(make_settings()) as server:
        ping, close = client_frame(Opcode.PING, b"hello"), client_frame(Opcode.CLOSE, b"\x03\xe8")
        answer = await exchange(server.port, upgrade_request(f"/ws/workspaces/{workspace}") + ping + close)
    assert answer.startswith(b"HTTP/1.1 101 "), answer[:40]
    frames = answer.partition(b"\r\n\r\n")[2]
    assert frames.index(b"\x8a\x05hello") < frames.index(b"\x88\x02\x03\xe8")  # the pong, then the close


@pytest.mark.parametrize("path", ["/nowhere", "/ws/workspaces/{workspace}?token=not-a-token"])
async def test_frames_sent_with_a_refused_upgrade_get_no_answer_but_the_refusal(
    make_settings: SettingsFactory, workspace: str, path: str
) -> None:
    async with run_server(make_settings(jwt_secret=SECRET)) as server:
        frames = client_frame(Opcode.PING, b"p") + b"GARBAGE!" + client_frame(Opcode.CLOSE, b"\x03\xe8")
        answer = await exchange(server.port, upgrade_request(path.format(workspace=workspace)) + frames)
        response = parse_response(answer, closed=True)
        assert response.status in (401, 404), answer[:60]
        assert response.json()["error"]["code"] in (
            "unauthorized",
            "not_found",
        )  # the body is the JSON, whole
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            assert (await http.get("/health")).status_code == 200  # the server is serving


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET http://127.0.0.1:1 HTTP/1.1\r\n", 400),  # absolute form without a path
        (b"GET /ws/workspaces/x HTTP/1.1\r\nContent-Length: 4\r\n", 400),  # a body
        (b"GET /ws/workspaces/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", 400),
        (b"GET /ws/%77orkspaces/x HTTP/1.1\r\n", 404),  # an encoded route is not the route
    ],
)
async def test_upgrades_that_are_not_to_a_document_as_written_are_refused(
    make_settings: SettingsFactory, request_bytes: bytes, status: int
) -> None:
    upgrade = (
        b"Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    body = (
        b"0\r\n\r\n"
        if b"chunked" in request_bytes
        else b"abcd"
        if b"Content-Length" in request_bytes
        else b""
    )
    async with run_server(make_settings()) as server:
        response = await raw_request(server.port, request_bytes + upgrade + body)
        assert response.status == status, response.head
        assert response.json()["error"]["code"] in ("bad_request", "not_found")
        rooms = server.services.rooms.rooms
        assert not any(key.path == "x" for key in rooms)  # no room was opened for it


@pytest.mark.parametrize(
    "fields",
    [
        b"Upgrade: websocket \r\nConnection: Upgrade\r\n",  # whitespace around the value
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nConnection: keep-alive\r\n",  # a list in two fields
    ],
)
async def test_upgrade_fields_are_read_as_http_lists_and_values(
    make_settings: SettingsFactory, workspace: str, fields: bytes
) -> None:
    request = (
        f"GET /ws/workspaces/{workspace} HTTP/1.1\r\nHost: x\r\n".encode()
        + fields
        + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13 \r\n\r\n"
    )
    async with run_server(make_settings()) as server:
        answer = await exchange(server.port, request, until=b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 101 "), answer[:60]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health HTTP/1.1\nHost: x\n\n",
        b"GET /health HTTP/1.1\r\nHost: x\x00y\r\n\r\n",
        b"GET \xff HTTP/1.1\r\n\r\n",
    ],
)
async def test_a_request_that_is_not_http_gets_a_json_400(
    make_settings: SettingsFactory, request_bytes: bytes
) -> None:
    async with run_server(make_settings()) as server:
        response = await raw_request(server.port, request_bytes)
    assert response.status == 400, response.head
    assert response.json()["error"]["code"] == "bad_request"


async def test_an_upgrade_pipelined_behind_a_request_follows_its_response_and_stays_open(
    make_settings: SettingsFactory, workspace: str
) -> None:
    """``GET /health`` and an upgrade in one write: the 200 whole, then the 101; the WebSocket
    outlives the HTTP keep-alive timeout that the first response would arm."""
    async with run_server(make_settings(), timeout_keep_alive=1) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(
                b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + upgrade_request(f"/ws/workspaces/{workspace}")
            )
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                upgraded = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            assert upgraded.startswith(b"HTTP/1.1 101 ")
            await asyncio.sleep(1.5)  # past the keep-alive timeout: nothing may close the connection
            writer.write(client_frame(Opcode.PING, b"still"))
            async with asyncio.timeout(5):
                received = b""
                while b"\x8a\x05still" not in received:
                    chunk = await reader.read(65536)
                    assert chunk, "the connection was closed"
                    received += chunk
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def test_an_upgrade_behind_a_response_that_never_ends_is_not_answered_inside_it(
    make_settings: SettingsFactory, workspace: str
) -> None:
    """``GET /health``, an event stream (an SSE response that lasts), then an upgrade, in one write:
    the 200, then the stream's head, and no 101 while the stream is being written."""
    async with run_server(make_settings()) as server:
        async with yclient(server.doc_url(workspace)):
            pass  # the workspace exists: its event stream is a 200 that lasts
        data = (
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            + f"GET /events?workspace_id={workspace} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            + upgrade_request(f"/ws/workspaces/{workspace}")
            + client_frame(Opcode.PING, b"hi")
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(data)
            received = b""
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):  # the stream stays open: read what comes in 2 s
                    while chunk := await reader.read(65536):
                        received += chunk
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    assert received.startswith(b"HTTP/1.1 200 "), received[:40]
    assert received.count(b"HTTP/1.1 200 ") == 2  # /health, then the stream's head
    assert b"HTTP/1.1 101 " not in received
    assert b"\x8a\x02hi" not in received


async def test_a_refusal_pipelined_behind_a_request_follows_its_response(
    make_settings: SettingsFactory,
) -> None:
    async with run_server(make_settings()) as server:
        not_http = b"\x89\x82garbage\r\n\r\n"
        answer = await exchange(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + not_http)
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 "), answer[:60]
    length = int(first.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    refusal = parse_response(rest[length:], closed=True)
    assert refusal.status == 400, rest[:80]
    assert refusal.json()["error"]["code"] == "bad_request"


async def test_frames_sent_with_the_upgrade_request_in_one_write_are_not_lost(
    make_settings: SettingsFactory, workspace: str
) -> None:
    """A client should wait for the 101 before sending frames (RFC 6455 section 4.1); one that
    sends its updates and its close frame in the same write as the upgrade request has them all
    applied, in order, and its close answered."""
    async with run_server(make_settings()) as server:
        updates = small_updates(200, chunk="p")
        close = Frame(Opcode.CLOSE, (1000).to_bytes(2, "big")).serialize(mask=True, extensions=[])
        frames = b"".join(Frame(Opcode.BINARY, u).serialize(mask=True, extensions=[]) for u in updates)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(upgrade_request(f"/ws/workspaces/{workspace}") + frames + close)
            async with asyncio.timeout(10):
                answer = await reader.read()  # the 101, the server's messages, its close; then EOF
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        assert answer.startswith(b"HTTP/1.1 101 ")
        assert b"\x88\x02\x03\xe8" in answer  # the server's close frame: 1000, answering the client's
        assert await text_of(server.doc_url(workspace)) == "p" * 200
