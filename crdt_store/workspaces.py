"""Workspaces, members and their roles, and the documents of a workspace."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, and_, delete, exists, func, insert, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from .engine import translate_errors, writing
from .errors import Conflict, NotFound
from .tables import document_snapshots, document_updates, documents, workspace_members, workspaces


@dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    name: str
    visibility: str
    owner_id: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Member:
    workspace_id: str
    user_id: str
    role: str
    display_name: str | None
    joined_at: datetime


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    id: int
    path: str
    created_at: datetime
    stored_updates: int
    snapshot_bytes: int


async def _workspace(conn: AsyncConnection, workspace_id: str) -> Workspace | None:
    row = (await conn.execute(select(workspaces).where(workspaces.c.id == workspace_id))).one_or_none()
    return Workspace(**row._mapping) if row else None


async def _member(conn: AsyncConnection, workspace_id: str, user_id: str) -> Member | None:
    row = (
        await conn.execute(
            select(workspace_members).where(
                workspace_members.c.workspace_id == workspace_id, workspace_members.c.user_id == user_id
            )
        )
    ).one_or_none()
    return Member(**row._mapping) if row else None


def _with_roles(condition: ColumnElement[bool]) -> Select[Any]:
    """The workspace's columns, then the ``role`` of each member matching ``condition`` (one row
    per member; one row with a null role when none matches)."""
    return select(workspaces, workspace_members.c.user_id, workspace_members.c.role).outerjoin(
        workspace_members, and_(workspace_members.c.workspace_id == workspaces.c.id, condition)
    )


def _workspace_of(row: Row[Any]) -> Workspace:
    return Workspace(row.id, row.name, row.visibility, row.owner_id, row.created_at, row.updated_at)


class WorkspaceRepository:
    """Workspaces, their members and the documents' existence."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @translate_errors
    async def get(self, *, workspace_id: str) -> Workspace:
        async with self.engine.connect() as conn:
            found = await _workspace(conn, workspace_id)
        if found is None:
            raise NotFound(f"workspace {workspace_id!r} does not exist")
        return found

    @translate_errors
    async def find(self, *, workspace_id: str) -> Workspace | None:
        async with self.engine.connect() as conn:
            return await _workspace(conn, workspace_id)

    @translate_errors
    async def create(
        self,
        *,
        workspace_id: str,
        name: str,
        visibility: str,
        owner_id: str,
        owner_name: str | None = None,
    ) -> Workspace:
        """Create a workspace with its owner as first member. Raises ``Conflict`` if the id is taken."""
        try:
            async with writing(self.engine) as conn:
                if await _workspace(conn, workspace_id) is not None:
                    raise Conflict(f"workspace {workspace_id!r} already exists")
                await conn.execute(
                    insert(workspaces).values(
                        id=workspace_id, name=name, visibility=visibility, owner_id=owner_id
                    )
                )
                await conn.execute(
                    insert(workspace_members).values(
                        workspace_id=workspace_id, user_id=owner_id, role="owner", display_name=owner_name
                    )
                )
                created = await _workspace(conn, workspace_id)
        except IntegrityError:
            raise Conflict(f"workspace {workspace_id!r} already exists") from None
        assert created is not None
        return created

    @translate_errors
    async def visible_to(
        self, *, user_id: str | None, limit: int, offset: int
    ) -> tuple[list[Workspace], int]:
        """Workspaces ``user_id`` can see (open ones and those it is a member of), newest first.
        ``user_id=None`` lists every workspace (administrators)."""
        condition = None
        if user_id is not None:
            is_member = exists().where(
                workspace_members.c.workspace_id == workspaces.c.id, workspace_members.c.user_id == user_id
            )
            condition = or_(workspaces.c.visibility == "open", is_member)
        query = select(workspaces)
        count = select(func.count()).select_from(workspaces)
        if condition is not None:
            query, count = query.where(condition), count.where(condition)
        async with self.engine.connect() as conn:
            total = (await conn.execute(count)).scalar_one()
            rows = (
                await conn.execute(
                    query.order_by(workspaces.c.created_at.desc(), workspaces.c.id)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return [Workspace(**row._mapping) for row in rows], total

    @translate_errors
    async def update(
        self, *, workspace_id: str, name: str | None = None, visibility: str | None = None
    ) -> Workspace:
        values: dict[str, object] = {"updated_at": func.now()}
        if name is not None:
            values["name"] = name
        if visibility is not None:
            values["visibility"] = visibility
        async with writing(self.engine) as conn:
            result = await conn.execute(
                update(workspaces).where(workspaces.c.id == workspace_id).values(**values)
            )
            if result.rowcount == 0:
                raise NotFound(f"workspace {workspace_id!r} does not exist")
            updated = await _workspace(conn, workspace_id)
        assert updated is not None
        return updated

    @translate_errors
    async def delete(self, *, workspace_id: str) -> list[int]:
        """Delete a workspace with its members, documents, update logs and snapshots.
        Returns the ids of the deleted documents."""
        async with writing(self.engine) as conn:
            document_ids = list(
                (
                    await conn.execute(select(documents.c.id).where(documents.c.workspace_id == workspace_id))
                ).scalars()
            )
            if document_ids:
                # Explicit deletes: SQLite only cascades with foreign keys on, and this does not rely on it.
                await conn.execute(
                    delete(document_updates).where(document_updates.c.document_id.in_(document_ids))
                )
                await conn.execute(
                    delete(document_snapshots).where(document_snapshots.c.document_id.in_(document_ids))
                )
                await conn.execute(delete(documents).where(documents.c.id.in_(document_ids)))
            await conn.execute(
                delete(workspace_members).where(workspace_members.c.workspace_id == workspace_id)
            )
            result = await conn.execute(delete(workspaces).where(workspaces.c.id == workspace_id))
            if result.rowcount == 0:
                raise NotFound(f"workspace {workspace_id!r} does not exist")
        return document_ids

    @translate_errors
    async def delete_document(self, *, workspace_id: str, path: str) -> int:
        """Delete one document with its update log and snapshot; returns its id."""
        async with writing(self.engine) as conn:
            document_id = (
                await conn.execute(
                    select(documents.c.id).where(
                        documents.c.workspace_id == workspace_id, documents.c.path == path
                    )
                )
            ).scalar_one_or_none()
            if document_id is None:
                raise NotFound(f"document {path!r} does not exist in workspace {workspace_id!r}")
            await conn.execute(delete(document_updates).where(document_updates.c.document_id == document_id))
            await conn.execute(
                delete(document_snapshots).where(document_snapshots.c.document_id == document_id)
            )
            await conn.execute(delete(documents).where(documents.c.id == document_id))
        return int(document_id)

    @translate_errors
    async def find_with_role(self, *, workspace_id: str, user_id: str) -> tuple[Workspace, str | None] | None:
        """The workspace and ``user_id``'s role in it (None: not a member), in one query; None
        when the workspace does not exist."""
        query = _with_roles(workspace_members.c.user_id == user_id).where(workspaces.c.id == workspace_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else (_workspace_of(row), row.role)

    @translate_errors
    async def roster(
        self, *, workspace_id: str, limit: int
    ) -> tuple[Workspace, dict[str, str] | None] | None:
        """The workspace and every member's role (user id -> role) in one query; the roles are
        None when it has more than ``limit`` members. None when the workspace does not exist."""
        query = _with_roles(true()).where(workspaces.c.id == workspace_id).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        if not rows:
            return None
        roles = {row.user_id: row.role for row in rows if row.user_id is not None}
        return _workspace_of(rows[0]), (roles if len(rows) <= limit else None)

    @translate_errors
    async def member(self, *, workspace_id: str, user_id: str) -> Member | None:
        async with self.engine.connect() as conn:
            return await _member(conn, workspace_id, user_id)

    @translate_errors
    async def roles_of(self, *, user_id: str, workspace_ids: list[str]) -> dict[str, str]:
        """The user's role in each of the workspaces it is a member of, in one query."""
        if not workspace_ids:
            return {}
        query = select(workspace_members.c.workspace_id, workspace_members.c.role).where(
            workspace_members.c.user_id == user_id, workspace_members.c.workspace_id.in_(workspace_ids)
        )
        async with self.engine.connect() as conn:
            return {row.workspace_id: row.role for row in (await conn.execute(query)).all()}

    @translate_errors
    async def set_member(
        self,
        *,
        workspace_id: str,
        user_id: str,
        role: str,
        display_name: str | None = None,
        only_if_absent: bool = False,
    ) -> Member:
        """Add a member or change its role. With ``only_if_absent`` an existing member is left as is."""
        async with writing(self.engine) as conn:
            if await _workspace(conn, workspace_id) is None:
                raise NotFound(f"workspace {workspace_id!r} does not exist")
            current = await _member(conn, workspace_id, user_id)
            if current is None:
                try:
                    async with conn.begin_nested():
                        await conn.execute(
                            insert(workspace_members).values(
                                workspace_id=workspace_id,
                                user_id=user_id,
                                role=role,
                                display_name=display_name,
                            )
                        )
                except IntegrityError:
                    pass  # added concurrently: fall through to the update below unless only_if_absent
                else:
                    member = await _member(conn, workspace_id, user_id)
                    assert member is not None
                    return member
                if only_if_absent:
                    member = await _member(conn, workspace_id, user_id)
                    assert member is not None
                    return member
            elif only_if_absent:
                return current
            values: dict[str, object] = {"role": role}
            if display_name is not None:
                values["display_name"] = display_name
            await conn.execute(
                update(workspace_members)
                .where(
                    workspace_members.c.workspace_id == workspace_id, workspace_members.c.user_id == user_id
                )
                .values(**values)
            )
            member = await _member(conn, workspace_id, user_id)
        assert member is not None
        return member

    @translate_errors
    async def remove_member(self, *, workspace_id: str, user_id: str) -> bool:
        async with writing(self.engine) as conn:
            result = await conn.execute(
                delete(workspace_members).where(
                    workspace_members.c.workspace_id == workspace_id, workspace_members.c.user_id == user_id
                )
            )
        return result.rowcount > 0

    @translate_errors
    async def members(self, *, workspace_id: str) -> list[Member]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(workspace_members)
                    .where(workspace_members.c.workspace_id == workspace_id)
                    .order_by(workspace_members.c.joined_at, workspace_members.c.user_id)
                )
            ).all()
        return [Member(**row._mapping) for row in rows]

    @translate_errors
    async def documents(self, *, workspace_id: str) -> list[DocumentInfo]:
        updates = (
            select(func.count())
            .where(document_updates.c.document_id == documents.c.id)
            .correlate(documents)
            .scalar_subquery()
        )
        query = (
            select(
                documents.c.id,
                documents.c.path,
                documents.c.created_at,
                (updates + func.coalesce(document_snapshots.c.merged_updates, 0)).label("stored_updates"),
                func.coalesce(func.length(document_snapshots.c.state), 0).label("snapshot_bytes"),
            )
            .select_from(
                documents.outerjoin(
                    document_snapshots, and_(document_snapshots.c.document_id == documents.c.id)
                )
            )
            .where(documents.c.workspace_id == workspace_id)
            .order_by(documents.c.path)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [DocumentInfo(**row._mapping) for row in rows]
