"""The mirror's tables: one module of SQLAlchemy 2 typed models.

The models describe the schema at the newest migration (`head`); the migrations in
`toolwarden/mirror/migrations/versions/` are what creates it, and a test checks that the two
never drift apart. Every timestamp is stored as UTC and read back timezone-aware, on SQLite as
well as on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime, stored as UTC; SQLite (which keeps no zone) reads back as UTC too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the mirror stores aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def Json() -> JSON:
    """JSON where Python `None` is SQL NULL (not the JSON literal `null`)."""
    return JSON(none_as_null=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ToolRun(Base):
    """One row per run (= Temporal workflow id), overwritten by each newer snapshot."""

    __tablename__ = "tool_runs"

    run_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    tool_name: Mapped[str] = mapped_column(String(200))
    profile: Mapped[str | None] = mapped_column(String(200))
    command: Mapped[list[str]] = mapped_column(Json())
    cwd: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int | None] = mapped_column(Integer)
    pid: Mapped[int | None] = mapped_column(Integer)
    pgid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    signal: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempt_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_output_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    progress: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str | None] = mapped_column(Text)
    timeout_s: Mapped[float | None] = mapped_column(Float)
    hang_timeout_s: Mapped[float | None] = mapped_column(Float)
    pending_approvals: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    stdout_path: Mapped[str | None] = mapped_column(Text)
    stderr_path: Mapped[str | None] = mapped_column(Text)
    mirrored_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index(None, "tool_name", "started_at"),
        Index(None, "state", "updated_at"),
        Index(None, "started_at"),
    )


class Approval(Base):
    """One row per approval request ("RUN_ID/KEY"), following it from pending to decided."""

    __tablename__ = "approvals"

    approval_id: Mapped[str] = mapped_column(String(400), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(200), ForeignKey("tool_runs.run_id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    summary: Mapped[str] = mapped_column(Text)
    details: Mapped[Any] = mapped_column(Json(), nullable=True)
    source: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    on_expiry: Mapped[str] = mapped_column(String(16))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
    response: Mapped[Any] = mapped_column(Json(), nullable=True)

    __table_args__ = (
        Index(None, "run_id"),
        Index(None, "state", "requested_at"),
        Index(None, "decided_at"),
    )


class RunEventRow(Base):
    """A run's append-only event log; `(run_id, seq)` is unique, so replays add nothing."""

    __tablename__ = "run_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(200), ForeignKey("tool_runs.run_id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(Json())

    __table_args__ = (
        UniqueConstraint("run_id", "seq"),
        Index(None, "kind", "at"),
    )


tool_runs = cast(Table, ToolRun.__table__)
approvals = cast(Table, Approval.__table__)
run_events = cast(Table, RunEventRow.__table__)
