"""The run's rules (toolwarden.workflows.rules), as plain functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from toolwarden.models import ApprovalRecord, ApprovalState, AttemptOutcome, AttemptResult, RunSpec, RunState
from toolwarden.workflows.rules import (
    ATTEMPT_ENDED,
    CARRIED_DECIDED_APPROVALS,
    HANDOVER_HISTORY_EVENTS,
    OUTCOME_STATE,
    RETRYABLE_OUTCOMES,
    RUN_ENDED,
    approver_refusal,
    attempt_ended,
    can_retry,
    carried_approvals,
    decided_text,
    ending_state,
    opening_state,
    run_ended,
    should_hand_over,
)

ENDED = datetime(2026, 3, 1, 12, 0, 9, tzinfo=UTC)


def spec(retries: int = 0) -> RunSpec:
    return RunSpec(run_id="r-1", tool_name="lint", argv=["lint", "."], retries=retries)


def result(outcome: AttemptOutcome, exit_code: int | None = 0) -> AttemptResult:
    return AttemptResult(attempt=1, outcome=outcome, exit_code=exit_code, ended_at=ENDED)


@pytest.mark.parametrize(
    ("approvers", "by", "refusal"),
    [
        ([], None, None),  # no allowlist: anyone, even anonymous
        ([], "mallory", None),
        (["alice", "bob"], "bob", None),
        (["alice"], "mallory", "mallory is not an allowed approver"),
        (["alice"], None, "anonymous is not an allowed approver"),
        (["alice"], "", "anonymous is not an allowed approver"),
        (["alice"], "Alice", "Alice is not an allowed approver"),  # names are exact
    ],
)
def test_approver_refusal(approvers: list[str], by: str | None, refusal: str | None) -> None:
    assert approver_refusal(approvers, by) == refusal


@pytest.mark.parametrize(
    ("outcome", "retries", "retry_count", "expected"),
    [
        (AttemptOutcome.SUCCEEDED, 3, 0, RunState.SUCCEEDED),
        (AttemptOutcome.FAILED, 0, 0, RunState.FAILED),
        (AttemptOutcome.FAILED, 2, 1, None),  # a retry is left
        (AttemptOutcome.FAILED, 2, 2, RunState.FAILED),
        (AttemptOutcome.KILLED, 1, 0, None),
        (AttemptOutcome.HUNG, 1, 0, None),
        (AttemptOutcome.HUNG, 1, 1, RunState.HUNG),
        (AttemptOutcome.TIMED_OUT, 5, 0, RunState.TIMED_OUT),  # never retried
        (AttemptOutcome.CANCELLED, 5, 0, RunState.CANCELLED),
        (AttemptOutcome.FAILED_TO_START, 5, 0, RunState.FAILED_TO_START),
        (AttemptOutcome.AWAITING_DECISION, 0, 0, None),  # relaunched after the decision
    ],
)
def test_ending_state(
    outcome: AttemptOutcome, retries: int, retry_count: int, expected: RunState | None
) -> None:
    assert ending_state(spec(retries), retry_count, result(outcome)) is expected
    retried = can_retry(spec(retries), retry_count, result(outcome))
    assert retried == (outcome in RETRYABLE_OUTCOMES and retry_count < retries)


def test_every_outcome_but_awaiting_a_decision_names_a_final_state() -> None:
    assert set(OUTCOME_STATE) == set(AttemptOutcome) - {AttemptOutcome.AWAITING_DECISION}
    assert all(state.terminal for state in OUTCOME_STATE.values())


def test_closing_events() -> None:
    failed = result(AttemptOutcome.KILLED, exit_code=None)
    failed.signal = "SIGKILL"
    assert attempt_ended(failed) == (
        ATTEMPT_ENDED,
        {"attempt": 1, "outcome": "killed", "exit_code": None, "signal": "SIGKILL"},
    )
    assert run_ended(RunState.FAILED, 3) == (RUN_ENDED, {"state": "failed", "exit_code": 3})


def test_decided_text() -> None:
    requested = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    approval = ApprovalRecord(
        approval_id="r-1/k",
        run_id="r-1",
        key="k",
        summary="push?",
        requested_at=requested,
        expires_at=requested,
        state=ApprovalState.APPROVED,
        decided_by="alice",
    )
    assert decided_text(approval) == "approved by alice"
    approval.state, approval.decided_by = ApprovalState.EXPIRED, None
    assert decided_text(approval) == "expired"


def test_opening_state_is_what_the_first_workflow_task_sets() -> None:
    assert opening_state(spec()) == (RunState.RUNNING, None)
    gated = spec().model_copy(update={"approve_before": "Go?"})
    assert opening_state(gated) == (RunState.WAITING_APPROVAL, ApprovalState.PENDING)


def test_should_hand_over_on_suggestion_or_length() -> None:
    assert not should_hand_over(HANDOVER_HISTORY_EVENTS - 1, suggested=False)
    assert should_hand_over(HANDOVER_HISTORY_EVENTS, suggested=False)
    assert should_hand_over(10, suggested=True)


def _approval(n: int, state: ApprovalState, decided_second: int | None = None) -> ApprovalRecord:
    decided = None if decided_second is None else ENDED + timedelta(seconds=decided_second)
    return ApprovalRecord(
        approval_id=f"r-1/k{n}",
        run_id="r-1",
        key=f"k{n}",
        summary="s",
        state=state,
        requested_at=ENDED,
        expires_at=ENDED + timedelta(days=1),
        decided_at=decided,
    )


def test_carried_approvals_keep_every_pending_and_the_latest_decided() -> None:
    extra = 3
    decided = [
        _approval(n, ApprovalState.APPROVED, decided_second=CARRIED_DECIDED_APPROVALS + extra - n)
        for n in range(CARRIED_DECIDED_APPROVALS + extra)
    ]  # k0 decided last, the highest keys first
    pending = [_approval(9000 + n, ApprovalState.PENDING) for n in range(2)]
    carried = carried_approvals([pending[0], *decided, pending[1]])
    kept = [a.key for a in carried]
    assert kept[0] == "k9000" and kept[-1] == "k9001"  # asked order kept
    assert len(kept) == CARRIED_DECIDED_APPROVALS + 2
    dropped = {f"k{n}" for n in range(CARRIED_DECIDED_APPROVALS, CARRIED_DECIDED_APPROVALS + extra)}
    assert dropped.isdisjoint(kept)  # the earliest decided go
