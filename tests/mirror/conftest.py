"""Mirror fixtures: every test runs on SQLite (a temp file) and on PostgreSQL (its own schema)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
import pytest

from toolwarden.models import (
    ApprovalRecord,
    ApprovalState,
    AttemptOutcome,
    AttemptResult,
    LiveDetails,
    RunEvent,
    RunSpec,
    RunState,
    RunStatus,
    approval_id,
)

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_DB = "test"
T = TypeVar("T")

_pg_ok: bool | None = None


def pg_reachable() -> bool:
    global _pg_ok
    if _pg_ok is None:
        try:
            psycopg.connect(f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{PG_DB}", connect_timeout=3).close()
            _pg_ok = True
        except psycopg.Error:
            _pg_ok = False
    return _pg_ok


def pg_url(schema: str, *, port: int = PG_PORT) -> str:
    options = quote(f"-csearch_path={schema}")
    return f"postgresql+psycopg://postgres@{PG_HOST}:{port}/{PG_DB}?options={options}"


def require_pg() -> None:
    if not pg_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable (required in CI)")
        pytest.skip(f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable")


def _admin(sql: str) -> None:
    with psycopg.connect(f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{PG_DB}", autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture
def pg_schema() -> Iterator[str]:
    require_pg()
    schema = f"tw_{uuid.uuid4().hex}"
    _admin(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        _admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A URL to an empty, never migrated database of the parametrized backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'mirror.db'}"
    schema: str = request.getfixturevalue("pg_schema")
    return pg_url(schema)


@pytest.fixture
def db_url(empty_url: str) -> str:
    """A URL to a database migrated to head."""
    from toolwarden.mirror.migrate import upgrade

    upgrade(empty_url)
    return empty_url


def wait_for(check: Callable[[], T], timeout: float = 20.0, interval: float = 0.02) -> T:
    """Poll `check()` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")
        time.sleep(interval)


T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def make_approval(
    run_id: str,
    key: str = "deploy",
    *,
    state: ApprovalState = ApprovalState.PENDING,
    requested_at: datetime = T0,
    decided_after: timedelta | None = None,
    by: str | None = None,
) -> ApprovalRecord:
    decided_at = requested_at + decided_after if decided_after is not None else None
    return ApprovalRecord(
        approval_id=approval_id(run_id, key),
        run_id=run_id,
        key=key,
        summary=f"may I {key}?",
        details={"target": "prod", "n": 3},
        state=state,
        requested_at=requested_at,
        expires_at=requested_at + timedelta(hours=24),
        decided_at=decided_at,
        decided_by=by if decided_at else None,
        reason="looks fine" if decided_at else None,
        response={"ok": True} if decided_at else None,
    )


def make_status(
    run_id: str,
    *,
    tool: str = "deploy",
    state: RunState = RunState.RUNNING,
    started_at: datetime = T0,
    updated_at: datetime | None = None,
    ended_at: datetime | None = None,
    attempt: int = 1,
    retry_count: int = 0,
    approvals: list[ApprovalRecord] | None = None,
    live: LiveDetails | None = None,
    pid: int | None = 4242,
) -> RunStatus:
    argv = [tool, "--flag", "x y"]
    last = None
    if state.terminal:
        last = AttemptResult(
            attempt=attempt,
            outcome=AttemptOutcome.HUNG if state is RunState.HUNG else AttemptOutcome.SUCCEEDED,
            exit_code=0,
            pid=pid,
            pgid=pid,
            host="box",
            started_at=started_at,
            ended_at=ended_at,
            progress=1.0,
            message="done",
        )
    return RunStatus(
        run_id=run_id,
        tool_name=tool,
        argv=argv,
        state=state,
        attempt=attempt,
        retry_count=retry_count,
        started_at=started_at,
        updated_at=updated_at or ended_at or started_at,
        ended_at=ended_at,
        exit_code=0 if state is RunState.SUCCEEDED else None,
        last_attempt=last,
        live=live,
        approvals=approvals or [],
        spec=RunSpec(
            run_id=run_id,
            tool_name=tool,
            argv=argv,
            timeout=timedelta(minutes=10),
            hang_timeout=timedelta(seconds=90),
            retries=2,
        ),
    )


def make_events(start: int, stop: int, at: datetime = T0) -> list[RunEvent]:
    return [
        RunEvent(seq=i, at=at + timedelta(seconds=i), kind="output", data={"line": f"l{i}"})
        for i in range(start, stop)
    ]


def live(pid: int = 4242, message: str = "working", progress: float = 0.5) -> LiveDetails:
    return LiveDetails(
        attempt=1,
        pid=pid,
        pgid=pid,
        host="box",
        started_at=T0,
        last_heartbeat_at=datetime.now(UTC),
        progress=progress,
        message=message,
    )
