"""``python -m server`` stopped by a signal stores every accepted update before it exits."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.support.server import start_process
from tests.support.wait import wait_until
from tests.support.yclient import yclient


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_flushes_every_room_before_exit(tmp_path: Path, workspace: str, signum: int) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'collab.db'}",
        # Neither the group-commit window nor the unload grace will pass before the signal:
        # only the shutdown flush can store these edits.
        "PERSIST_INTERVAL_MS": "60000",
        "ROOM_UNLOAD_GRACE": "600",
        "LOG_LEVEL": "INFO",
    }
    first = await start_process(env, tmp_path / "first.log")
    try:
        async with (
            yclient(first.doc_url(workspace)) as writer,
            yclient(first.doc_url(workspace, "b")) as other,
        ):
            writer.text().insert(0, "main doc edit")
            other.text().insert(0, "second doc edit")
            async with yclient(first.doc_url(workspace)) as witness:
                await wait_until(lambda: str(witness.text()) == "main doc edit")
            first.process.send_signal(signum)
            returncode = await asyncio.to_thread(first.process.wait, 30)
    finally:
        if first.process.poll() is None:
            first.process.kill()
    # uvicorn finishes its graceful shutdown, then re-raises the signal it caught.
    assert returncode in (0, -signum), first.log()
    log = first.log()
    # Stored by the drain that starts on the signal (or, failing that, by the shutdown).
    stored = r"[1-9]\d* of [1-9]\d* pending updates stored|flushing [1-9]\d* pending updates"
    assert re.search(stored, log), log
    assert "Application shutdown complete" in log
    # Stopping also compacted the loaded documents' logs: a restart loads each from its snapshot.
    with sqlite3.connect(tmp_path / "collab.db") as db:
        assert db.execute("SELECT count(*) FROM document_updates").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM document_snapshots").fetchone() == (2,)

    second = await start_process(env, tmp_path / "second.log")
    try:
        async with yclient(second.doc_url(workspace)) as a, yclient(second.doc_url(workspace, "b")) as b:
            assert str(a.text()) == "main doc edit"
            assert str(b.text()) == "second doc edit"
    finally:
        second.process.terminate()
        await asyncio.to_thread(second.process.wait, 30)
