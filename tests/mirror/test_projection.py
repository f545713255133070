"""Idempotent upserts: replays and retries never duplicate or regress a row."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from tests.mirror.conftest import T0, live, make_approval, make_events, make_status
from toolwarden.mirror import apply_heartbeat, apply_update, apply_updates, make_engine
from toolwarden.mirror.schema import approvals, run_events, tool_runs
from toolwarden.models import ApprovalState, LiveDetails, RunState, RunUpdate


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def dump(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every mirror row, minus the write timestamp (which records when, not what)."""
    with engine.connect() as conn:
        runs = [
            {k: v for k, v in row._asdict().items() if k != "mirrored_at"}
            for row in conn.execute(select(tool_runs).order_by(tool_runs.c.run_id))
        ]
        apps = [row._asdict() for row in conn.execute(select(approvals).order_by(approvals.c.approval_id))]
        events = [
            {k: v for k, v in row._asdict().items() if k != "id"}
            for row in conn.execute(select(run_events).order_by(run_events.c.run_id, run_events.c.seq))
        ]
    return {"runs": runs, "approvals": apps, "events": events}


def apply(engine: Engine, update: RunUpdate) -> None:
    with engine.begin() as conn:
        apply_update(conn, update)


def test_snapshot_is_projected(engine: Engine) -> None:
    status = make_status(
        "r1",
        approvals=[make_approval("r1")],
        live=live(pid=77, message="compiling", progress=0.25),
    )
    apply(engine, RunUpdate(status=status, events=make_events(1, 4)))
    rows = dump(engine)
    run = rows["runs"][0]
    assert run["command"] == ["deploy", "--flag", "x y"]
    assert (run["state"], run["attempt"], run["retry_count"], run["max_retries"]) == (
        "running",
        1,
        0,
        2,
    )
    assert (run["pid"], run["pgid"], run["host"]) == (77, 77, "box")
    assert (run["progress"], run["message"]) == (0.25, "compiling")
    assert (run["timeout_s"], run["hang_timeout_s"]) == (600.0, 90.0)
    assert run["pending_approvals"] == 1
    assert run["started_at"] == T0 and run["started_at"].tzinfo is UTC
    approval = rows["approvals"][0]
    assert approval["approval_id"] == "r1/deploy"
    assert approval["details"] == {"target": "prod", "n": 3}
    assert approval["response"] is None and approval["decided_at"] is None
    assert [e["seq"] for e in rows["events"]] == [1, 2, 3]
    assert rows["events"][0]["data"] == {"line": "l1"}


def test_same_update_twice_gives_same_rows(engine: Engine) -> None:
    update = RunUpdate(status=make_status("r1", approvals=[make_approval("r1")]), events=make_events(1, 5))
    apply(engine, update)
    first = dump(engine)
    apply(engine, update)
    apply(engine, update)
    assert dump(engine) == first
    assert len(first["events"]) == 4


def test_events_are_never_duplicated_and_never_rewritten(engine: Engine) -> None:
    apply(engine, RunUpdate(status=make_status("r1"), events=make_events(1, 4)))
    # An overlapping replay whose old events carry different data: the stored ones stay.
    replay = make_events(2, 7)
    replay[0] = replay[0].model_copy(update={"data": {"line": "rewritten"}})
    apply(
        engine,
        RunUpdate(status=make_status("r1", updated_at=T0 + timedelta(1)), events=replay),
    )
    events = dump(engine)["events"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[1]["data"] == {"line": "l2"}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(run_events)).scalar() == 6


def test_older_snapshot_does_not_overwrite_newer(engine: Engine) -> None:
    done = make_status(
        "r1",
        state=RunState.SUCCEEDED,
        ended_at=T0 + timedelta(minutes=5),
        approvals=[make_approval("r1", state=ApprovalState.APPROVED, decided_after=timedelta(1))],
    )
    apply(engine, RunUpdate(status=done))
    stale = make_status("r1", state=RunState.RUNNING, approvals=[make_approval("r1")])
    apply(engine, RunUpdate(status=stale, events=make_events(1, 2)))
    rows = dump(engine)
    assert rows["runs"][0]["state"] == "succeeded"
    assert rows["approvals"][0]["state"] == "approved"
    assert len(rows["events"]) == 1  # events are facts: kept even from a stale snapshot


def test_decided_approval_never_goes_back_to_pending(engine: Engine) -> None:
    decided = make_approval("r1", state=ApprovalState.REJECTED, decided_after=timedelta(60))
    apply(engine, RunUpdate(status=make_status("r1", approvals=[decided])))
    # Same run timestamp (e.g. a replay assembled from an older query): still not reverted.
    apply(engine, RunUpdate(status=make_status("r1", approvals=[make_approval("r1")])))
    approval = dump(engine)["approvals"][0]
    assert approval["state"] == "rejected"
    assert approval["decided_at"] == T0 + timedelta(60)


def test_heartbeat_updates_live_columns_only_on_unfinished_runs(engine: Engine) -> None:
    apply(engine, RunUpdate(status=make_status("r1", pid=None)))
    beat = live(pid=501, message="step 3", progress=0.75)
    with engine.begin() as conn:
        apply_heartbeat(conn, "r1", beat)
        apply_heartbeat(conn, "unknown-run", beat)  # no row: nothing happens
    run = dump(engine)["runs"]
    assert len(run) == 1
    assert (run[0]["pid"], run[0]["message"], run[0]["progress"]) == (501, "step 3", 0.75)
    assert run[0]["last_heartbeat_at"] == beat.last_heartbeat_at
    # A later snapshot without live details keeps what the heartbeat wrote.
    apply(engine, RunUpdate(status=make_status("r1", updated_at=T0 + timedelta(1), pid=None)))
    assert dump(engine)["runs"][0]["pid"] == 501
    # Once the run ended, late heartbeats no longer touch it.
    apply(
        engine,
        RunUpdate(status=make_status("r1", state=RunState.SUCCEEDED, ended_at=T0 + timedelta(2), pid=501)),
    )
    with engine.begin() as conn:
        apply_heartbeat(conn, "r1", LiveDetails(pid=999, message="late"))
    run = dump(engine)["runs"][0]
    assert (run["pid"], run["message"]) == (501, "done")


def test_works_through_an_orm_session(engine: Engine) -> None:
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        apply_update(session, RunUpdate(status=make_status("r1"), events=make_events(1, 2)))
        session.commit()
    assert len(dump(engine)["events"]) == 1


def test_naive_datetimes_are_refused(engine: Engine) -> None:
    status = make_status("r1").model_copy(update={"started_at": T0.replace(tzinfo=None)})
    with pytest.raises(Exception, match="naive datetime"), engine.begin() as conn:
        apply_update(conn, RunUpdate(status=status))


def test_each_upsert_is_compiled_once_whatever_the_batch_size(engine: Engine) -> None:
    from sqlalchemy import event

    compiled: dict[str, set[int]] = {}

    def note(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        table = statement.split()[2] if statement.startswith("INSERT INTO") else None
        if table is not None:
            compiled.setdefault(table, set()).add(id(context.compiled))

    event.listen(engine, "before_cursor_execute", note)
    try:
        for version, n in enumerate((1, 3, 7, 2, 5, 4)):
            updates = [
                RunUpdate(
                    status=make_status(
                        f"r{i}", updated_at=T0 + timedelta(version), approvals=[make_approval(f"r{i}")]
                    ),
                    events=make_events(1 + 2 * version, 3 + 2 * version),
                )
                for i in range(n)
            ]
            with engine.begin() as conn:
                apply_updates(conn, updates)
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert set(compiled) == {"tool_runs", "approvals", "run_events"}
    # One compiled form for a single row and one for many, however many rows (not one per size).
    assert all(len(ids) <= 2 for ids in compiled.values()), compiled
    assert len(dump(engine)["runs"]) == 7
