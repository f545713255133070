"""The four dashboard queries on rows that real supervised runs wrote, on SQLite and PostgreSQL.

A worker with the mirror on runs real tools against the session's dev server: a success and a
hang of one tool, a failure after one retry, an approval that a person approves, one left
pending, and a tool that heartbeats progress. Once the mirror has caught up with what Temporal
says, each query must return the figures those runs imply.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import pytest
from sqlalchemy import Engine, select
from temporalio.client import Client

from tests.support import eventually, tool
from toolwarden.client import RunHandle, Supervisor
from toolwarden.config import MirrorSettings, Settings
from toolwarden.mirror import MirrorWriter, make_engine
from toolwarden.mirror.queries import run_dashboard_query
from toolwarden.mirror.schema import approvals, tool_runs
from toolwarden.models import ApprovalState, RunState, RunStatus
from toolwarden.worker.runner import build_worker

T = TypeVar("T")


async def until(check: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    """`eventually` for an async check, typed for mypy (its union signature confuses it)."""
    value: T = await eventually(cast(Callable[[], Any], check), timeout=timeout)
    return value


def rows(engine: Engine, table: Any) -> dict[str, dict[str, Any]]:
    key = table.primary_key.columns.values()[0]
    with engine.connect() as conn:
        return {r._mapping[key.name]: dict(r._mapping) for r in conn.execute(select(table))}


def query(engine: Engine, name: str, since: datetime) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return run_dashboard_query(conn, name, since=since)


@pytest.fixture
async def mirrored(
    db_url: str, client: Client, settings: Settings
) -> AsyncIterator[tuple[Supervisor, Engine, MirrorWriter]]:
    """A worker on the test's task queue whose mirror writes to `db_url` (one per backend)."""
    settings = settings.model_copy(
        update={
            "mirror": MirrorSettings(
                enabled=True, url=db_url, heartbeat_write_interval=timedelta(seconds=0.2)
            )
        }
    )
    settings.home.mkdir(parents=True, exist_ok=True)
    writer = MirrorWriter(db_url, settings.mirror, retry_initial=0.05)
    writer.start()
    engine = make_engine(db_url)
    try:
        async with build_worker(client, settings, sinks=[writer]):
            yield Supervisor(client, settings), engine, writer
    finally:
        await asyncio.to_thread(writer.stop, 10.0)
        engine.dispose()


async def pending_keys(handle: RunHandle) -> list[str]:
    return [a.key for a in (await handle.status()).pending_approvals]


async def test_dashboard_queries_on_real_runs(
    mirrored: tuple[Supervisor, Engine, MirrorWriter], run_id: Any
) -> None:
    supervisor, engine, writer = mirrored
    settings = supervisor.settings
    since = datetime.now(UTC) - timedelta(seconds=5)

    def spec(name: str, argv: list[str], **overrides: Any) -> Any:
        return settings.run_spec(run_id=run_id(name), argv=argv, name=name, overrides=overrides)

    ok = await supervisor.start_run(spec("svc", ["sh", "-c", "echo fine"]))
    hung = await supervisor.start_run(
        spec("svc", ["sleep", "3600"], hang_timeout=timedelta(seconds=1), kill_grace=timedelta(seconds=1))
    )
    failed = await supervisor.start_run(
        spec("fails", ["sh", "-c", "exit 3"], retries=1, retry_backoff=timedelta(seconds=0.1))
    )
    asked = await supervisor.start_run(spec("deploy", [*tool("approval_tool.py"), "ship", "Ship it?"]))
    waiting = await supervisor.start_run(spec("deploy", [*tool("approval_tool.py"), "hold", "Hold on?"]))
    beats = await supervisor.start_run(spec("beats", [*tool("beat_tool.py"), "4"]))

    # Heartbeats reach the row while the run is live: progress strictly between 0 and 1.
    def live_beat() -> dict[str, Any] | None:
        row = rows(engine, tool_runs).get(beats.run_id)
        if row and row["ended_at"] is None and row["progress"] is not None and 0 < row["progress"] < 1:
            return row
        return None

    beat_row = await until(lambda: asyncio.to_thread(live_beat), timeout=20)
    assert beat_row is not None
    assert beat_row["state"] == RunState.RUNNING.value
    assert re.fullmatch(r"\d+\.\ds of 4s", beat_row["message"]), beat_row["message"]
    assert beat_row["last_heartbeat_at"] is not None and beat_row["pid"]

    await until(lambda: pending_keys(asked), timeout=20)
    decided = await supervisor.decide(f"{asked.run_id}/ship", approve=True, by="ann", reason="ok")
    assert decided.took_effect
    await until(lambda: pending_keys(waiting), timeout=20)

    results = {h.run_id: await h.result() for h in (ok, hung, failed, asked, beats)}
    assert [r.state for r in results.values()] == [
        RunState.SUCCEEDED,
        RunState.HUNG,
        RunState.FAILED,
        RunState.SUCCEEDED,
        RunState.SUCCEEDED,
    ]
    handles = (ok, hung, failed, asked, waiting, beats)
    statuses: dict[str, RunStatus] = {h.run_id: await h.status() for h in handles}

    def caught_up() -> bool:
        mirrored_runs = rows(engine, tool_runs)
        return all(
            s.run_id in mirrored_runs
            and mirrored_runs[s.run_id]["state"] == s.state.value
            and mirrored_runs[s.run_id]["updated_at"] == s.updated_at
            for s in statuses.values()
        )

    await until(lambda: asyncio.to_thread(caught_up), timeout=30)
    run_rows = rows(engine, tool_runs)
    approval_rows = rows(engine, approvals)

    # Every launched run has its process id, and retries are counted.
    for run, status in statuses.items():
        row = run_rows[run]
        assert status.last_attempt is not None or status.live is not None, run
        expected_pid = (status.last_attempt or status.live).pid  # type: ignore[union-attr]
        assert row["pid"] == expected_pid and row["pid"], (run, row["pid"])
        assert row["retry_count"] == status.retry_count and row["attempt"] == status.attempt
    assert run_rows[failed.run_id]["retry_count"] == 1 and run_rows[failed.run_id]["attempt"] == 2
    assert run_rows[failed.run_id]["exit_code"] == 3
    assert run_rows[ok.run_id]["retry_count"] == 0
    assert run_rows[beats.run_id]["progress"] == 1.0 and run_rows[beats.run_id]["message"] == "done"
    assert run_rows[waiting.run_id]["pending_approvals"] == 1

    # 1. Pending approvals by age: the one left waiting, and only it.
    pending = await asyncio.to_thread(query, engine, "pending_approvals_by_age", since)
    assert [(p["approval_id"], p["tool_name"], p["summary"]) for p in pending] == [
        (f"{waiting.run_id}/hold", "deploy", "Hold on?")
    ]
    age_limit = (datetime.now(UTC) - since).total_seconds() + 2
    assert 0 <= pending[0]["age_seconds"] <= age_limit

    # 2. Runs by state per tool per hour (the test may straddle an hour: sum over hours).
    by_state = await asyncio.to_thread(query, engine, "runs_by_state_per_tool_per_hour", since)
    counts: Counter[tuple[str, str]] = Counter()
    for row in by_state:
        counts[(row["tool_name"], row["state"])] += row["runs"]
        started = {s.started_at.strftime("%Y-%m-%dT%H:00:00Z") for s in statuses.values()}
        assert row["hour"] in started
    assert counts == {
        ("svc", "succeeded"): 1,
        ("svc", "hung"): 1,
        ("fails", "failed"): 1,
        ("deploy", "succeeded"): 1,
        ("deploy", "waiting_approval"): 1,
        ("beats", "succeeded"): 1,
    }
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert await asyncio.to_thread(query, engine, "runs_by_state_per_tool_per_hour", later) == []

    # 3. Hang rate per tool, over finished runs only (the waiting run is not finished).
    rates = await asyncio.to_thread(query, engine, "hang_rate_per_tool", since)
    assert [(r["tool_name"], r["finished"], r["hung"], r["hang_rate"]) for r in rates] == [
        ("beats", 1, 0, 0.0),
        ("deploy", 1, 0, 0.0),
        ("fails", 1, 0, 0.0),
        ("svc", 2, 1, 0.5),
    ]

    # 4. Time from request to decision: the approved one, as Temporal timed it.
    record = next(a for a in statuses[asked.run_id].approvals if a.key == "ship")
    assert record.state is ApprovalState.APPROVED and record.decided_at is not None
    took = (record.decided_at - record.requested_at).total_seconds()
    times = await asyncio.to_thread(query, engine, "approval_decision_time", since)
    assert len(times) == 1, times
    row = times[0]
    assert (row["tool_name"], row["state"], row["decided"]) == ("deploy", "approved", 1)
    for column in ("avg_seconds", "min_seconds", "max_seconds"):
        assert row[column] == pytest.approx(took, abs=0.01), (column, row[column], took)
    assert 0 < took < age_limit
    assert approval_rows[f"{asked.run_id}/ship"]["decided_by"] == "ann"

    # The mirror kept up without errors or shed events.
    stats = writer.stats()
    assert stats.connected and stats.dropped_events_total == 0 and stats.heartbeats_written_total > 0

    # A person rejecting the waiting one empties the pending list and adds a rejected row.
    await supervisor.decide(f"{waiting.run_id}/hold", approve=False, by="bob")
    assert (await waiting.result()).state is RunState.FAILED

    def pending_gone() -> bool:
        return not query(engine, "pending_approvals_by_age", since)

    await until(lambda: asyncio.to_thread(pending_gone), timeout=20)
    times = await asyncio.to_thread(query, engine, "approval_decision_time", since)
    assert [(t["tool_name"], t["state"], t["decided"]) for t in times] == [
        ("deploy", "approved", 1),
        ("deploy", "rejected", 1),
    ]
