"""The schema, as SQLAlchemy Core tables. Changes go through an Alembic migration, never by hand."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("visibility", String(16), nullable=False, server_default="open"),  # open | private
    Column("owner_id", String(255), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

workspace_members = Table(
    "workspace_members",
    metadata,
    Column("workspace_id", String(255), ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(255), primary_key=True, index=True),
    Column("role", String(16), nullable=False),  # owner | editor | viewer
    Column("display_name", String(255), nullable=True),
    Column("joined_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

documents = Table(
    "documents",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "workspace_id",
        String(255),
        ForeignKey("workspaces.id", ondelete="CASCADE", name="fk_documents_workspace_id_workspaces"),
        nullable=False,
    ),
    Column("path", String(1024), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("workspace_id", "path", name="uq_documents_workspace_path"),
)

# The clients' own Yjs updates, exactly as received. Rows are only ever deleted by compaction,
# in the same transaction that writes the snapshot containing them.
document_updates = Table(
    "document_updates",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "document_id",
        BigId,
        ForeignKey("documents.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One row per document: its own encoded state (``Doc.get_update()``) after every update row that
# compaction merged and deleted; ``merged_updates`` counts those rows.
document_snapshots = Table(
    "document_snapshots",
    metadata,
    Column("document_id", BigId, ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True),
    Column("state", LargeBinary, nullable=False),
    Column("merged_updates", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# The latest known execution state of each agent.
agents = Table(
    "agents",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("workspace_id", String(255), nullable=True, index=True),
    Column("started_by", String(255), nullable=True),  # who sent agent_execution_start
    Column("user_id", String(255), nullable=True),  # who the execution runs for
    Column("start_event_id", BigId, nullable=True),  # the event that started the execution
    Column("task", Text, nullable=True),
    Column("status", String(16), nullable=False),
    Column("progress", Float, nullable=False, server_default="0"),
    Column("current_step", Text, nullable=True),
    Column("result", Text, nullable=True),
    Column("execution_time", Float, nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
)

# Per-user subscriptions made over REST; they apply to every event connection of the user.
agent_subscriptions = Table(
    "agent_subscriptions",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("agent_id", String(255), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Every server-sent event, for resuming after a reconnect. Bounded by retention.
events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("topic", String(300), nullable=False),  # agent:{id} | workspace:{id}
    Column("type", String(64), nullable=False),
    Column("data", Text, nullable=False),  # JSON
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_events_topic_id", "topic", "id"),
)
