"""Run the real service on an ephemeral port, in this process or as a separate OS process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from server.__main__ import uvicorn_config
from server.app import create_app
from server.config import Settings

from .wait import wait_until

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunningServer:
    app: FastAPI
    server: uvicorn.Server
    port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def doc_url(self, workspace_id: str, path: str = "") -> str:
        return f"{self.ws_url}/ws/workspaces/{workspace_id}" + (f"/{path}" if path else "")

    @property
    def services(self):  # type: ignore[no-untyped-def]
        return self.app.state.services


@contextlib.asynccontextmanager
async def run_server(settings: Settings, **uvicorn_options: Any) -> AsyncIterator[RunningServer]:
    """uvicorn with the service's own configuration (and ``uvicorn_options``), on 127.0.0.1 and a
    port the OS picks."""
    app = create_app(settings)
    config = uvicorn_config(app, settings, host="127.0.0.1", port=0, log_level="warning", **uvicorn_options)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done(), timeout=30)
        if task.done():
            task.result()
            raise RuntimeError("server exited during start-up")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield RunningServer(app, server, port)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


_handed_out: set[int] = set()


def free_port() -> int:
    """A port free right now and not handed out before in this run (servers started together
    must not be given the same one)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def doc_url(self, workspace_id: str, path: str = "") -> str:
        return f"{self.ws_url}/ws/workspaces/{workspace_id}" + (f"/{path}" if path else "")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                await asyncio.to_thread(self.process.wait, timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 10)

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no flush."""
        self.process.kill()
        await asyncio.to_thread(self.process.wait, 10)


def spawn_process(env: dict[str, str], log_path: Path) -> ServerProcess:
    """``python -m server`` as its own OS process on a fresh port, output to ``log_path``;
    returns at once (``start_process`` waits until it serves)."""
    port = free_port()
    full_env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), **env}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "server"],
            cwd=ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return ServerProcess(process, port, log_path)


async def run_to_exit(env: dict[str, str], log_path: Path, timeout: float = 60) -> tuple[int, str]:
    """Run a server process expected to stop by itself; its exit status and output."""
    handle = spawn_process(env, log_path)
    try:
        returncode = await asyncio.to_thread(handle.process.wait, timeout)
    finally:
        await handle.stop()
    return returncode, handle.log()


async def start_process(env: dict[str, str], log_path: Path) -> ServerProcess:
    """``python -m server`` as its own OS process; returns once ``/health`` answers."""
    import httpx

    handle = spawn_process(env, log_path)
    process = handle.process

    async def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{handle.log()}")
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{handle.http_url}/health", timeout=1)).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_until(healthy, timeout=30)
    if process.poll() is not None:  # /health was answered by someone else on that port
        raise RuntimeError(f"server exited with {process.returncode}:\n{handle.log()}")
    return handle
