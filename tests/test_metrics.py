"""toolwarden's Prometheus metrics: values derived from workflow projections, and naming rules.

The registry is process-wide, so every test reads values before and after what it does and
uses a tool name of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from toolwarden import metrics
from toolwarden.models import (
    ApprovalRecord,
    ApprovalState,
    RunEvent,
    RunState,
    RunStatus,
    RunUpdate,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_bookkeeping() -> Iterator[None]:
    metrics.reset_for_tests()
    yield
    metrics.reset_for_tests()


def value(name: str, **labels: str) -> float:
    found = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def families() -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


class Run:
    """Builds the projections a `ToolRunWorkflow` hands to `project_run`, event by event."""

    def __init__(self, run_id: str, tool: str) -> None:
        self.status = RunStatus(
            run_id=run_id,
            tool_name=tool,
            argv=[tool, "--flag"],
            state=RunState.PENDING,
            started_at=T0,
            updated_at=T0,
        )
        self.seq = 0

    def update(self, *events: tuple[str, dict[str, Any]], at: datetime = T0) -> RunUpdate:
        batch = []
        for kind, data in events:
            self.seq += 1
            batch.append(RunEvent(seq=self.seq, at=at, kind=kind, data=data))
        self.status.updated_at = at
        return RunUpdate(status=self.status.model_copy(deep=True), events=batch)

    def request(self, key: str, at: datetime, expires_in: timedelta) -> None:
        self.status.approvals.append(
            ApprovalRecord(
                approval_id=f"{self.status.run_id}/{key}",
                run_id=self.status.run_id,
                key=key,
                summary=f"may I {key}?",
                requested_at=at,
                expires_at=at + expires_in,
            )
        )

    def decide(self, key: str, state: ApprovalState, at: datetime) -> None:
        for record in self.status.approvals:
            if record.key == key:
                record.state = state
                record.decided_at = at
                record.decided_by = "alice"


def test_a_full_run_moves_every_run_level_series() -> None:
    tool = "backup-full"
    run = Run("run-aa11", tool)
    before_wait = value("toolwarden_approval_wait_seconds_count", tool=tool)

    metrics.observe_update(run.update(("run_started", {"tool": tool})))
    run.status.state = RunState.RUNNING
    metrics.observe_update(
        run.update(("state_changed", {"state": "running"}), ("attempt_started", {"attempt": 1}))
    )
    run.request("deploy", T0 + timedelta(seconds=10), timedelta(hours=1))
    run.status.state = RunState.WAITING_APPROVAL
    metrics.observe_update(run.update(("approval_requested", {"key": "deploy"})))
    run.decide("deploy", ApprovalState.APPROVED, T0 + timedelta(seconds=100))
    metrics.observe_update(
        run.update(
            ("approval_decided", {"key": "deploy", "state": "approved", "by": "alice"}),
            ("approval_refused", {"key": "deploy", "by": "mallory", "reason": "already decided"}),
        )
    )
    metrics.observe_update(
        run.update(
            ("attempt_ended", {"outcome": "failed", "exit_code": 1, "signal": None}),
            ("retry_scheduled", {"retry_count": 1, "delay_s": 1.0}),
            ("attempt_started", {"attempt": 2}),
            ("attempt_ended", {"outcome": "succeeded", "exit_code": 0, "signal": None}),
        )
    )
    run.status.state = RunState.SUCCEEDED
    metrics.observe_update(run.update(("run_ended", {"state": "succeeded"})))

    assert value("toolwarden_runs_started_total", tool=tool) == 1
    assert value("toolwarden_runs_ended_total", tool=tool, state="succeeded") == 1
    assert value("toolwarden_retries_total", tool=tool) == 1
    assert value("toolwarden_approvals_requested_total", tool=tool) == 1
    assert value("toolwarden_approvals_decided_total", tool=tool, outcome="approved") == 1
    assert value("toolwarden_approvals_refused_total", tool=tool) == 1
    assert value("toolwarden_approval_wait_seconds_count", tool=tool) == before_wait + 1
    assert value("toolwarden_approval_wait_seconds_sum", tool=tool) == 90
    assert value("toolwarden_approval_wait_seconds_bucket", tool=tool, le="60.0") == 0
    assert value("toolwarden_approval_wait_seconds_bucket", tool=tool, le="300.0") == 1


def test_the_same_projection_twice_counts_once() -> None:
    tool = "dup-tool"
    run = Run("run-dup", tool)
    first = run.update(("run_started", {"tool": tool}))
    metrics.observe_update(first)
    metrics.observe_update(first)  # a retried local activity
    ended = run.update(("retry_scheduled", {"retry_count": 1}), ("run_ended", {"state": "failed"}))
    metrics.observe_update(ended)
    metrics.observe_update(ended)
    metrics.observe_update(run.update())  # a projection without new events
    assert value("toolwarden_runs_started_total", tool=tool) == 1
    assert value("toolwarden_retries_total", tool=tool) == 1
    assert value("toolwarden_runs_ended_total", tool=tool, state="failed") == 1


def test_runs_are_told_apart_by_run_id_not_labelled_by_it() -> None:
    tool = "many-runs"
    for n in range(5):
        run = Run(f"run-many-{n}", tool)
        metrics.observe_update(run.update(("run_started", {"tool": tool})))
    assert value("toolwarden_runs_started_total", tool=tool) == 5
    assert "run-many-" not in metrics.render().decode()


def test_unexpected_states_and_outcomes_stay_within_a_bounded_label_set() -> None:
    tool = "odd-states"
    run = Run("run-odd", tool)
    metrics.observe_update(
        run.update(
            ("run_ended", {"state": "exploded-run-odd-1234"}),
            ("approval_decided", {"key": "missing", "state": {"nested": True}}),
        )
    )
    metrics.attempt_started(tool)
    metrics.attempt_ended(tool, "vanished-into-thin-air")
    assert value("toolwarden_runs_ended_total", tool=tool, state="unknown") == 1
    assert value("toolwarden_approvals_decided_total", tool=tool, outcome="unknown") == 1
    assert value("toolwarden_attempts_total", tool=tool, outcome="unknown") == 1
    # no record for "missing": no wait observed rather than a wrong one
    assert value("toolwarden_approval_wait_seconds_count", tool=tool) == 0


def test_tool_names_beyond_the_cap_fold_into_other(monkeypatch: pytest.MonkeyPatch) -> None:
    current = len(metrics._tool_labels)
    monkeypatch.setattr(metrics, "MAX_TOOL_LABELS", current + 2)
    before_other = value("toolwarden_hung_kills_total", tool="other")
    for n in range(5):
        metrics.hung_kill(f"generated-tool-{n}")
    assert value("toolwarden_hung_kills_total", tool="generated-tool-0") == 1
    assert value("toolwarden_hung_kills_total", tool="generated-tool-1") == 1
    assert value("toolwarden_hung_kills_total", tool="generated-tool-2") == 0
    assert value("toolwarden_hung_kills_total", tool="other") == before_other + 3
    assert metrics.tool_label("generated-tool-0") == "generated-tool-0"  # known names stay


def test_running_tools_gauge_and_attempt_outcomes() -> None:
    tool = "runner-gauge"
    base = metrics.running_tools()
    metrics.attempt_started(tool)
    metrics.attempt_started(tool)
    assert value("toolwarden_tools_running", tool=tool) == 2
    assert metrics.running_tools() == base + 2
    metrics.attempt_ended(tool, "succeeded")
    metrics.attempt_ended(tool, "hung")
    metrics.attempt_ended(tool, "hung")  # one end too many never goes negative
    assert value("toolwarden_tools_running", tool=tool) == 0
    assert value("toolwarden_attempts_total", tool=tool, outcome="succeeded") == 1
    assert value("toolwarden_attempts_total", tool=tool, outcome="hung") == 2


def test_hung_kills_and_resume_latency() -> None:
    tool = "hangs-then-resumes"
    metrics.hung_kill(tool)
    metrics.hung_kill(tool)
    metrics.resume_latency(tool, 0.3)
    metrics.resume_latency(tool, 12.0)
    assert value("toolwarden_hung_kills_total", tool=tool) == 2
    assert value("toolwarden_decision_to_resume_seconds_count", tool=tool) == 2
    assert value("toolwarden_decision_to_resume_seconds_sum", tool=tool) == pytest.approx(12.3)
    assert value("toolwarden_decision_to_resume_seconds_bucket", tool=tool, le="0.5") == 1


def test_heartbeat_age_is_the_oldest_running_attempt_and_clears_on_end() -> None:
    tool = "quiet-tool"
    metrics.attempt_started(tool)
    metrics.attempt_started(tool)
    metrics.tool_heartbeat_age(tool, 3.0, attempt="run-q1:1")
    metrics.tool_heartbeat_age(tool, 42.0, attempt="run-q2:1")
    assert value("toolwarden_tool_heartbeat_age_seconds", tool=tool) == 42.0
    metrics.tool_heartbeat_age(tool, 1.0, attempt="run-q2:1")  # it spoke again
    assert value("toolwarden_tool_heartbeat_age_seconds", tool=tool) == 3.0
    metrics.attempt_ended(tool, "succeeded", attempt="run-q1:1")
    assert value("toolwarden_tool_heartbeat_age_seconds", tool=tool) == 1.0
    metrics.attempt_ended(tool, "succeeded")
    assert metrics.REGISTRY.get_sample_value(
        "toolwarden_tool_heartbeat_age_seconds", {"tool": tool}
    ) is None
    assert "run-q1" not in metrics.render().decode()


def test_heartbeat_age_without_attempt_keys_keeps_the_last_report() -> None:
    tool = "single-attempt"
    metrics.attempt_started(tool)
    metrics.tool_heartbeat_age(tool, 9.0)
    metrics.tool_heartbeat_age(tool, 2.0)
    assert value("toolwarden_tool_heartbeat_age_seconds", tool=tool) == 2.0
    metrics.attempt_ended(tool, "failed")
    assert metrics.REGISTRY.get_sample_value(
        "toolwarden_tool_heartbeat_age_seconds", {"tool": tool}
    ) is None


def test_oldest_pending_approval_age_follows_the_projections() -> None:
    tool = "needs-approval"
    now = datetime.now(UTC)
    run = Run("run-pend", tool)
    run.status.state = RunState.WAITING_APPROVAL
    run.request("first", now - timedelta(minutes=30), timedelta(hours=24))
    run.request("second", now - timedelta(minutes=5), timedelta(hours=24))
    run.request("stale", now - timedelta(hours=3), timedelta(hours=1))  # already expired
    metrics.observe_update(run.update(("approval_requested", {"key": "first"})))
    age = value("toolwarden_approval_oldest_pending_age_seconds", tool=tool)
    assert 30 * 60 <= age < 31 * 60
    assert value("toolwarden_approvals_pending", tool=tool) == 2  # not the expired one
    run.decide("first", ApprovalState.APPROVED, now)
    metrics.observe_update(run.update(("approval_decided", {"key": "first", "state": "approved"})))
    age = value("toolwarden_approval_oldest_pending_age_seconds", tool=tool)
    assert 5 * 60 <= age < 6 * 60
    assert value("toolwarden_approvals_pending", tool=tool) == 1
    run.status.state = RunState.CANCELLED
    metrics.observe_update(run.update(("run_ended", {"state": "cancelled"})))
    for name in ("toolwarden_approval_oldest_pending_age_seconds", "toolwarden_approvals_pending"):
        assert metrics.REGISTRY.get_sample_value(name, {"tool": tool}) is None


def test_mirror_gauges() -> None:
    metrics.set_mirror(backlog=120, lag_seconds=7.5)
    assert value("toolwarden_mirror_backlog_updates") == 120
    assert value("toolwarden_mirror_lag_seconds") == 7.5
    metrics.set_mirror(backlog=0, lag_seconds=None)
    assert value("toolwarden_mirror_backlog_updates") == 0
    assert value("toolwarden_mirror_lag_seconds") == 0


# -- naming rules -----------------------------------------------------------------------------

# `channel` is one of the notifier kinds (webhook, slack, smtp): bounded like the others.
ALLOWED_LABELS = {"tool", "state", "outcome", "version", "le", "channel"}
RUN_ID_LIKE = re.compile(r"^run-|[0-9a-f]{8}-[0-9a-f]{4}-|[0-9a-f]{16,}")


def _exercise_everything() -> None:
    tool = "naming-check"
    run = Run("run-0123456789abcdef0123", tool)
    run.request("k", datetime.now(UTC), timedelta(hours=1))
    run.status.state = RunState.WAITING_APPROVAL
    metrics.observe_update(
        run.update(
            ("run_started", {}),
            ("retry_scheduled", {}),
            ("approval_requested", {"key": "k"}),
            ("approval_refused", {"key": "k"}),
            ("run_ended", {"state": "failed"}),
        )
    )
    metrics.attempt_started(tool)
    metrics.tool_heartbeat_age(tool, 1.0, attempt="run-0123456789abcdef0123:1")
    metrics.hung_kill(tool)
    metrics.resume_latency(tool, 1.0)
    metrics.set_mirror(1, 1.0)


def test_every_series_follows_prometheus_naming() -> None:
    _exercise_everything()
    found = families()
    expected = {
        "toolwarden_runs_started", "toolwarden_runs_ended", "toolwarden_retries",
        "toolwarden_approvals_requested", "toolwarden_approvals_decided",
        "toolwarden_approvals_refused", "toolwarden_approval_wait_seconds",
        "toolwarden_approvals_pending", "toolwarden_approval_oldest_pending_age_seconds",
        "toolwarden_attempts", "toolwarden_tools_running", "toolwarden_hung_kills",
        "toolwarden_decision_to_resume_seconds", "toolwarden_tool_heartbeat_age_seconds",
        "toolwarden_mirror_backlog_updates", "toolwarden_mirror_lag_seconds",
        "toolwarden_worker_ready", "toolwarden_sdk_metrics_up", "toolwarden_build_info",
    }
    assert expected <= set(found)
    for name, family in found.items():
        assert name.startswith("toolwarden_"), name
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
        assert family.documentation, f"{name} has no help text"
        if family.type == "counter":
            assert all(s.name == f"{name}_total" for s in family.samples), name
        else:
            assert not name.endswith("_total"), f"{name} is a {family.type} named like a counter"
        if family.type == "histogram" or "age" in name or "lag" in name or "wait" in name:
            assert name.endswith("_seconds"), f"{name} measures time without the unit"
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, (name, sample.labels)
            for label_value in sample.labels.values():
                assert not RUN_ID_LIKE.search(label_value), (name, sample.labels)
    assert "run-0123456789abcdef0123" not in metrics.render().decode()
