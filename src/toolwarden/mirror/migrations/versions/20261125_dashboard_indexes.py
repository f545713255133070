"""Dashboard indexes; run profile, cwd, retry limit, attempt start, log paths, mirrored_at.

Revision ID: 8a4e6b0c5d21
Revises: 3f1c2a7d9b10
Create Date: 2026-11-25 10:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8a4e6b0c5d21"
down_revision: str | Sequence[str] | None = "3f1c2a7d9b10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEW_RUN_COLUMNS = (
    "profile",
    "cwd",
    "max_retries",
    "attempt_started_at",
    "pending_approvals",
    "stdout_path",
    "stderr_path",
    "mirrored_at",
)


def upgrade() -> None:
    # Plain ADD/DROP COLUMN (SQLite >= 3.35 has both), so SQLite never copies the table.
    op.add_column("tool_runs", sa.Column("profile", sa.String(200), nullable=True))
    op.add_column("tool_runs", sa.Column("cwd", sa.Text(), nullable=True))
    op.add_column("tool_runs", sa.Column("max_retries", sa.Integer(), nullable=True))
    op.add_column("tool_runs", sa.Column("attempt_started_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "tool_runs",
        sa.Column("pending_approvals", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column("tool_runs", sa.Column("stdout_path", sa.Text(), nullable=True))
    op.add_column("tool_runs", sa.Column("stderr_path", sa.Text(), nullable=True))
    op.add_column("tool_runs", sa.Column("mirrored_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f("ix_tool_runs_tool_name_started_at"), "tool_runs", ["tool_name", "started_at"])
    op.create_index(op.f("ix_tool_runs_state_updated_at"), "tool_runs", ["state", "updated_at"])
    op.create_index(op.f("ix_tool_runs_started_at"), "tool_runs", ["started_at"])
    op.create_index(op.f("ix_approvals_state_requested_at"), "approvals", ["state", "requested_at"])
    op.create_index(op.f("ix_approvals_decided_at"), "approvals", ["decided_at"])
    op.create_index(op.f("ix_run_events_kind_at"), "run_events", ["kind", "at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_run_events_kind_at"), table_name="run_events")
    op.drop_index(op.f("ix_approvals_decided_at"), table_name="approvals")
    op.drop_index(op.f("ix_approvals_state_requested_at"), table_name="approvals")
    op.drop_index(op.f("ix_tool_runs_started_at"), table_name="tool_runs")
    op.drop_index(op.f("ix_tool_runs_state_updated_at"), table_name="tool_runs")
    op.drop_index(op.f("ix_tool_runs_tool_name_started_at"), table_name="tool_runs")
    for name in reversed(_NEW_RUN_COLUMNS):
        op.drop_column("tool_runs", name)
