"""Opening the store: an async SQLAlchemy engine for SQLite or PostgreSQL, migrated at start."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Insert, Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .errors import StoreError, StoreLocked, StoreUnavailable
from .failures import unavailable_reason

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant works; it only has to be the same for every instance sharing a database.
MIGRATION_LOCK_KEY = 0x52544301
DEFAULT_TIMEOUT = 10.0  # seconds (``DATABASE_TIMEOUT``'s default)

P = ParamSpec("P")
T = TypeVar("T")


def translate_errors(func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn every way of failing to get or keep a database connection (see ``failures``) into
    ``StoreUnavailable``, so that callers need to know one exception type, whatever the
    database and driver. Other errors pass unchanged."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func(*args, **kwargs)
        except StoreError:
            raise
        except Exception as exc:
            reason = unavailable_reason(exc)
            if reason is None:
                raise
            raise StoreUnavailable(reason, operation=func.__name__) from exc

    return wrapper


def insert_ignore(
    conn: AsyncConnection, table: Table, values: dict[str, Any] | list[dict[str, Any]]
) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` of one row (a dict) or several (a list of dicts, one
    multi-row ``VALUES``) in the connection's dialect."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement: Insert = dialect.insert(table).values(values).on_conflict_do_nothing()
    return statement


def normalise_database_url(url: str) -> str:
    """Map the URLs people write (``postgres://``, ``sqlite:///``) to the async drivers we use.
    Raises ``ValueError`` for any other database."""
    for prefix, replacement in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgresql+psycopg2://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(prefix):
            return replacement + url[len(prefix) :]
    if url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return url
    raise ValueError("must be a postgresql:// or sqlite:/// URL")


class _Writers:
    """The turn of one SQLite engine's writers in this process (see ``writing``): its lock, and
    how long a writer waits for it (the engine's ``timeout``, as SQLite waits for its own)."""

    __slots__ = ("lock", "timeout")

    def __init__(self, timeout: float) -> None:
        self.lock = asyncio.Lock()
        self.timeout = timeout


_SQLITE_WRITERS: weakref.WeakKeyDictionary[Engine, _Writers] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """``engine.begin()`` for a short transaction that writes.

    SQLite lets one connection write at a time; the others retry in its busy handler, which
    sleeps between tries for 1 ms, then 2, 5, 10 ... up to 100 ms (``sqlite3_busy_timeout``),
    each holding a pooled connection and its thread meanwhile: fifty clients opening fifty new
    documents at once waited up to 0.75 s for their rows that way. This process's writers queue
    on one ``asyncio.Lock`` per engine instead and go in the moment the previous one commits.
    A writer that waits for its turn longer than the engine's ``timeout`` (``create_engine``)
    gets ``StoreUnavailable``, as it would after waiting that long for SQLite's own lock.
    PostgreSQL locks rows, not the database: its writers do not queue here."""
    if engine.dialect.name != "sqlite":
        async with engine.begin() as conn:
            yield conn
        return
    writers = _SQLITE_WRITERS.get(engine.sync_engine)
    if writers is None:
        writers = _SQLITE_WRITERS[engine.sync_engine] = _Writers(DEFAULT_TIMEOUT)
    try:
        async with asyncio.timeout(writers.timeout):
            await writers.lock.acquire()
    except TimeoutError:
        raise StoreUnavailable(
            f"database is locked: another write took longer than the {writers.timeout:g} s timeout"
        ) from None
    try:
        async with engine.begin() as conn:
            yield conn
    finally:
        writers.lock.release()


def create_engine(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> AsyncEngine:
    """An async engine for the URL. ``timeout`` (seconds) bounds the wait for a connection: for
    the connect itself and for a free pool slot (PostgreSQL), or for a lock (SQLite)."""
    url = normalise_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": timeout})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        _SQLITE_WRITERS[engine.sync_engine] = _Writers(timeout)
        return engine
    return create_async_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        pool_timeout=timeout,
        connect_args={"timeout": timeout},
    )


def describe_database(url: str) -> str:
    """Where the URL points, for messages: dialect, database, host and port, user; never the
    password. ``postgresql://u:pw@db:5433/app`` -> ``PostgreSQL database "app" at db:5433 as
    user "u"``."""
    parsed = make_url(normalise_database_url(url))
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite database {parsed.database or ':memory:'}"
    host = parsed.host or parsed.query.get("host") or "localhost"
    user = f' as user "{parsed.username}"' if parsed.username else ""
    return f'PostgreSQL database "{parsed.database}" at {host}:{parsed.port or 5432}{user}'


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    # WAL lets loads read while the writer commits; NORMAL is durable across process crashes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Instances starting together must not run the same migration twice.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


@translate_errors
async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def migrate_when_reachable(engine: AsyncEngine, *, wait: float) -> None:
    """Migrate, retrying for up to ``wait`` seconds while the database is unavailable (not
    started yet, refusing connections, missing). Each failed try is logged as one line naming
    the database; after the last one ``StoreUnavailable`` is raised."""
    target = describe_database(engine.url.render_as_string())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.25
    attempt = 1
    while True:
        try:
            await migrate(engine)
            return
        except StoreUnavailable as exc:
            left = deadline - loop.time()
            if left <= 0:
                raise
            log.warning(
                "%s is unavailable (try %d): %s; retrying for %.0f more s", target, attempt, exc.reason, left
            )
        await asyncio.sleep(min(delay, max(left, 0.0)))
        delay = min(delay * 2, 5.0)
        attempt += 1


@contextlib.asynccontextmanager
async def open_engine(url: str, *, timeout: float = 10.0, wait: float = 0.0) -> AsyncIterator[AsyncEngine]:
    """An engine on a migrated schema, disposed on exit. A SQLite file is locked for this
    process (``StoreLocked`` if another holds it). ``wait``: seconds to keep retrying an
    unavailable database before raising ``StoreUnavailable``."""
    with single_process_lock(url):
        engine = create_engine(url, timeout=timeout)
        try:
            await migrate_when_reachable(engine, wait=wait)
            log.info("store ready: %s", describe_database(url))
            yield engine
        finally:
            await engine.dispose()


# The SQLite file locks this process holds: lock file -> [descriptor, users]. The lock belongs to
# the process (several stores in one process, as in tests, share it); other processes are refused.
_held_locks: dict[Path, list[int]] = {}
_held_locks_guard = threading.Lock()


@contextlib.contextmanager
def single_process_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<database>.lock`` beside a SQLite file while the block runs.

    Two processes on one SQLite file would each keep documents, rooms and connections of their
    own and never hear of the other's changes, so a second process is refused with
    ``StoreLocked``. The lock is an ``flock`` (Linux, macOS): the kernel drops it when the process
    ends, however it ends. PostgreSQL needs no lock: instances share it through Redis.
    """
    parsed = make_url(normalise_database_url(url))
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        yield
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock").resolve()
    with _held_locks_guard:
        held = _held_locks.get(lock_path)
        if held is not None:
            held[1] += 1
        else:
            _held_locks[lock_path] = [_take_lock(lock_path, database), 1]
    try:
        yield
    finally:
        with _held_locks_guard:
            held = _held_locks[lock_path]
            held[1] -= 1
            if not held[1]:
                del _held_locks[lock_path]
                os.close(held[0])  # releases the lock


def _take_lock(lock_path: Path, database: str) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreLocked(
            f"SQLite database {database} is in use by another process (pid {holder} holds the lock "
            f"{lock_path}): the embedded store serves one process; run several instances on "
            "PostgreSQL (and Redis) instead"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
