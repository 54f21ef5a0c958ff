"""The durability window: group commit (the default) relays at once and stores within
PERSIST_INTERVAL_MS; synchronous mode (PERSIST_INTERVAL_MS=0) relays an update only once it is
stored, so whatever another client has seen survives kill -9."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from server.config import Settings
from tests.support.server import run_server, start_process
from tests.support.wait import wait_until
from tests.support.yclient import text_of, yclient


@pytest.mark.parametrize(("interval_ms", "survives"), [("0", True), ("5000", False)])
async def test_what_another_client_saw_survives_kill_9_only_in_synchronous_mode(
    database_url: str, tmp_path: Path, workspace: str, interval_ms: str, survives: bool
) -> None:
    env = {"DATABASE_URL": database_url, "PERSIST_INTERVAL_MS": interval_ms, "LOG_LEVEL": "WARNING"}
    server = await start_process(env, tmp_path / "first.log")
    try:
        async with yclient(server.doc_url(workspace)) as writer, yclient(server.doc_url(workspace)) as reader:
            for i in range(20):
                writer.text().insert(len(writer.text()), f"{i};")
            seen = str(writer.text())
            await wait_until(lambda: str(reader.text()) == seen)
            await server.kill()  # no shutdown, no flush
    finally:
        await server.stop()
    restarted = await start_process(env, tmp_path / "second.log")
    try:
        stored = await text_of(restarted.doc_url(workspace))
    finally:
        await restarted.stop()
    # Group commit loses the last window (here everything: the window is 5 s long).
    assert stored == (seen if survives else "")


async def test_synchronous_mode_relays_nothing_the_database_has_not_stored(
    make_settings: Callable[..., Settings], tmp_path: Path, workspace: str
) -> None:
    path = tmp_path / "sync.db"
    settings = make_settings(
        database_url=f"sqlite:///{path}", persist_interval_ms=0, store_retry_max=0.2, database_timeout=0.5
    )
    async with run_server(settings) as server:
        url = server.doc_url(workspace)
        async with yclient(url) as writer, yclient(url) as reader:
            writer.text().insert(0, "stored")
            await wait_until(lambda: str(reader.text()) == "stored")
            other = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
            await asyncio.to_thread(other.execute, "BEGIN EXCLUSIVE")  # every write fails now
            try:
                writer.text().insert(len(writer.text()), " and relayed")
                await wait_until(lambda: server.services.writer.last_error is not None, timeout=10)
                assert str(reader.text()) == "stored"  # accepted, not stored, so not relayed
            finally:
                await asyncio.to_thread(other.execute, "ROLLBACK")
                other.close()
            await wait_until(lambda: str(reader.text()) == "stored and relayed", timeout=10)
            await wait_until(lambda: server.services.writer.pending == 0)
