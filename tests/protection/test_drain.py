"""Graceful drain: on SIGTERM the instance stops admitting (503 ``draining``, ``/health`` says so),
closes its WebSockets with 1012 so that clients reconnect elsewhere, and stores every update it
accepted; writers active during the signal lose nothing."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import Callable
from pathlib import Path

import httpx

from server.config import Settings
from tests.protection.helpers import closed_with, refusal_of
from tests.support.events import event_client
from tests.support.server import run_server, start_process
from tests.support.wait import wait_until
from tests.support.yclient import YClient, yclient

SettingsFactory = Callable[..., Settings]


async def test_draining_refuses_new_connections_and_says_so_while_it_closes_the_open_ones(
    make_settings: SettingsFactory, workspace: str
) -> None:
    async with run_server(make_settings()) as server:
        url = server.doc_url(workspace)
        async with yclient(url) as editor, event_client(f"{server.ws_url}/ws") as events:
            # What SIGTERM starts (serving.DrainingServer); the instance stays draining until it exits.
            drain = asyncio.create_task(server.app.drain(3.0))
            code, reason = await closed_with(editor.ws)
            assert (code, reason) == (1012, "service restarting")
            await wait_until(lambda: events.ws.close_code is not None)
            assert events.ws.close_code == 1012
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                health = await http.get("/health")
                assert health.status_code == 503 and health.json()["status"] == "draining"
            status, body, headers = await refusal_of(url)
            assert (status, body["error"]["code"]) == (503, "draining")
            assert headers["retry-after"] == "1"
            status, body, _ = await refusal_of(f"{server.ws_url}/ws")
            assert (status, body["error"]["code"]) == (503, "draining")
            await asyncio.wait_for(drain, 5)
            assert server.services.connections == 0


async def test_writers_active_during_sigterm_lose_nothing_and_see_1012(
    tmp_path: Path, workspace: str
) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'collab.db'}",
        # Neither the group-commit window nor the unload grace passes before the signal: only the
        # drain (and the shutdown after it) can store these edits.
        "PERSIST_INTERVAL_MS": "60000",
        "ROOM_UNLOAD_GRACE": "600",
        "SHUTDOWN_TIMEOUT": "10",
        "LOG_LEVEL": "INFO",
    }
    paths = ["", "notes", "src/main.py"]
    first = await start_process(env, tmp_path / "first.log")
    written: dict[str, list[str]] = {path: [] for path in paths}
    seen: dict[str, str] = {}
    closes: list[tuple[int | None, str]] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            writers = [await stack.enter_async_context(yclient(first.doc_url(workspace, p))) for p in paths]
            witnesses = [await stack.enter_async_context(yclient(first.doc_url(workspace, p))) for p in paths]

            async def write(path: str, client: YClient) -> None:
                i = 0
                while client.ws.close_code is None:
                    token = f"[{path or 'main'}:{i}]"
                    client.text().insert(len(client.text()), token)
                    written[path].append(token)
                    i += 1
                    await asyncio.sleep(0.005)

            tasks = [asyncio.create_task(write(p, c)) for p, c in zip(paths, writers, strict=True)]
            await asyncio.sleep(1.0)  # writing at full speed
            first.process.send_signal(signal.SIGTERM)
            returncode = await asyncio.to_thread(first.process.wait, 30)
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
            for client in [*writers, *witnesses]:
                closes.append(await closed_with(client.ws))
            for path, witness in zip(paths, witnesses, strict=True):
                seen[path] = str(witness.text())
            docs = [writer.doc for writer in writers]
    finally:
        if first.process.poll() is None:
            first.process.kill()
    assert returncode in (0, -signal.SIGTERM), first.log()
    assert closes == [(1012, "service restarting")] * len(closes), closes
    log = first.log()
    assert re.search(r"draining: refusing new connections, closing 6 WebSockets", log), log
    assert all(len(written[p]) > 20 for p in paths), {p: len(w) for p, w in written.items()}

    second = await start_process(env, tmp_path / "second.log")
    try:
        for path in paths:
            async with yclient(second.doc_url(workspace, path)) as reader:
                stored = str(reader.text())
            # Everything the server accepted (every edit another client saw) was stored ...
            assert seen[path] and set(_tokens(seen[path])) <= set(_tokens(stored)), path
        # ... and what was still in flight is with its writer, who sends it on reconnecting.
        for path, doc in zip(paths, docs, strict=True):
            async with yclient(second.doc_url(workspace, path), doc):
                pass
            async with yclient(second.doc_url(workspace, path)) as reader:
                assert _tokens(str(reader.text())) == written[path]
    finally:
        await second.stop()


def _tokens(text: str) -> list[str]:
    return re.findall(r"\[[^\]]+\]", text)
