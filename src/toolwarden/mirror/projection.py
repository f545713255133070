"""Pure projection of runs, approvals, events and heartbeats onto the mirror tables.

Every write is an idempotent upsert: runs by `run_id`, approvals by `approval_id`, events by
`(run_id, seq)`. Applying the same input twice, or an older snapshot after a newer one, leaves
the rows as they were (a run row only moves forward in `updated_at`; a decided approval never
goes back to pending; an event is inserted once and never changed).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, bindparam, func, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from toolwarden.mirror.schema import approvals, run_events, tool_runs
from toolwarden.models import (
    ApprovalRecord,
    ApprovalState,
    AttemptResult,
    LiveDetails,
    RunEvent,
    RunStatus,
    RunUpdate,
)

Executor = Connection | Session

# Columns a snapshot only fills when it knows them: they come from the live heartbeat details
# or the last attempt, and a snapshot without either must not wipe what a heartbeat wrote.
_LIVE_COLUMNS = (
    "pid",
    "pgid",
    "host",
    "attempt_started_at",
    "last_heartbeat_at",
    "last_output_at",
    "progress",
    "message",
    "stdout_path",
    "stderr_path",
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value.total_seconds())


def _dialect_name(executor: Executor) -> str:
    if isinstance(executor, Session):
        return executor.get_bind().dialect.name
    return executor.dialect.name


def _dialect(executor: Executor) -> str:
    name = _dialect_name(executor)
    if name not in ("postgresql", "sqlite"):
        raise ValueError(f"unsupported mirror database {name!r}: use SQLite or PostgreSQL")
    return name


def _insert(dialect: str, table: Any) -> Any:
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


# The three upserts are built once per dialect as single-row statements and executed with a list
# of parameter dicts: SQLAlchemy compiles each once (then serves it from its compiled cache)
# and batches the rows into multi-row statements itself ("insertmanyvalues"), instead of a new
# multi-row VALUES statement, of a new shape to compile, per batch.


@cache
def _upsert_runs_stmt(dialect: str) -> Any:
    stmt = _insert(dialect, tool_runs)
    excluded = stmt.excluded
    values: dict[str, Any] = {}
    for column in tool_runs.columns:
        if column.name == "run_id":
            continue
        if column.name in _LIVE_COLUMNS:
            values[column.name] = func.coalesce(excluded[column.name], column)
        else:
            values[column.name] = excluded[column.name]
    return stmt.on_conflict_do_update(
        index_elements=[tool_runs.c.run_id],
        set_=values,
        where=tool_runs.c.updated_at <= excluded.updated_at,
    ).returning(tool_runs.c.run_id)


@cache
def _upsert_approvals_stmt(dialect: str) -> Any:
    stmt = _insert(dialect, approvals)
    excluded = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[approvals.c.approval_id],
        set_={c.name: excluded[c.name] for c in approvals.columns if c.name != "approval_id"},
        where=or_(
            approvals.c.state == ApprovalState.PENDING.value,
            excluded.state != ApprovalState.PENDING.value,
        ),
    )


@cache
def _insert_events_stmt(dialect: str) -> Any:
    stmt = _insert(dialect, run_events)
    return stmt.on_conflict_do_nothing(index_elements=[run_events.c.run_id, run_events.c.seq])


def _current_attempt(status: RunStatus) -> LiveDetails | AttemptResult | None:
    """The newest source of per-attempt facts: live heartbeat details or the last attempt."""
    live, last = status.live, status.last_attempt
    if live is None:
        return last
    if last is None:
        return live
    return live if live.attempt >= last.attempt else last


def run_row(status: RunStatus, now: datetime | None = None) -> dict[str, Any]:
    """The `tool_runs` row for one status snapshot."""
    spec = status.spec
    current = _current_attempt(status)
    live = status.live
    return {
        "run_id": status.run_id,
        "tool_name": status.tool_name,
        "profile": spec.profile if spec else None,
        "command": list(status.argv),
        "cwd": spec.cwd if spec else None,
        "state": status.state.value,
        "attempt": status.attempt,
        "retry_count": status.retry_count,
        "max_retries": spec.retries if spec else None,
        "pid": current.pid if current else None,
        "pgid": current.pgid if current else None,
        "host": current.host if current else None,
        "exit_code": status.exit_code,
        "signal": status.signal,
        "error": status.error,
        "started_at": status.started_at,
        "ended_at": status.ended_at,
        "updated_at": status.updated_at,
        "attempt_started_at": current.started_at if current else None,
        "last_heartbeat_at": live.last_heartbeat_at if live else None,
        "last_output_at": live.last_output_at if live else None,
        "progress": current.progress if current else None,
        "message": current.message if current else None,
        "timeout_s": _seconds(spec.timeout) if spec else None,
        "hang_timeout_s": _seconds(spec.hang_timeout) if spec else None,
        "pending_approvals": len(status.pending_approvals),
        "stdout_path": current.stdout_path if current else None,
        "stderr_path": current.stderr_path if current else None,
        "mirrored_at": now or _utcnow(),
    }


def approval_row(record: ApprovalRecord) -> dict[str, Any]:
    return {
        "approval_id": record.approval_id,
        "run_id": record.run_id,
        "key": record.key,
        "summary": record.summary,
        "details": record.details,
        "source": record.source.value,
        "state": record.state.value,
        "on_expiry": record.on_expiry.value,
        "requested_at": record.requested_at,
        "expires_at": record.expires_at,
        "decided_at": record.decided_at,
        "decided_by": record.decided_by,
        "reason": record.reason,
        "response": record.response,
    }


def event_row(run_id: str, event: RunEvent) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "seq": event.seq,
        "at": event.at,
        "kind": event.kind,
        "data": dict(event.data),
    }


def upsert_runs(executor: Executor, statuses: Sequence[RunStatus]) -> set[str]:
    """Upsert run rows; return the ids whose row was written (not older than the stored one)."""
    if not statuses:
        return set()
    now = _utcnow()
    latest: dict[str, RunStatus] = {}
    for status in statuses:  # one row per run per statement; the newest snapshot wins
        known = latest.get(status.run_id)
        if known is None or status.updated_at >= known.updated_at:
            latest[status.run_id] = status
    rows = [run_row(status, now) for status in latest.values()]
    # Only rows actually inserted or updated come back (the WHERE skips older snapshots).
    result = executor.execute(_upsert_runs_stmt(_dialect(executor)), rows)
    return {row[0] for row in result}


def upsert_approvals(executor: Executor, records: Sequence[ApprovalRecord]) -> None:
    """Upsert approval rows; a decided approval is never reverted to pending."""
    if not records:
        return
    latest = {record.approval_id: record for record in records}
    rows = [approval_row(record) for record in latest.values()]
    executor.execute(_upsert_approvals_stmt(_dialect(executor)), rows)


def insert_events(executor: Executor, items: Sequence[tuple[str, RunEvent]]) -> None:
    """Insert events that are not there yet; `(run_id, seq)` already present is skipped."""
    if not items:
        return
    unique = {(run_id, event.seq): event_row(run_id, event) for run_id, event in items}
    executor.execute(_insert_events_stmt(_dialect(executor)), list(unique.values()))


def apply_updates(executor: Executor, updates: Sequence[RunUpdate]) -> None:
    """Project several updates in the caller's transaction (runs, then approvals, then events)."""
    if not updates:
        return
    written = upsert_runs(executor, [u.status for u in updates])
    # Approvals travel with their run's snapshot: a stale snapshot's approvals are stale too.
    upsert_approvals(
        executor,
        [a for u in updates if u.status.run_id in written for a in u.status.approvals],
    )
    insert_events(executor, [(u.status.run_id, e) for u in updates for e in u.events])


def apply_update(session_or_conn: Executor, update: RunUpdate) -> None:
    """Project one run snapshot and its new events (idempotent; does not commit)."""
    apply_updates(session_or_conn, [update])


_HEARTBEAT = (
    update(tool_runs)
    .where(tool_runs.c.run_id == bindparam("p_run_id"), tool_runs.c.ended_at.is_(None))
    .values(
        pid=func.coalesce(bindparam("p_pid"), tool_runs.c.pid),
        pgid=func.coalesce(bindparam("p_pgid"), tool_runs.c.pgid),
        host=func.coalesce(bindparam("p_host"), tool_runs.c.host),
        attempt_started_at=func.coalesce(
            bindparam("p_attempt_started_at", type_=tool_runs.c.attempt_started_at.type),
            tool_runs.c.attempt_started_at,
        ),
        last_heartbeat_at=func.coalesce(
            bindparam("p_last_heartbeat_at", type_=tool_runs.c.last_heartbeat_at.type),
            tool_runs.c.last_heartbeat_at,
        ),
        last_output_at=func.coalesce(
            bindparam("p_last_output_at", type_=tool_runs.c.last_output_at.type),
            tool_runs.c.last_output_at,
        ),
        progress=func.coalesce(bindparam("p_progress"), tool_runs.c.progress),
        message=func.coalesce(bindparam("p_message"), tool_runs.c.message),
        stdout_path=func.coalesce(bindparam("p_stdout_path"), tool_runs.c.stdout_path),
        stderr_path=func.coalesce(bindparam("p_stderr_path"), tool_runs.c.stderr_path),
        mirrored_at=bindparam("p_mirrored_at", type_=tool_runs.c.mirrored_at.type),
    )
)


def heartbeat_params(run_id: str, live: LiveDetails, now: datetime) -> dict[str, Any]:
    return {
        "p_run_id": run_id,
        "p_pid": live.pid,
        "p_pgid": live.pgid,
        "p_host": live.host,
        "p_attempt_started_at": live.started_at,
        "p_last_heartbeat_at": live.last_heartbeat_at or now,
        "p_last_output_at": live.last_output_at,
        "p_progress": live.progress,
        "p_message": live.message,
        "p_stdout_path": live.stdout_path,
        "p_stderr_path": live.stderr_path,
        "p_mirrored_at": now,
    }


def apply_heartbeats(executor: Executor, items: Sequence[tuple[str, LiveDetails]]) -> None:
    """Write heartbeat details onto existing, unfinished run rows (unknown runs are skipped)."""
    if not items:
        return
    now = _utcnow()
    latest = {run_id: live for run_id, live in items}
    params = [heartbeat_params(run_id, live, now) for run_id, live in latest.items()]
    executor.execute(_HEARTBEAT, params)


def apply_heartbeat(conn: Executor, run_id: str, live: LiveDetails) -> None:
    """Write one heartbeat's live details onto the run row (does not commit)."""
    apply_heartbeats(conn, [(run_id, live)])
