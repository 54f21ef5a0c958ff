"""How a database is named in messages: where it is, never its password."""

from __future__ import annotations

import pytest

from crdt_store import describe_database


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://collab:pw-secret@db.internal:5433/app",
            'PostgreSQL database "app" at db.internal:5433 as user "collab"',
        ),
        ("postgres://collab:pw-secret@db/app", 'PostgreSQL database "app" at db:5432 as user "collab"'),
        (
            "postgresql+asyncpg:///app?host=/run/postgresql",
            'PostgreSQL database "app" at /run/postgresql:5432',
        ),
        ("sqlite:///./data/collab.db", "SQLite database ./data/collab.db"),
    ],
)
def test_database_is_named_without_its_password(url: str, expected: str) -> None:
    assert describe_database(url) == expected
    assert "pw-secret" not in describe_database(url)
