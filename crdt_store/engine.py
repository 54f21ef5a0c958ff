"""Opening the store: an async SQLAlchemy engine for SQLite or PostgreSQL, migrated at start."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Insert, Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .errors import StoreUnavailable

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant works; it only has to be the same for every instance sharing a database.
MIGRATION_LOCK_KEY = 0x52544301

P = ParamSpec("P")
T = TypeVar("T")


def translate_errors(func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn driver and connection failures into ``StoreUnavailable`` so that callers need to
    know one exception type, whatever the database."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func(*args, **kwargs)
        except (OperationalError, InterfaceError, OSError, ConnectionError) as exc:
            raise StoreUnavailable(f"{func.__name__}: {exc.__class__.__name__}: {exc}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreUnavailable(f"{func.__name__}: connection lost") from exc
            raise

    return wrapper


def insert_ignore(conn: AsyncConnection, table: Table, values: dict[str, Any]) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the connection's dialect."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).values(**values).on_conflict_do_nothing()


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


def create_engine(url: str) -> AsyncEngine:
    url = normalise_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


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


@contextlib.asynccontextmanager
async def open_engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    try:
        await migrate(engine)
        log.info("store ready: %s", make_url(url).render_as_string(hide_password=True))
        yield engine
    finally:
        await engine.dispose()
