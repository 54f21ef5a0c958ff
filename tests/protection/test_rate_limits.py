"""Rate limits: REST per user and per address (shared by the instances through Redis), messages
and bytes per connection on document and event sockets. Each limit is exceeded by a real client
while a polite client beside it keeps its latency and loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import websockets

from server.config import Settings
from tests.protection.helpers import (
    close_of,
    http_from,
    long_run_appends,
    parse_response,
    polite_edits,
    small_updates,
    upgraded_socket,
)
from tests.support.auth import SECRET, client
from tests.support.events import event_client
from tests.support.server import run_server, start_process
from tests.support.wait import wait_until
from tests.support.yclient import yclient

SettingsFactory = Callable[..., Settings]


async def burst(http: httpx.AsyncClient, count: int, path: str = "/workspaces") -> list[httpx.Response]:
    return [await http.get(path) for _ in range(count)]


async def test_rest_requests_per_user_are_limited_and_other_users_are_not(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(jwt_secret=SECRET, rate_limit_rest_user="20/minute", rate_limit_rest_ip="")
    async with run_server(settings) as server:
        async with client(server.http_url, "alice") as alice, client(server.http_url, "bob") as bob:
            answers = await burst(alice, 40)
            statuses = [r.status_code for r in answers]
            assert statuses[:20] == [200] * 20
            assert set(statuses[20:]) == {429}, statuses
            refused = answers[-1]
            assert refused.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            # Bob, from the same address, is not counted against alice.
            assert {r.status_code for r in await burst(bob, 10)} == {200}
            # Health checks are never limited (load balancers poll them).
            assert (await alice.get("/health")).status_code == 200


async def test_rest_requests_per_address_are_limited_and_other_addresses_are_not(
    make_settings: SettingsFactory,
) -> None:
    async with run_server(make_settings(rate_limit_rest_ip="15/minute")) as server:
        async with http_from(server.http_url) as flooder, http_from(server.http_url, "127.0.0.2") as other:
            statuses = [r.status_code for r in await burst(flooder, 30)]
            assert statuses[:15] == [200] * 15 and set(statuses[15:]) == {429}, statuses
            assert {r.status_code for r in await burst(other, 10)} == {200}


async def test_rest_limits_hold_across_instances_through_redis(
    make_settings: SettingsFactory, pg_url: str, redis_url: str
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        jwt_secret=SECRET,
        database_url=pg_url,
        redis_url=redis_url,
        redis_prefix=prefix,
        rate_limit_rest_user="20/minute",
        rate_limit_rest_ip="",
    )
    try:
        async with run_server(settings) as first, run_server(settings) as second:
            assert first.services.limiter.kind == "redis"
            async with client(first.http_url, "carol") as a, client(second.http_url, "carol") as b:
                statuses = []
                for _ in range(15):  # alternate instances: 30 requests, 20 allowed in all
                    statuses += [
                        (await a.get("/workspaces")).status_code,
                        (await b.get("/workspaces")).status_code,
                    ]
                assert statuses.count(200) == 20, statuses
                assert statuses[20:] == [429] * 10
            async with client(second.http_url, "dave") as dave:
                assert (await dave.get("/workspaces")).status_code == 200
    finally:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(redis_url)
        keys = [key async for key in r.scan_iter(f"{prefix}*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


async def test_rest_limiter_lets_requests_through_when_redis_is_unreachable(
    make_settings: SettingsFactory, pg_url: str
) -> None:
    settings = make_settings(
        database_url=pg_url, redis_url="redis://127.0.0.1:1/0", rate_limit_rest_ip="5/minute"
    )
    # The server starts and serves while Redis is down (its broker serves this instance's clients).
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as http:
        started = time.monotonic()
        statuses = {r.status_code for r in await burst(http, 3, "/status")}
        assert statuses == {200}
        assert time.monotonic() - started < 10


FLOODS: dict[str, tuple[dict[str, Any], Callable[[], list[bytes]]]] = {
    # As fast as it can: 10,000 one-character updates,
    "messages": ({"rate_limit_sync_messages": 100}, lambda: small_updates(10_000)),
    # 1,000 updates of 8 KB,
    "bytes": ({"rate_limit_sync_bytes": 50_000}, lambda: small_updates(1000, chunk="b" * 8000)),
    # or 2,000 one-character updates that each cost the server time in proportion to a string
    # of a million characters (hostile content: few messages, few bytes, much work).
    "time": ({"rate_limit_sync_time_ms": 20}, lambda: long_run_appends(1_000_000, 2000)),
}


@pytest.mark.parametrize("kind", list(FLOODS))
async def test_a_flooding_document_client_is_held_back_and_closed_while_a_polite_one_keeps_its_latency(
    make_settings: SettingsFactory, workspace: str, kind: str
) -> None:
    limit, make_frames = FLOODS[kind]
    limits = {"rate_limit_sync_messages": 0, "rate_limit_sync_bytes": 0, "rate_limit_sync_time_ms": 0} | limit
    async with run_server(make_settings(rate_limit_close_after=3.0, **limits)) as server:
        url = server.doc_url(workspace)
        frames = make_frames()
        # Neither sends back what it receives (pycrdt's Provider would: each would then send the
        # flooder's admitted rate again, and be over the same limit).
        async with yclient(url, echo=False) as polite, yclient(url, echo=False) as observer:
            unloaded = await polite_edits(polite.text(), observer.text(), count=30, period=0.02, tag="u")
            async with websockets.connect(url, max_size=None, max_queue=None) as flooder:

                async def flood() -> None:
                    with contextlib.suppress(websockets.ConnectionClosed):
                        for frame in frames:
                            await flooder.send(frame)

                flooding = asyncio.create_task(flood())
                await asyncio.sleep(0.3)  # the flood is on
                loaded = await polite_edits(polite.text(), observer.text(), count=30, period=0.02, tag="f")
                code, reason = await close_of(flooder, timeout=20)
                flooding.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flooding
            assert code == 4429, (code, reason)
            assert "rate limit exceeded" in reason
            assert {
                "messages": "messages per second",
                "bytes": "bytes per second",
                "time": "ms of server time",
            }[kind] in reason
            # The polite client lost nothing and kept its latency.
            for i in range(30):
                assert f"<u{i}>" in str(observer.text()) and f"<f{i}>" in str(observer.text())
            print(f"p50 unloaded {unloaded.p50 * 1000:.1f} ms, flooded {loaded.p50 * 1000:.1f} ms")  # noqa: T201
            assert loaded.p50 <= max(2 * unloaded.p50, unloaded.p50 + 0.005), (unloaded.p50, loaded.p50)


async def test_a_flooding_event_client_gets_errors_then_4429_while_a_polite_one_is_answered(
    make_settings: SettingsFactory,
) -> None:
    async with run_server(make_settings(rate_limit_event_messages=50, rate_limit_close_after=2.0)) as server:
        url = f"{server.ws_url}/ws"
        async with event_client(url) as polite, websockets.connect(url) as flooder:
            assert json.loads(await flooder.recv())["type"] == "welcome"
            replies: list[dict[str, Any]] = []

            async def read() -> None:
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for raw in flooder:
                        replies.append(json.loads(raw))

            reader = asyncio.create_task(read())
            with contextlib.suppress(websockets.ConnectionClosed):
                for i in range(2000):
                    await flooder.send(json.dumps({"type": "ping", "data": {}, "request_id": f"f{i}"}))
            # The polite client, meanwhile, is answered at once, every time.
            timings = []
            for _ in range(20):
                started = time.perf_counter()
                assert (await polite.command("ping"))["type"] == "pong"
                timings.append(time.perf_counter() - started)
                await asyncio.sleep(0.05)
            async with asyncio.timeout(10):
                await reader
            assert flooder.protocol.close_rcvd is not None
            code, reason = flooder.protocol.close_rcvd.code, flooder.protocol.close_rcvd.reason
        assert code == 4429, (code, reason)
        pongs = [m for m in replies if m["type"] == "pong"]
        refusals = [m for m in replies if m["type"] == "error"]
        assert 50 <= len(pongs) < 400, len(pongs)
        assert refusals and all(m["data"]["code"] == "rate_limited" for m in refusals)
        assert refusals[0]["request_id"].startswith("f") and refusals[0]["data"]["retry_after"] > 0
        assert sorted(timings)[10] < 0.05, timings


async def test_event_bytes_per_second_are_limited(make_settings: SettingsFactory) -> None:
    settings = make_settings(
        rate_limit_event_messages=0, rate_limit_event_bytes=20_000, rate_limit_close_after=1.0
    )
    async with run_server(settings) as server:
        url = f"{server.ws_url}/ws"
        async with event_client(url) as polite, event_client(url) as heavy:
            padding = "x" * 9_000
            first = await heavy.command("ping", {"padding": padding})
            second = await heavy.command("ping", {"padding": padding})
            third = await heavy.command("ping", {"padding": padding})
            assert [first["type"], second["type"], third["type"]] == ["pong", "pong", "error"]
            assert third["data"]["code"] == "rate_limited"
            assert (await polite.command("ping", {"padding": padding}))["type"] == "pong"
            for _ in range(200):
                with contextlib.suppress(websockets.ConnectionClosed):
                    await heavy.ws.send(json.dumps({"type": "ping", "data": {"padding": padding}}))
                await asyncio.sleep(0.01)
                if heavy.ws.close_code is not None:
                    break
            await wait_until(lambda: heavy.ws.close_code is not None, timeout=5)
            assert heavy.ws.close_code == 4429
            assert (await polite.command("ping"))["type"] == "pong"


async def test_the_default_limits_do_not_bother_a_normal_editor(
    make_settings: SettingsFactory, workspace: str
) -> None:
    """Typing fast (50 edits a second, with a cursor update each) for three seconds, and loading
    a workspace's pages over REST, stay well inside the defaults."""
    async with run_server(make_settings()) as server:
        url = server.doc_url(workspace)
        async with yclient(url) as editor, yclient(url) as reader:
            for i in range(150):
                editor.text().insert(len(editor.text()), f"{i % 10}")
                await asyncio.sleep(0.02)
            await wait_until(lambda: len(str(reader.text())) == 150)
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            answers = await asyncio.gather(*(http.get("/workspaces") for _ in range(30)))
            assert {a.status_code for a in answers} == {200}


async def test_a_client_flooding_pings_does_not_hold_up_other_requests(
    tmp_path: Path, workspace: str
) -> None:
    """Pings are answered by the WebSocket layer and never wait in the application's queue (nor
    count against a connection's message rate), so nothing paces them but the event loop's turns:
    a client sending them as fast as it can gets one part of each read parsed per turn, and a
    health check meanwhile is answered in its turn."""
    database = f"sqlite:///{tmp_path / 'flood.db'}"
    server = await start_process({"DATABASE_URL": database}, tmp_path / "server.log")
    try:
        flooding = threading.Event()
        stop = threading.Event()

        def flood() -> None:
            # Empty masked pings with an all-zero key (the cheapest for this side), 240 KB a write.
            frames = b"\x89\x80\x00\x00\x00\x00" * 40_000
            with upgraded_socket(server.port, f"/ws/workspaces/{workspace}") as sock:

                def read_pongs() -> None:  # or the server's writes back up
                    with contextlib.suppress(OSError):
                        while sock.recv(1 << 20):
                            pass

                reader = threading.Thread(target=read_pongs, daemon=True)
                reader.start()
                deadline = time.monotonic() + 20  # bounded, whatever happens to the test
                while not stop.is_set() and time.monotonic() < deadline:
                    sock.sendall(frames)
                    flooding.set()
                sock.shutdown(socket.SHUT_RDWR)
                reader.join(10)

        flooder = asyncio.create_task(asyncio.to_thread(flood))
        await wait_until(flooding.is_set, timeout=10)
        timings = []
        try:
            async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
                for _ in range(10):
                    started = time.perf_counter()
                    assert (await http.get("/health")).status_code == 200
                    timings.append(time.perf_counter() - started)
        finally:
            stop.set()
            await flooder
        assert max(timings) < 2, timings  # the first waited for the whole flood when read whole
    finally:
        await server.stop()


async def test_a_body_refused_before_it_is_read_is_not_read_for_ever(make_settings: SettingsFactory) -> None:
    """A 413 (or a 429) is given before the body is read: the connection ends with it, lingering
    for a while, instead of uvicorn reading and dropping what the client sends for as long as it
    sends it."""
    async with run_server(make_settings(max_json_body_size=1024)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = b"POST /workspaces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (8192, b"a" * 8192)
        answer = b""
        deadline = time.monotonic() + 10
        with contextlib.suppress(ConnectionError):
            while time.monotonic() < deadline:
                writer.write(chunk * 8)
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.01):
                        answer += await reader.read(65536)
                if reader.at_eof():
                    break
        writer.close()
        assert time.monotonic() < deadline, "the server was still reading the body after 10 s"
        response = parse_response(answer, closed=True)
        assert response.status == 413, answer[:200]
        assert "connection: close" in response.head.lower()
        assert response.json()["error"]["code"] == "payload_too_large"


async def test_a_client_that_pings_but_never_reads_is_no_longer_read(tmp_path: Path, workspace: str) -> None:
    """Each ping is answered at once; a client that never reads its pongs would pile them up in the
    server's memory for as long as it sends. Once the connection's send buffer is over its
    high-water mark the server stops reading from it: the pings wait in TCP's buffers instead."""
    database = f"sqlite:///{tmp_path / 'pings.db'}"
    server = await start_process({"DATABASE_URL": database}, tmp_path / "server.log")
    try:
        process = psutil.Process(server.process.pid)
        before = process.memory_info().rss
        limit = 64 * 1024 * 1024

        def flood() -> int:
            pings = (b"\x89\xfd\x00\x00\x00\x00" + b"p" * 125) * 2048  # 125-byte pings, 268 KB a write
            sent = 0
            with upgraded_socket(server.port, f"/ws/workspaces/{workspace}") as sock:
                sock.settimeout(1.0)  # a second without progress: the server has stopped reading
                with contextlib.suppress(TimeoutError):
                    while sent < limit:
                        sent += sock.send(pings)
            return sent

        sent = await asyncio.to_thread(flood)
        grown = process.memory_info().rss - before
        assert sent < limit, "the server read 64 MB of pings from a client that reads nothing"
        assert grown < 32 * 1024 * 1024, grown
    finally:
        await server.stop()
