"""The dashboard queries from docs/database-schema.md return the expected figures on both DBs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.mirror.conftest import make_approval, make_status
from toolwarden.mirror import apply_updates, make_engine
from toolwarden.mirror.queries import QUERIES, run_dashboard_query
from toolwarden.models import ApprovalState, RunState, RunUpdate

DOC = Path(__file__).resolve().parents[2] / "docs" / "database-schema.md"
H = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)  # an hour boundary, well in the past
SINCE = H - timedelta(days=1)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    now = datetime.now(UTC)
    minute = timedelta(minutes=1)

    def ended(state: RunState, start: datetime) -> dict[str, object]:
        return {"state": state, "started_at": start, "ended_at": start + 5 * minute}

    runs = [
        # deploy: hour H has 2 succeeded + 1 hung; hour H+1 has 1 hung + 1 running.
        make_status("d1", tool="deploy", **ended(RunState.SUCCEEDED, H + minute)),  # type: ignore[arg-type]
        make_status("d2", tool="deploy", **ended(RunState.SUCCEEDED, H + 30 * minute)),  # type: ignore[arg-type]
        make_status("d3", tool="deploy", **ended(RunState.HUNG, H + 59 * minute)),  # type: ignore[arg-type]
        make_status("d4", tool="deploy", **ended(RunState.HUNG, H + 61 * minute)),  # type: ignore[arg-type]
        make_status("d5", tool="deploy", state=RunState.WAITING_APPROVAL, started_at=H + 90 * minute),
        # backup: 3 finished, none hung; one run before `since` does not count.
        make_status("b1", tool="backup", **ended(RunState.SUCCEEDED, H + 2 * minute)),  # type: ignore[arg-type]
        make_status("b2", tool="backup", **ended(RunState.FAILED, H + 3 * minute)),  # type: ignore[arg-type]
        make_status("b3", tool="backup", **ended(RunState.SUCCEEDED, H + 4 * minute)),  # type: ignore[arg-type]
        make_status("b0", tool="backup", **ended(RunState.HUNG, SINCE - timedelta(hours=2))),  # type: ignore[arg-type]
    ]
    approvals = {
        "d5": [
            make_approval("d5", "prod", requested_at=now - timedelta(hours=2)),
            make_approval("d5", "dns", requested_at=now - timedelta(minutes=10)),
        ],
        "d1": [
            make_approval(
                "d1",
                "go",
                state=ApprovalState.APPROVED,
                requested_at=H,
                decided_after=timedelta(seconds=30),
                by="ann",
            ),
            make_approval(
                "d1",
                "again",
                state=ApprovalState.APPROVED,
                requested_at=H,
                decided_after=timedelta(seconds=90),
                by="ann",
            ),
            make_approval(
                "d1",
                "late",
                state=ApprovalState.EXPIRED,
                requested_at=H,
                decided_after=timedelta(hours=24),
            ),
        ],
        "b1": [
            make_approval(
                "b1",
                "wipe",
                state=ApprovalState.REJECTED,
                requested_at=H,
                decided_after=timedelta(minutes=10),
                by="bob",
            ),
        ],
    }
    updates = [
        RunUpdate(status=r.model_copy(update={"approvals": approvals.get(r.run_id, [])})) for r in runs
    ]
    with engine.begin() as conn:
        apply_updates(conn, updates)
    yield engine
    engine.dispose()


def test_pending_approvals_by_age(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = run_dashboard_query(conn, "pending_approvals_by_age")
    assert [r["approval_id"] for r in rows] == ["d5/prod", "d5/dns"]
    assert {r["tool_name"] for r in rows} == {"deploy"}
    assert abs(rows[0]["age_seconds"] - 7200) <= 60
    assert abs(rows[1]["age_seconds"] - 600) <= 60


def test_runs_by_state_per_tool_per_hour(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = run_dashboard_query(conn, "runs_by_state_per_tool_per_hour", since=SINCE)
    got = [(r["hour"], r["tool_name"], r["state"], r["runs"]) for r in rows]
    h0, h1 = "2026-11-20T10:00:00Z", "2026-11-20T11:00:00Z"
    assert got == [
        (h0, "backup", "failed", 1),
        (h0, "backup", "succeeded", 2),
        (h0, "deploy", "hung", 1),
        (h0, "deploy", "succeeded", 2),
        (h1, "deploy", "hung", 1),
        (h1, "deploy", "waiting_approval", 1),
    ]


def test_hang_rate_per_tool(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = run_dashboard_query(conn, "hang_rate_per_tool", since=SINCE)
    got = {r["tool_name"]: (r["finished"], r["hung"], r["hang_rate"]) for r in rows}
    assert got == {"backup": (3, 0, 0.0), "deploy": (4, 2, 0.5)}


def test_time_from_request_to_decision(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = run_dashboard_query(conn, "approval_decision_time", since=SINCE)
    got = {(r["tool_name"], r["state"]): r for r in rows}
    assert set(got) == {("deploy", "approved"), ("backup", "rejected")}
    approved = got["deploy", "approved"]
    assert approved["decided"] == 2
    assert approved["avg_seconds"] == pytest.approx(60, abs=0.01)
    assert approved["min_seconds"] == pytest.approx(30, abs=0.01)
    assert approved["max_seconds"] == pytest.approx(90, abs=0.01)
    assert got["backup", "rejected"]["avg_seconds"] == pytest.approx(600, abs=0.01)


def test_the_documentation_quotes_every_query_verbatim() -> None:
    doc = DOC.read_text()
    for query in QUERIES.values():
        assert query.sqlite in doc, f"{query.name} (sqlite) is not quoted in {DOC.name}"
        assert query.postgresql in doc, f"{query.name} (postgresql) is not quoted in {DOC.name}"


def test_the_documentation_describes_every_column() -> None:
    from toolwarden.mirror.schema import Base

    doc = DOC.read_text()
    for table in Base.metadata.tables.values():
        assert f"### `{table.name}`" in doc
        for column in table.columns:
            assert f"| `{column.name}` |" in doc, f"{table.name}.{column.name} undocumented"
