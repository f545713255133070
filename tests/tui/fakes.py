"""A deterministic, in-memory supervisor for the TUI's snapshot tests (layout only).

Behaviour tests use the real dev server; this fake only feeds fixed data at a fixed clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import JsonValue

from toolwarden.config import ServerSettings, Settings, TemporalSettings
from toolwarden.models import (
    ApprovalRecord,
    ApprovalState,
    DecideResult,
    LiveDetails,
    RunState,
    RunStatus,
    RunSummary,
)

NOW = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)


def fixed_clock() -> datetime:
    return NOW


def fake_settings(home: Path) -> Settings:
    return Settings(
        home=home,
        temporal=TemporalSettings(address="127.0.0.1:7233", task_queue="toolwarden"),
        server=ServerSettings(port=7233, ui_port=8233),
    )


class FakeRun:
    def __init__(self, supervisor: FakeSupervisor, run_id: str) -> None:
        self.supervisor = supervisor
        self.run_id = run_id

    async def status(self) -> RunStatus:
        return self.supervisor.statuses[self.run_id]

    async def cancel(self, reason: str | None = None) -> None:
        self.supervisor.cancelled.append(self.run_id)


class FakeSupervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.statuses: dict[str, RunStatus] = {}
        self.cancelled: list[str] = []
        self.decisions: list[tuple[str, bool, str | None]] = []

    def add_run(
        self,
        run_id: str,
        tool: str,
        state: RunState,
        *,
        started_ago: float,
        attempt: int = 1,
        progress: float | None = None,
        beat_ago: float | None = None,
        message: str | None = None,
        tail: list[str] | None = None,
        approvals: list[ApprovalRecord] | None = None,
        exit_code: int | None = None,
    ) -> None:
        started = NOW - timedelta(seconds=started_ago)
        live = None
        if not state.terminal:
            live = LiveDetails(
                attempt=attempt,
                pid=4242,
                host="worker-1",
                last_heartbeat_at=NOW - timedelta(seconds=beat_ago) if beat_ago is not None else None,
                progress=progress,
                message=message,
                tail=tail or [],
            )
        self.statuses[run_id] = RunStatus(
            run_id=run_id,
            tool_name=tool,
            argv=[tool, "--all"],
            state=state,
            attempt=attempt,
            started_at=started,
            updated_at=started,
            ended_at=NOW if state.terminal else None,
            exit_code=exit_code,
            live=live,
            approvals=approvals or [],
        )

    def add_approval(
        self, run_id: str, key: str, summary: str, *, asked_ago: float, expires_in: float,
        details: JsonValue = None,
    ) -> ApprovalRecord:
        return ApprovalRecord(
            approval_id=f"{run_id}/{key}",
            run_id=run_id,
            key=key,
            summary=summary,
            details=details,
            requested_at=NOW - timedelta(seconds=asked_ago),
            expires_at=NOW + timedelta(seconds=expires_in),
        )

    def get_run(self, run_id: str) -> FakeRun:
        return FakeRun(self, run_id)

    async def list_runs(
        self,
        *,
        state: RunState | None = None,
        tool: str | None = None,
        approval_state: ApprovalState | None = None,
        running_only: bool = False,
        limit: int | None = 100,
    ) -> list[RunSummary]:
        rows = []
        for s in sorted(self.statuses.values(), key=lambda s: s.started_at, reverse=True):
            if state is not None and s.state is not state:
                continue
            if tool is not None and s.tool_name != tool:
                continue
            if approval_state is ApprovalState.PENDING and not s.pending_approvals:
                continue
            if running_only and s.state.terminal:
                continue
            rows.append(
                RunSummary(
                    run_id=s.run_id,
                    tool_name=s.tool_name,
                    state=s.state,
                    approval_state=ApprovalState.PENDING if s.pending_approvals else None,
                    status="completed" if s.state.terminal else "running",
                    started_at=s.started_at,
                    ended_at=s.ended_at,
                )
            )
        return rows[:limit] if limit else rows

    async def decide(
        self,
        approval_id: str,
        *,
        approve: bool,
        by: str,
        reason: str | None = None,
        response: JsonValue = None,
        acting_user: str | None = None,
    ) -> DecideResult:
        run_id, _, key = approval_id.rpartition("/")
        status = self.statuses[run_id]
        record = next(a for a in status.approvals if a.key == key)
        self.decisions.append((approval_id, approve, reason))
        record.state = ApprovalState.APPROVED if approve else ApprovalState.REJECTED
        record.decided_by = by
        record.decided_at = NOW
        record.reason = reason
        return DecideResult(took_effect=True, approval=record, message=record.state.value)

    def web_ui_url(self, run_id: str) -> str:
        return f"{self.settings.ui_url}/namespaces/default/workflows/{run_id}"


def fleet(home: Path) -> FakeSupervisor:
    """A small, fixed fleet: three approvals waiting, a few runs in every kind of state."""
    sup = FakeSupervisor(fake_settings(home))
    deploy = sup.add_approval(
        "deploy-260115-a1b2c3", "prod", "Deploy api v2.3.1 to production",
        asked_ago=754, expires_in=85_000,
        details={"service": "api", "version": "2.3.1", "replicas": 6,
                 "changes": ["migrate users table", "new rate limits"]},
    )
    drop = sup.add_approval(
        "dbtool-260115-d4e5f6", "drop-table", "Drop table sessions_old (2.1M rows)",
        asked_ago=312, expires_in=290,
        details={"table": "sessions_old", "rows": 2100000},
    )
    rotate = sup.add_approval(
        "certbot-260115-0718aa", "rotate", "Rotate TLS certificate for *.example.com",
        asked_ago=40, expires_in=45,
    )
    sup.add_run("deploy-260115-a1b2c3", "deploy", RunState.WAITING_APPROVAL, started_ago=800,
                beat_ago=1, progress=0.4, message="waiting for approval",
                tail=["building image", "pushed registry/api:2.3.1", "asking prod"],
                approvals=[deploy])
    sup.add_run("dbtool-260115-d4e5f6", "dbtool", RunState.WAITING_APPROVAL, started_ago=330,
                beat_ago=2, approvals=[drop])
    sup.add_run("certbot-260115-0718aa", "certbot", RunState.WAITING_APPROVAL, started_ago=50,
                beat_ago=0, approvals=[rotate])
    sup.add_run("etl-260115-99aa01", "etl", RunState.RUNNING, started_ago=3720, attempt=2,
                beat_ago=3, progress=0.72, message="loaded 7.2M rows",
                tail=["batch 71 ok", "batch 72 ok"])
    sup.add_run("lint-260115-5f5f5f", "ruff", RunState.SUCCEEDED, started_ago=5400, exit_code=0)
    sup.add_run("backup-260115-77c0de", "restic", RunState.HUNG, started_ago=9000, attempt=3)
    sup.add_run("report-260114-e0e0e0", "report", RunState.FAILED, started_ago=90_000,
                exit_code=2)
    return sup


def empty(home: Path) -> FakeSupervisor:
    return FakeSupervisor(fake_settings(home))
