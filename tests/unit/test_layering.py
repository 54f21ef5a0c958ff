"""Dependencies flow one way: transports (rest, server.endpoints) -> application services
(server.workspaces, server.agents, server.cluster) -> components -> crdt_store.
Only server/app.py mounts rest."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

APPLICATION = {"server.workspaces", "server.agents", "server.cluster", "server.services", "server.lifespan"}
COMPONENTS = [
    "server/broker",
    "server/events",
    "server/room.py",
    "server/rooms.py",
    "server/connection.py",
    "server/channel.py",
    "server/protocol.py",
    "server/yjs_format.py",
    "server/persistence.py",
    "server/replication.py",
    "server/presence.py",
    "server/agent_presence.py",
    "server/document_view.py",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def files(*places: str) -> list[Path]:
    found: list[Path] = []
    for place in places:
        target = ROOT / place
        found.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target])
    return found


def offenders(
    places: list[Path], forbidden: set[str], *, exempt: tuple[str, ...] = ()
) -> dict[str, list[str]]:
    result = {}
    for path in places:
        if str(path.relative_to(ROOT)) in exempt:
            continue
        bad = sorted(
            name
            for name in imported_modules(path)
            if any(name == prefix or name.startswith(prefix + ".") for prefix in forbidden)
        )
        if bad:
            result[str(path.relative_to(ROOT))] = bad
    return result


@pytest.mark.parametrize(
    ("places", "forbidden", "exempt"),
    [
        (["crdt_store"], {"server", "rest", "fastapi", "starlette", "redis"}, ()),
        (["server"], {"rest"}, ("server/app.py",)),
        (["rest"], {"crdt_store", "server.endpoints", "redis"}, ()),
        (["server/endpoints"], {"crdt_store", "rest", "redis"}, ()),
        (["server/broker"], {"crdt_store", "rest", "server.rooms", "server.room", "server.events"}, ()),
        (COMPONENTS, APPLICATION | {"server.endpoints", "rest"}, ()),
    ],
    ids=["store", "server", "rest", "endpoints", "broker", "components"],
)
def test_no_imports_against_the_flow(places: list[str], forbidden: set[str], exempt: tuple[str, ...]) -> None:
    assert offenders(files(*places), forbidden, exempt=exempt) == {}


def test_the_server_reaches_the_database_through_repositories() -> None:
    """``Store.engine`` is for migrations, tests and tools: the server and the REST layer use
    ``store.documents``, ``store.workspaces``, ``store.agents`` and ``store.events``."""
    uses = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in files("server", "rest")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "engine"
    ]
    assert uses == []
