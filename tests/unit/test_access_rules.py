"""Who may do what: ``server.access`` (``resolve_access``, ``require``, ``Role``) and the rules of
``server.workspaces.WorkspaceService``, table by table, on a real store (a SQLite file).

The cast, in an ``open`` and a ``private`` workspace alike: alice (owner), bob (editor), carol
(viewer); eve, an authenticated user who is no member; a guest; an administrator and a service
(agent publisher) who are no members either. The store is an in-memory SQLite database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from crdt_store import Store, open_store
from server.access import Access, require, resolve_access
from server.auth import GlobalRole, Principal
from server.cluster import CloseDocument, CloseWorkspace, RevokeAccess, SetWriteAccess
from server.config import Settings
from server.errors import (
    BadRequest,
    ConflictError,
    Forbidden,
    NotFoundError,
    ServiceError,
    UnknownWorkspace,
    service_error_of,
)
from server.vocabulary import Role, Visibility
from server.workspaces import MemberAccess, WorkspaceService

SECRET = "s" * 32

PEOPLE = {
    "alice": Principal("alice", "Alice"),
    "bob": Principal("bob", "Bob"),
    "carol": Principal("carol", "Carol"),
    "eve": Principal("eve", "Eve"),
    "guest": Principal("guest-1234", "Guest 1234", guest=True),
    "admin": Principal("root", "Root", role=GlobalRole.ADMIN),
    "service": Principal("indexer", "Indexer", role=GlobalRole.SERVICE),
}
MEMBERS = {"alice": Role.OWNER, "bob": Role.EDITOR, "carol": Role.VIEWER}


class RecordingEvents:
    def __init__(self) -> None:
        self.announced: list[tuple[str, str, dict[str, Any]]] = []

    def announce(self, workspace_id: str, update_type: str, **details: Any) -> None:
        self.announced.append((workspace_id, update_type, details))

    def types(self) -> list[str]:
        return [update_type for _, update_type, _ in self.announced]


class RecordingCluster:
    """Records commands; makes members' kept access forget access changes, as ``Cluster.apply``
    does."""

    def __init__(self) -> None:
        self.commands: list[object] = []
        self.member_access = MemberAccess()

    def run(self, command: object) -> None:
        self.commands.append(command)
        if isinstance(command, RevokeAccess | SetWriteAccess | CloseWorkspace):
            self.member_access.forget(
                command.workspace_id, None if isinstance(command, CloseWorkspace) else command.user_id
            )


@dataclass
class World:
    store: Store
    open_id: str
    private_id: str
    events: RecordingEvents = field(default_factory=RecordingEvents)
    cluster: RecordingCluster = field(default_factory=RecordingCluster)

    def workspace(self, visibility: str) -> str:
        return {"open": self.open_id, "private": self.private_id}[visibility]

    def service(self, *, auth: bool = True, auto_create: bool = False) -> WorkspaceService:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            jwt_secret=SECRET if auth else None,
            auto_create_workspaces=auto_create,
            redis_url=None,
        )
        return WorkspaceService(
            self.store,
            settings,
            self.events,  # type: ignore[arg-type]
            self.cluster,  # type: ignore[arg-type]
            self.cluster.member_access,
        )

    async def access(self, who: str, visibility: str) -> Access:
        return await resolve_access(self.store, PEOPLE[who], self.workspace(visibility))

    async def role_of(self, user_id: str, workspace_id: str) -> str | None:
        member = await self.store.workspaces.member(workspace_id=workspace_id, user_id=user_id)
        return None if member is None else member.role


@pytest.fixture(scope="module")
async def store() -> AsyncIterator[Store]:
    async with open_store("sqlite+aiosqlite:///:memory:") as opened:
        yield opened


async def new_world(store: Store) -> World:
    suffix = uuid.uuid4().hex[:10]
    ids = {"open": f"open-{suffix}", "private": f"private-{suffix}"}
    for visibility, workspace_id in ids.items():
        await store.workspaces.create(
            workspace_id=workspace_id, name=workspace_id, visibility=visibility, owner_id="alice"
        )
        for user_id, role in MEMBERS.items():
            if role is not Role.OWNER:
                await store.workspaces.set_member(workspace_id=workspace_id, user_id=user_id, role=role.value)
    return World(store, ids["open"], ids["private"])


@pytest.fixture(scope="module")
async def shared_world(store: Store) -> World:
    """For tests that only read."""
    return await new_world(store)


@pytest.fixture
async def world(store: Store) -> World:
    """For tests that change something."""
    return await new_world(store)


def unknown_id() -> str:
    return f"nowhere-{uuid.uuid4().hex[:10]}"


# -- resolve_access -------------------------------------------------------------------------------

ACCESS_TABLE = [
    # who, visibility, role (None: Forbidden), stored member
    ("alice", "open", Role.OWNER, True),
    ("alice", "private", Role.OWNER, True),
    ("bob", "open", Role.EDITOR, True),
    ("bob", "private", Role.EDITOR, True),
    ("carol", "open", Role.VIEWER, True),  # a member has its stored role, even where anyone edits
    ("carol", "private", Role.VIEWER, True),
    ("eve", "open", Role.EDITOR, False),  # anyone works in an open workspace as an editor
    ("eve", "private", None, False),  # a private workspace admits members only
    ("guest", "open", Role.EDITOR, False),
    ("guest", "private", None, False),
    ("admin", "open", Role.OWNER, False),  # an administrator acts as owner everywhere
    ("admin", "private", Role.OWNER, False),
    ("service", "open", Role.EDITOR, False),  # a service acts as editor everywhere
    ("service", "private", Role.EDITOR, False),
]


@pytest.mark.parametrize(("who", "visibility", "role", "member"), ACCESS_TABLE)
async def test_resolve_access(
    shared_world: World, who: str, visibility: str, role: Role | None, member: bool
) -> None:
    world = shared_world
    workspace_id = world.workspace(visibility)
    if role is None:
        with pytest.raises(Forbidden) as refused:
            await world.access(who, visibility)
        assert refused.value.message == f"workspace {workspace_id!r} is private and you are not a member"
        assert (refused.value.status_code, refused.value.code) == (403, "forbidden")
    else:
        access = await world.access(who, visibility)
        assert (access.role, access.member) == (role, member)
        assert access.workspace.id == workspace_id
        assert access.workspace.visibility == visibility
    # Deciding never writes: nobody became a member by being asked about.
    expected = MEMBERS[who].value if who in MEMBERS else None
    assert await world.role_of(PEOPLE[who].user_id, workspace_id) == expected


async def test_an_administrator_who_is_a_member_still_acts_as_owner(world: World) -> None:
    admin = PEOPLE["admin"]
    await world.store.workspaces.set_member(
        workspace_id=world.private_id, user_id=admin.user_id, role=Role.VIEWER.value
    )
    access = await resolve_access(world.store, admin, world.private_id)
    assert (access.role, access.member) == (Role.OWNER, True)


@pytest.mark.parametrize("who", list(PEOPLE))
async def test_an_unknown_workspace_is_not_found_for_everyone(store: Store, who: str) -> None:
    workspace_id = unknown_id()
    with pytest.raises(UnknownWorkspace) as missing:
        await resolve_access(store, PEOPLE[who], workspace_id)
    assert (missing.value.status_code, missing.value.code) == (404, "unknown_workspace")
    assert missing.value.message == f"workspace {workspace_id!r} does not exist"
    assert await store.workspaces.find(workspace_id=workspace_id) is None  # reading never creates


# -- require and Role -----------------------------------------------------------------------------

REQUIRE_TABLE = [
    (Role.OWNER, Role.OWNER, True),
    (Role.OWNER, Role.EDITOR, True),
    (Role.OWNER, Role.VIEWER, True),
    (Role.EDITOR, Role.OWNER, False),
    (Role.EDITOR, Role.EDITOR, True),
    (Role.EDITOR, Role.VIEWER, True),
    (Role.VIEWER, Role.OWNER, False),
    (Role.VIEWER, Role.EDITOR, False),  # a viewer cannot write
    (Role.VIEWER, Role.VIEWER, True),
]


@pytest.mark.parametrize(("role", "needed", "allowed"), REQUIRE_TABLE)
async def test_require(shared_world: World, role: Role, needed: Role, allowed: bool) -> None:
    workspace = await shared_world.store.workspaces.get(workspace_id=shared_world.open_id)
    access = Access(workspace, role, member=True)
    if allowed:
        require(access, needed)
    else:
        with pytest.raises(Forbidden) as refused:
            require(access, needed)
        assert refused.value.message == f"this needs the {needed.value} role; you are {role.value}"


@pytest.mark.parametrize(
    ("role", "can_write"), [(Role.OWNER, True), (Role.EDITOR, True), (Role.VIEWER, False)]
)
def test_only_viewers_cannot_write(role: Role, can_write: bool) -> None:
    assert role.can_write is can_write


# -- owner-only operations: rename, delete, members -----------------------------------------------

OWNER_ONLY = [
    ("alice", "private", True),
    ("admin", "private", True),  # as owner
    ("bob", "private", False),
    ("carol", "private", False),
    ("service", "private", False),  # as editor
    ("eve", "open", False),  # as editor of an open workspace
    ("guest", "open", False),
]


@pytest.mark.parametrize(("who", "visibility", "allowed"), OWNER_ONLY)
async def test_rename_and_change_visibility_need_the_owner(
    world: World, who: str, visibility: str, allowed: bool
) -> None:
    service = world.service()
    access = await world.access(who, visibility)
    workspace_id = world.workspace(visibility)
    if not allowed:
        with pytest.raises(Forbidden):
            await service.update(access, name="renamed", visibility="open")
        assert (await world.store.workspaces.get(workspace_id=workspace_id)).name == workspace_id
        assert world.events.announced == []
        return
    updated = await service.update(access, name="renamed", visibility="open")
    assert (updated.name, updated.visibility) == ("renamed", "open")
    assert world.events.announced == [
        (workspace_id, "workspace_renamed", {"name": "renamed"}),
        (workspace_id, "workspace_visibility_changed", {"visibility": "open"}),
    ]


@pytest.mark.parametrize(("who", "visibility", "allowed"), OWNER_ONLY)
async def test_deleting_a_workspace_needs_the_owner(
    world: World, who: str, visibility: str, allowed: bool
) -> None:
    service = world.service()
    workspace_id = world.workspace(visibility)
    document_id, _ = await world.store.documents.ensure(workspace_id, "notes.md")
    access = await world.access(who, visibility)
    if not allowed:
        with pytest.raises(Forbidden):
            await service.delete(access)
        assert await world.store.workspaces.find(workspace_id=workspace_id) is not None
        assert world.cluster.commands == []
        return
    await service.delete(access)
    assert await world.store.workspaces.find(workspace_id=workspace_id) is None
    assert await world.store.workspaces.member(workspace_id=workspace_id, user_id="bob") is None
    assert world.cluster.commands == [CloseWorkspace(workspace_id, (document_id,))]
    assert world.events.announced == [(workspace_id, "workspace_deleted", {})]


@pytest.mark.parametrize(("who", "visibility", "allowed"), OWNER_ONLY)
async def test_managing_members_needs_the_owner(
    world: World, who: str, visibility: str, allowed: bool
) -> None:
    service = world.service()
    workspace_id = world.workspace(visibility)
    access = await world.access(who, visibility)
    if not allowed:
        with pytest.raises(Forbidden):
            await service.set_member(access, "dave", role="editor", display_name="Dave")
        with pytest.raises(Forbidden):
            await service.remove_member(access, "bob")
        assert await world.role_of("dave", workspace_id) is None
        assert await world.role_of("bob", workspace_id) == "editor"
        assert world.cluster.commands == []
        return
    added = await service.set_member(access, "dave", role="viewer", display_name="Dave")
    assert (added.role, added.display_name) == ("viewer", "Dave")
    await service.set_member(access, "dave", role="editor", display_name=None)
    await service.set_member(access, "dave", role="editor", display_name=None)  # no change
    await service.remove_member(access, "bob")
    assert await world.role_of("dave", workspace_id) == "editor"
    assert await world.role_of("bob", workspace_id) is None
    assert world.cluster.commands == [
        SetWriteAccess(workspace_id, "dave", False),
        SetWriteAccess(workspace_id, "dave", True),
        SetWriteAccess(workspace_id, "dave", True),
        RevokeAccess(workspace_id, "bob"),
    ]
    assert world.events.announced == [
        (workspace_id, "member_added", {"user_id": "dave", "role": "viewer"}),
        (workspace_id, "member_role_changed", {"user_id": "dave", "role": "editor"}),
        (workspace_id, "member_removed", {"user_id": "bob"}),
    ]


async def test_a_workspace_always_keeps_an_owner(world: World) -> None:
    service = world.service()
    owner = await world.access("alice", "private")
    with pytest.raises(ConflictError):
        await service.set_member(owner, "alice", role="editor", display_name=None)  # the last owner
    with pytest.raises(ConflictError):
        await service.remove_member(owner, "alice")
    with pytest.raises(ConflictError):
        await service.leave(PEOPLE["alice"], world.private_id)
    assert await world.role_of("alice", world.private_id) == "owner"
    await service.set_member(owner, "bob", role="owner", display_name=None)
    await service.set_member(owner, "alice", role="editor", display_name=None)  # now allowed
    assert await world.role_of("alice", world.private_id) == "editor"
    with pytest.raises(ConflictError):
        await service.leave(PEOPLE["bob"], world.private_id)  # bob is now the last owner


async def test_removing_someone_who_is_not_a_member_is_not_found(world: World) -> None:
    service = world.service()
    with pytest.raises(NotFoundError):
        await service.remove_member(await world.access("alice", "private"), "eve")


# -- joining and leaving --------------------------------------------------------------------------

JOIN_TABLE = [
    # who, visibility, resulting role (None: Forbidden), announced
    ("eve", "open", "editor", True),  # anyone may join an open workspace, as editor
    ("eve", "private", None, False),  # a private one: an owner must add you
    ("guest", "private", None, False),
    ("service", "private", None, False),
    ("admin", "private", "editor", True),  # an administrator may join any
    ("carol", "open", "viewer", False),  # a member keeps its role
    ("alice", "private", "owner", False),
]


@pytest.mark.parametrize(("who", "visibility", "role", "announced"), JOIN_TABLE)
async def test_join(world: World, who: str, visibility: str, role: str | None, announced: bool) -> None:
    service = world.service()
    principal = PEOPLE[who]
    workspace_id = world.workspace(visibility)
    if role is None:
        with pytest.raises(Forbidden):
            await service.join(principal, workspace_id)
        assert await world.role_of(principal.user_id, workspace_id) is None
    else:
        member = await service.join(principal, workspace_id)
        assert member.role == role
        assert await world.role_of(principal.user_id, workspace_id) == role
    expected = [(workspace_id, "member_added", {"user_id": principal.user_id, "role": role})]
    assert world.events.announced == (expected if announced else [])


async def test_join_an_unknown_workspace(store: Store) -> None:
    world = World(store, unknown_id(), unknown_id())
    with pytest.raises(UnknownWorkspace):
        await world.service().join(PEOPLE["eve"], world.open_id)


async def test_leave(world: World) -> None:
    service = world.service()
    await service.leave(PEOPLE["bob"], world.private_id)
    assert await world.role_of("bob", world.private_id) is None
    assert world.cluster.commands == [RevokeAccess(world.private_id, "bob")]
    assert world.events.announced == [(world.private_id, "member_removed", {"user_id": "bob"})]
    with pytest.raises(NotFoundError) as not_member:
        await service.leave(PEOPLE["eve"], world.open_id)
    assert not_member.value.message == "you are not a member of this workspace"


async def test_leaving_an_unknown_workspace_is_404(store: Store) -> None:
    world = World(store, unknown_id(), unknown_id())
    with pytest.raises(Exception) as missing:  # noqa: PT011 - a service or a store error, both 404
        await world.service().leave(PEOPLE["bob"], world.open_id)
    error = missing.value
    as_client_sees_it = error if isinstance(error, ServiceError) else service_error_of(error)  # type: ignore[arg-type]
    assert as_client_sees_it.status_code == 404


# -- opening a document ---------------------------------------------------------------------------

OPEN_TABLE = [
    # who, visibility, role (None: Forbidden), member afterwards (stored role), announced member_added
    ("alice", "private", Role.OWNER, "owner", False),
    ("carol", "open", Role.VIEWER, "viewer", False),  # a viewer stays a viewer
    ("eve", "open", Role.EDITOR, "editor", True),  # a user opening an open workspace becomes an editor
    ("eve", "private", None, None, False),
    ("guest", "open", Role.EDITOR, None, False),  # guests are not made members
    ("guest", "private", None, None, False),
    ("service", "private", Role.EDITOR, None, False),  # nor services
    ("admin", "private", Role.OWNER, None, False),  # nor administrators
]


@pytest.mark.parametrize(("who", "visibility", "role", "stored", "announced"), OPEN_TABLE)
async def test_open(
    world: World, who: str, visibility: str, role: Role | None, stored: str | None, announced: bool
) -> None:
    service = world.service()
    principal = PEOPLE[who]
    workspace_id = world.workspace(visibility)
    if role is None:
        with pytest.raises(Forbidden):
            await service.open(principal, workspace_id)
    else:
        access = await service.open(principal, workspace_id)
        assert access.role == role
        assert access.member is (stored is not None)
    assert await world.role_of(principal.user_id, workspace_id) == stored
    expected = [(workspace_id, "member_added", {"user_id": principal.user_id, "role": "editor"})]
    assert world.events.announced == (expected if announced else [])


@pytest.mark.parametrize(
    ("auth", "auto_create", "creates"),
    [(True, False, False), (True, True, True), (False, False, True)],
    ids=["tokens", "tokens+AUTO_CREATE_WORKSPACES", "no-tokens"],
)
async def test_opening_an_unknown_workspace(
    store: Store, auth: bool, auto_create: bool, creates: bool
) -> None:
    world = World(store, unknown_id(), unknown_id())
    service = world.service(auth=auth, auto_create=auto_create)
    assert service.may_create is creates
    workspace_id = world.open_id
    if not creates:
        with pytest.raises(UnknownWorkspace):
            await service.open(PEOPLE["eve"], workspace_id)
        assert await store.workspaces.find(workspace_id=workspace_id) is None
        assert world.events.announced == []
        return
    access = await service.open(PEOPLE["eve"], workspace_id)
    assert (access.role, access.member) == (Role.OWNER, True)
    created = await store.workspaces.get(workspace_id=workspace_id)
    assert (created.name, created.visibility, created.owner_id) == (workspace_id, "open", "eve")
    assert await world.role_of("eve", workspace_id) == "owner"
    assert world.events.announced == [
        (workspace_id, "workspace_created", {"owner_id": "eve", "visibility": "open"})
    ]


# -- documents ------------------------------------------------------------------------------------

DELETE_DOCUMENT_TABLE = [
    ("alice", "private", True),
    ("bob", "private", True),
    ("admin", "private", True),
    ("service", "private", True),
    ("eve", "open", True),  # an editor of an open workspace
    ("carol", "private", False),  # a viewer cannot
    ("carol", "open", False),
]


@pytest.mark.parametrize(("who", "visibility", "allowed"), DELETE_DOCUMENT_TABLE)
async def test_deleting_a_document_needs_an_editor(
    world: World, who: str, visibility: str, allowed: bool
) -> None:
    service = world.service()
    workspace_id = world.workspace(visibility)
    document_id, _ = await world.store.documents.ensure(workspace_id, "notes.md")
    access = await world.access(who, visibility)
    if not allowed:
        with pytest.raises(Forbidden):
            await service.delete_document(access, "notes.md")
        assert await world.store.documents.exists(workspace_id, "notes.md")
        assert world.cluster.commands == []
        return
    with pytest.raises(BadRequest):
        await service.delete_document(access, "")  # the main document goes with the workspace
    await service.delete_document(access, "notes.md")
    assert not await world.store.documents.exists(workspace_id, "notes.md")
    assert world.cluster.commands == [CloseDocument(workspace_id, "notes.md", document_id)]
    assert world.events.announced == [(workspace_id, "document_deleted", {"path": "notes.md"})]


# -- listing and creating -------------------------------------------------------------------------

VISIBLE_TABLE = [
    # who, sees (open, private), role shown in (open, private)
    ("alice", (True, True), ("owner", "owner")),
    ("carol", (True, True), ("viewer", "viewer")),
    ("eve", (True, False), (None, None)),
    ("admin", (True, True), (None, None)),  # administrators see every workspace
]


@pytest.mark.parametrize(("who", "sees", "roles"), VISIBLE_TABLE)
async def test_visible(
    shared_world: World, who: str, sees: tuple[bool, bool], roles: tuple[Any, Any]
) -> None:
    world = shared_world
    found, total = await world.service().visible(PEOPLE[who], limit=10_000, offset=0)
    assert total >= len(found)
    shown = {workspace.id: role for workspace, role in found}
    assert (world.open_id in shown, world.private_id in shown) == sees
    expected = {
        workspace_id: role
        for workspace_id, role, seen in zip((world.open_id, world.private_id), roles, sees, strict=True)
        if seen
    }
    assert {k: v for k, v in shown.items() if k in (world.open_id, world.private_id)} == expected


async def test_create_makes_the_caller_owner_and_refuses_a_taken_id(world: World) -> None:
    service = world.service()
    workspace_id = unknown_id()
    created = await service.create(
        PEOPLE["eve"], workspace_id=workspace_id, name="Eve's", visibility=Visibility.PRIVATE
    )
    assert (created.id, created.visibility, created.owner_id) == (workspace_id, "private", "eve")
    assert await world.role_of("eve", workspace_id) == "owner"
    with pytest.raises(ConflictError):
        await service.create(PEOPLE["bob"], workspace_id=workspace_id, name="again")
    assert await world.role_of("bob", workspace_id) is None
    assert world.events.announced == [
        (workspace_id, "workspace_created", {"owner_id": "eve", "visibility": "private"})
    ]


# -- members' access kept between connections (MemberAccess) ---------------------------------------


class CountedReads:
    """Counts the store reads that decide access: whole rosters, and one user's role."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rosters = 0
        self.single = 0
        repository = store.workspaces
        roster, find_with_role = repository.roster, repository.find_with_role

        async def counted_roster(**kwargs: Any) -> Any:
            self.rosters += 1
            return await roster(**kwargs)

        async def counted_find_with_role(**kwargs: Any) -> Any:
            self.single += 1
            return await find_with_role(**kwargs)

        monkeypatch.setattr(repository, "roster", counted_roster)
        monkeypatch.setattr(repository, "find_with_role", counted_find_with_role)


async def test_the_first_member_to_connect_reads_every_members_access(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = CountedReads(world.store, monkeypatch)
    service = world.service()
    workspace_id = world.private_id
    roles = [(await service.open(PEOPLE[who], workspace_id)).role for who in ("alice", "bob", "carol")]
    assert roles == [Role.OWNER, Role.EDITOR, Role.VIEWER]
    assert (reads.rosters, reads.single) == (1, 0)
    # Someone who is no member is read alone each time; the roster is not read again.
    for _ in range(3):
        with pytest.raises(Forbidden):
            await service.open(PEOPLE["eve"], workspace_id)
    assert (reads.rosters, reads.single) == (1, 3)


async def test_members_connecting_at_once_share_one_roster_read(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = CountedReads(world.store, monkeypatch)
    service = world.service()
    who = ["alice", "bob", "carol"] * 3
    accesses = await asyncio.gather(*(service.open(PEOPLE[name], world.open_id) for name in who))
    assert [access.role for access in accesses] == [Role.OWNER, Role.EDITOR, Role.VIEWER] * 3
    assert (reads.rosters, reads.single) == (1, 0)


async def test_a_change_of_access_after_the_roster_was_read_is_followed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = CountedReads(world.store, monkeypatch)
    service = world.service()
    workspace_id = world.private_id
    alice = await service.open(PEOPLE["alice"], workspace_id)
    await service.set_member(alice, "bob", role="viewer", display_name=None)
    await service.set_member(alice, "eve", role="editor", display_name=None)
    await service.remove_member(alice, "carol")
    assert (await service.open(PEOPLE["bob"], workspace_id)).role == Role.VIEWER
    assert (await service.open(PEOPLE["eve"], workspace_id)).role == Role.EDITOR
    with pytest.raises(Forbidden):
        await service.open(PEOPLE["carol"], workspace_id)
    assert (reads.rosters, reads.single) == (1, 3)


async def test_a_roster_read_that_overlaps_a_change_of_access_is_not_kept(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = world.service()
    workspace_id = world.private_id
    repository = world.store.workspaces
    roster = repository.roster

    async def roster_then_bob_is_removed(**kwargs: Any) -> Any:
        found = await roster(**kwargs)  # bob still an editor in what was read
        await repository.remove_member(workspace_id=workspace_id, user_id="bob")
        world.cluster.run(RevokeAccess(workspace_id, "bob"))
        return found

    monkeypatch.setattr(repository, "roster", roster_then_bob_is_removed)
    assert (await service.open(PEOPLE["alice"], workspace_id)).role == Role.OWNER
    with pytest.raises(Forbidden):
        await service.open(PEOPLE["bob"], workspace_id)


async def test_a_workspace_over_the_roster_limit_is_read_member_by_member(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MemberAccess, "ROSTER_LIMIT", 2)  # three members
    reads = CountedReads(world.store, monkeypatch)
    service = world.service()
    for _ in range(2):  # the second time from what was kept
        for who in ("alice", "bob", "carol"):
            await service.open(PEOPLE[who], world.open_id)
    assert (reads.rosters, reads.single) == (1, 3)


async def test_the_roster_of_an_unknown_workspace_is_read_once_it_exists(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(store, unknown_id(), unknown_id())
    reads = CountedReads(store, monkeypatch)
    service = world.service(auth=True, auto_create=True)
    assert (await service.open(PEOPLE["eve"], world.open_id)).role == Role.OWNER  # creates it
    await store.workspaces.set_member(workspace_id=world.open_id, user_id="bob", role="viewer")
    assert (await service.open(PEOPLE["bob"], world.open_id)).role == Role.VIEWER
    assert (await service.open(PEOPLE["eve"], world.open_id)).role == Role.OWNER
    assert reads.rosters == 2


async def test_a_connection_opened_after_a_change_of_access_is_not_answered_by_a_read_from_before_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MemberAccess, "ROSTER_LIMIT", 0)  # every member read alone
    service = world.service()
    workspace_id = world.private_id
    alice = await service.open(PEOPLE["alice"], workspace_id)
    repository = world.store.workspaces
    find_with_role = repository.find_with_role
    in_flight, release = asyncio.Event(), asyncio.Event()

    async def slow_first_read(**kwargs: Any) -> Any:
        found = await find_with_role(**kwargs)
        if not in_flight.is_set():  # bob's first read: what it found is held until released
            in_flight.set()
            await release.wait()
        return found

    monkeypatch.setattr(repository, "find_with_role", slow_first_read)
    before = asyncio.ensure_future(service.open(PEOPLE["bob"], workspace_id))
    await asyncio.wait_for(in_flight.wait(), 5)
    await service.remove_member(alice, "bob")
    after = asyncio.ensure_future(service.open(PEOPLE["bob"], workspace_id))
    with pytest.raises(Forbidden):
        await asyncio.wait_for(asyncio.shield(after), 5)  # read anew, without waiting for the old read
    release.set()
    assert (await before).role == Role.EDITOR  # began before the change: as it was then


def test_the_rosters_read_are_remembered_up_to_the_cache_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MemberAccess, "SIZE", 100)
    cache = MemberAccess()
    assert all(cache.roster_due(f"w-{n}") for n in range(1000))
    assert len(cache.rosters) <= 100
    assert not cache.roster_due("w-999")  # the latest are remembered
