"""The run's rules (toolwarden.workflows.rules), as plain functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from toolwarden.models import AttemptOutcome, AttemptResult, RunSpec, RunState
from toolwarden.workflows.rules import (
    ATTEMPT_ENDED,
    OUTCOME_STATE,
    RETRYABLE_OUTCOMES,
    RUN_ENDED,
    approver_refusal,
    attempt_ended,
    can_retry,
    ending_state,
    run_ended,
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
