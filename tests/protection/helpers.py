"""Clients that misbehave on purpose, and the measurements the protection tests share."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from pycrdt import Doc, Text, create_update_message
from websockets.exceptions import ConnectionClosed, InvalidStatus


@dataclass
class RawResponse:
    status: int | None
    head: str
    body: bytes
    closed: bool  # the server closed the connection after answering (or without answering)

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(port: int, data: bytes, *, timeout: float = 10, host: str = "127.0.0.1") -> RawResponse:
    """Send ``data`` on a fresh TCP connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        chunks = []
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
        return parse_response(b"".join(chunks), closed=True)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def parse_response(raw: bytes, *, closed: bool) -> RawResponse:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ")
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return RawResponse(status, head.decode("latin-1"), body, closed)


def upgrade_request(path: str, *, extra_headers: str = "", host: str = "127.0.0.1") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    ).encode("latin-1")


def upgraded_socket(port: int, path: str) -> socket.socket:
    """A blocking socket on which a WebSocket upgrade to ``path`` was answered 101: for clients
    that write raw frames (masked, RFC 6455 5.3) from a thread."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(upgrade_request(path))
    answer = sock.recv(4096)
    if not answer.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise AssertionError(f"upgrade refused: {answer[:100]!r}")
    return sock


async def refusal_of(url: str, **kwargs: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Connect expecting a refusal before the upgrade: its status, JSON body and headers."""
    try:
        async with websockets.connect(url, open_timeout=10, **kwargs):
            pass
    except InvalidStatus as exc:
        response = exc.response
        return response.status_code, json.loads(response.body or b"{}"), dict(response.headers)
    raise AssertionError(f"{url} was accepted")


async def close_of(ws: Any, timeout: float = 10) -> tuple[int | None, str]:
    """Read until the server closes; its close code and reason."""
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code, rcvd.reason) if rcvd else (None, "")


async def closed_with(ws: Any, timeout: float = 10) -> tuple[int | None, str]:
    """The close code and reason of a connection that another task reads (a pycrdt provider),
    once it has closed."""
    async with asyncio.timeout(timeout):
        while ws.close_code is None:  # noqa: ASYNC110 - the reader is not ours to wait on
            await asyncio.sleep(0.01)
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code, rcvd.reason) if rcvd else (None, "")


def small_updates(count: int, *, chunk: str = "f") -> list[bytes]:
    """``count`` sync frames, each appending ``chunk`` to the text, all by one writer."""
    doc = Doc()
    text = doc.get("text", type=Text)
    frames = []
    for _ in range(count):
        before = doc.get_state()
        text += chunk
        frames.append(create_update_message(doc.get_update(before)))
    return frames


def long_run_appends(run: int, count: int) -> list[bytes]:
    """A sync frame inserting ``run`` characters in one go, then ``count`` frames each appending one
    character to it, all by one writer: each append lands on the end of one long string item,
    which Yrs (pycrdt) merges into it and measures again (its UTF-16 length) every time, so each
    costs the server time in proportion to ``run`` for a frame of a few bytes."""
    doc = Doc()
    text = doc.get("run", type=Text)
    text += "a" * run
    frames = [create_update_message(doc.get_update())]
    for _ in range(count):
        before = doc.get_state()
        text += "b"
        frames.append(create_update_message(doc.get_update(before)))
    return frames


@dataclass
class Latencies:
    samples: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        ordered = sorted(self.samples)
        return ordered[len(ordered) // 2]


async def polite_edits(
    writer_text: Text, observer_text: Text, *, count: int, period: float, tag: str
) -> Latencies:
    """Type ``count`` marked edits, one every ``period`` seconds, and time how long each takes to
    reach the observer (another client in the room)."""
    latencies = Latencies()
    for i in range(count):
        marker = f"<{tag}{i}>"
        started = time.perf_counter()
        writer_text += marker
        async with asyncio.timeout(10):
            while marker not in str(observer_text):  # noqa: ASYNC110 - timing it, as tightly as the loop allows
                await asyncio.sleep(0.0005)
        latencies.samples.append(time.perf_counter() - started)
        await asyncio.sleep(period)
    return latencies


@contextlib.asynccontextmanager
async def http_from(
    base_url: str, local_ip: str = "127.0.0.1", **kwargs: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose connections come from ``local_ip`` (another loopback address is
    another client address to the server)."""
    transport = httpx.AsyncHTTPTransport(local_address=local_ip)
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=30, **kwargs) as client:
        yield client
