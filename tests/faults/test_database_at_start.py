"""Starting against a database that is missing, unreachable, unreadable or held by another
process: one clear line naming it (never its password), retries for DATABASE_STARTUP_TIMEOUT,
then exit status 3 (uvicorn's status for a failed start). ``python -m server`` processes, real PostgreSQL."""

from __future__ import annotations

import fcntl
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from crdt_store import open_store
from tests.conftest import PG_ADMIN_DSN
from tests.support.server import free_port, run_to_exit, spawn_process, start_process
from tests.support.wait import wait_until

PASSWORD = "s3cret-pw-never-logged"
PG_HOST_PORT = PG_ADMIN_DSN.split("@", 1)[1].rsplit("/", 1)[0]  # 127.0.0.1:5432


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "cannot start" in line]


@pytest.mark.parametrize("where", ["closed_port", "missing_database"])
async def test_unreachable_database_is_retried_then_named_in_one_line(tmp_path: Path, where: str) -> None:
    name = f"rtc_missing_{uuid.uuid4().hex[:8]}"
    host_port = f"127.0.0.1:{free_port()}" if where == "closed_port" else PG_HOST_PORT
    env = {
        "DATABASE_URL": f"postgresql://postgres:{PASSWORD}@{host_port}/{name}",
        "DATABASE_STARTUP_TIMEOUT": "2",
        "LOG_LEVEL": "WARNING",
    }
    returncode, output = await run_to_exit(env, tmp_path / "server.log")
    assert returncode == 3  # uvicorn's status for a failed start
    [line] = error_lines(output)
    assert f'PostgreSQL database "{name}" at {host_port} as user "postgres" is unavailable' in line
    assert "DATABASE_STARTUP_TIMEOUT=2" in line
    expected = "Connection refused" if where == "closed_port" else "(SQLSTATE 3D000)"
    assert expected in line
    assert sum("retrying for" in line for line in output.splitlines()) >= 2  # it tried again
    assert PASSWORD not in output
    assert "Traceback" not in output


async def test_start_waits_for_a_database_that_appears(tmp_path: Path) -> None:
    name = f"rtc_late_{uuid.uuid4().hex[:8]}"
    env = {
        "DATABASE_URL": f"postgresql://postgres@{PG_HOST_PORT}/{name}",
        "DATABASE_STARTUP_TIMEOUT": "60",
        "LOG_LEVEL": "WARNING",
    }
    server = spawn_process(env, tmp_path / "server.log")
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await wait_until(lambda: "retrying for" in server.log(), timeout=30)
        await admin.execute(f'CREATE DATABASE "{name}"')

        async def serving() -> bool:
            assert server.process.poll() is None, server.log()
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"{server.http_url}/health", timeout=1)).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(serving, timeout=30)
    finally:
        await server.stop()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_unreadable_sqlite_file_is_named_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database " * 200)
    env = {"DATABASE_URL": f"sqlite:///{path}", "DATABASE_STARTUP_TIMEOUT": "0", "LOG_LEVEL": "WARNING"}
    returncode, output = await run_to_exit(env, tmp_path / "server.log")
    assert returncode == 3  # uvicorn's status for a failed start
    [line] = error_lines(output)
    reason = "cannot connect: file is not a database (SQLITE_NOTADB)"
    assert f"SQLite database {path} is unavailable: {reason}" in line
    assert "Traceback" not in output


async def test_second_process_on_one_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    env = {"DATABASE_URL": f"sqlite:///{path}", "LOG_LEVEL": "WARNING"}
    first = await start_process(env, tmp_path / "first.log")
    try:
        returncode, output = await run_to_exit(env, tmp_path / "second.log")
        assert returncode == 3  # uvicorn's status for a failed start
        [line] = error_lines(output)
        assert f"SQLite database {path} is in use by another process (pid {first.process.pid}" in line
        assert "PostgreSQL" in line
        assert "Traceback" not in output
        async with httpx.AsyncClient() as http:  # the first goes on serving
            assert (await http.get(f"{first.http_url}/health", timeout=10)).status_code == 200
    finally:
        await first.stop()
    third = await start_process(env, tmp_path / "third.log")  # serves: the lock went with the first
    await third.stop()


async def test_sqlite_lock_belongs_to_the_process(tmp_path: Path) -> None:
    """Stores in one process share the lock; it is released with the last of them, and held
    until then (another process is refused meanwhile)."""
    path = tmp_path / "one.db"
    url = f"sqlite:///{path}"
    async with open_store(url) as first:
        async with open_store(url) as second:
            await second.ping()
        returncode, output = await run_to_exit(
            {"DATABASE_URL": url, "LOG_LEVEL": "WARNING"}, tmp_path / "other.log"
        )
        assert returncode == 3 and "in use by another process" in output  # still held by `first`
        await first.ping()
    with open(f"{path}.lock", "rb+") as lock_file:  # released with the last store
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
