"""Room loading: single-flight, before anyone is served; storage failures keep the room."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from sqlalchemy import text

from server.config import Settings
from tests.support.server import RunningServer, run_server
from tests.support.wait import wait_until
from tests.support.yclient import yclient


async def test_clients_opening_a_new_room_at_once_all_sync(
    server: RunningServer, workspace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = server.services.store
    original = store.documents.load
    gate = asyncio.Event()
    calls = 0

    async def slow_load(workspace_id: str, path: str):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        await gate.wait()
        return await original(workspace_id, path)

    monkeypatch.setattr(store.documents, "load", slow_load)
    url = server.doc_url(workspace)

    async def join(index: int) -> str:
        async with yclient(url, sync_timeout=10) as client:
            client.text().insert(0, f"<{index}>")
            await wait_until(lambda: all(f"<{i}>" in str(client.text()) for i in range(5)), timeout=10)
            return str(client.text())

    joins = [asyncio.create_task(join(i)) for i in range(5)]
    # Every joiner is accepted and waiting for the room (the first one's load holds at the gate).
    await wait_until(lambda: calls >= 1 and server.services.connections == 5)
    gate.set()
    texts = await asyncio.gather(*joins)
    assert calls == 1
    assert len(set(texts)) == 1


async def test_storage_failure_keeps_updates_in_memory_and_retries(
    make_settings: Callable[..., Settings], pg_url: str, workspace: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(database_url=pg_url, store_retry_max=0.2)
    async with run_server(settings) as server:
        engine = server.services.store.engine
        writer = server.services.writer
        async with yclient(server.doc_url(workspace)) as client:
            client.text().insert(0, "before")
            await wait_until(lambda: writer.pending == 0)
            async with engine.begin() as conn:
                await conn.execute(text("ALTER TABLE document_updates RENAME TO document_updates_away"))
            try:
                with caplog.at_level(logging.ERROR, logger="server.persistence"):
                    client.text().insert(len(client.text()), " during the outage")
                    await wait_until(lambda: writer.last_error is not None, timeout=10)
                assert writer.pending > 0
                assert any("storing" in r.getMessage() for r in caplog.records)
            finally:
                async with engine.begin() as conn:
                    await conn.execute(text("ALTER TABLE document_updates_away RENAME TO document_updates"))
            await wait_until(lambda: writer.pending == 0, timeout=10)
    async with run_server(settings) as server, yclient(server.doc_url(workspace)) as reader:
        await wait_until(lambda: str(reader.text()) == "before during the outage")
