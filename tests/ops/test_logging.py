"""Logs: one format at a time (text, or JSON objects: by default in production), uvicorn's lines
in it whichever way the server was started, a line per WebSocket connection opened and closed,
no secret at any level, and DEBUG without SQL statements or frame traces. Real server processes."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from server.logs import JsonFormatter
from tests.support.auth import SECRET, token
from tests.support.server import ROOT, ServerProcess, free_port, start_process
from tests.support.wait import wait_until
from tests.support.yclient import yclient


def json_lines(output: str) -> list[dict[str, str]]:
    """Every line of the output as a JSON object (fails on a line that is not one)."""
    entries = []
    for line in output.splitlines():
        if line.strip():
            entry = json.loads(line)
            assert {"time", "level", "logger", "message"} <= entry.keys(), line
            assert entry["time"].endswith("Z")
            entries.append(entry)
    return entries


def test_json_formatter_gives_one_object_with_the_traceback() -> None:
    record = logging.LogRecord("server.x", logging.ERROR, __file__, 1, "failed: %s", ("why",), None)
    try:
        raise ValueError("inner")
    except ValueError:
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["level"], entry["logger"], entry["message"]) == ("ERROR", "server.x", "failed: why")
    assert "ValueError: inner" in entry["exception"]


async def test_production_logs_json_with_connection_lines_and_no_secret(
    tmp_path: Path, workspace: str
) -> None:
    env = {
        "ENVIRONMENT": "production",
        "JWT_SECRET": SECRET,
        "CORS_ORIGINS": "https://app.example",
        "AUTO_CREATE_WORKSPACES": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'collab.db'}",
    }
    alice = token("alice")
    server = await start_process(env, tmp_path / "server.log")
    try:
        async with yclient(f"{server.doc_url(workspace, 'notes.md')}?token={alice}") as doc:
            doc.text().insert(0, "hello")
        async with websockets.connect(f"{server.ws_url}/ws", subprotocols=["bearer", alice]) as ws:
            await ws.recv()
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(f"{server.ws_url}/ws?token=not-a-token"):
                pass
        assert refused.value.response.status_code == 401
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{server.http_url}/health")).status_code == 200
        await wait_until(lambda: server.log().count("closed:") >= 2, timeout=10)
    finally:
        await server.stop()
    output = server.log()
    entries = json_lines(output)
    loggers = {entry["logger"] for entry in entries}
    assert {"uvicorn.error", "uvicorn.access", "server.connections"} <= loggers
    connection_lines = [e["message"] for e in entries if e["logger"] == "server.connections"]
    opened = [line for line in connection_lines if " opened: " in line]
    closed = [line for line in connection_lines if " closed: " in line]
    assert any(f"sync {workspace}/notes.md user=alice" in line for line in opened), connection_lines
    assert any("/ws user=alice" in line for line in opened), connection_lines
    assert any(
        f"sync {workspace}/notes.md user=alice duration=" in line and "code=1000" in line for line in closed
    )
    assert all(line.startswith("WebSocket connection ") for line in connection_lines)
    assert alice not in output and SECRET not in output and "not-a-token" not in output
    assert not any(e["level"] == "ERROR" for e in entries), [e for e in entries if e["level"] == "ERROR"]


@pytest.mark.parametrize(
    "protocols",
    [
        ["--ws", "websockets-sansio"],  # uvicorn's own
        # The service's, as the README runs it: handed the request written out again by uvicorn's
        # own HTTP protocol, or the one httptools parsed by the service's.
        ["--ws", "server.websocket:CollabWebSocketProtocol"],
        ["--http", "server.serving:GuardedHttpProtocol", "--ws", "server.websocket:CollabWebSocketProtocol"],
    ],
    ids=["websockets-sansio", "service-ws", "service-http-and-ws"],
)
async def test_uvicorn_command_logs_the_same_format_and_debug_is_the_services(
    tmp_path: Path, workspace: str, protocols: list[str]
) -> None:
    port = free_port()
    log_path = tmp_path / "uvicorn.log"
    env = {
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'collab.db'}",
        "PATH": "/usr/bin:/bin",
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "server.main:app",
                "--port",
                str(port),
                *protocols,
            ],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(process, port, log_path)
    try:

        async def up() -> bool:
            assert process.poll() is None, server.log()
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"{server.http_url}/health", timeout=1)).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(up, timeout=30)
        async with yclient(server.doc_url(workspace)) as doc:
            doc.text().insert(0, "x" * 100)
        await wait_until(lambda: " closed: " in server.log(), timeout=10)
    finally:
        await server.stop()
    entries = json_lines(server.log())
    assert {"uvicorn.error", "uvicorn.access", "server.connections"} <= {e["logger"] for e in entries}
    assert any(e["level"] == "DEBUG" and e["logger"].startswith("server.") for e in entries)
    assert not [e for e in entries if e["logger"].startswith(("sqlalchemy", "aiosqlite"))]
    traced = ("> BINARY", "< BINARY", "< CLOSE", "= connection")
    frames = [e for e in entries if e["message"].startswith(traced)]
    assert not frames, frames[:3]
    assert any(e["message"].startswith("< GET /ws/workspaces/") for e in entries)  # handshakes are kept
