"""The run's rules as plain functions: who may decide, how an attempt ends a run, how a run closes.

Pure (no Temporal, no I/O), so the workflow stays a reading of these rules and each rule has a
unit test of its own (tests/workflows/test_rules.py). The client may import them too: they load
nothing but the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from pydantic import JsonValue

from toolwarden.models import (
    ApprovalRecord,
    ApprovalState,
    AttemptOutcome,
    AttemptResult,
    RunSpec,
    RunState,
)

# Outcomes worth another launch while the run has retries left; a timeout, a cancellation or a
# tool that never started would only fail the same way again.
RETRYABLE_OUTCOMES = frozenset({AttemptOutcome.FAILED, AttemptOutcome.KILLED, AttemptOutcome.HUNG})

OUTCOME_STATE: dict[AttemptOutcome, RunState] = {
    AttemptOutcome.SUCCEEDED: RunState.SUCCEEDED,
    AttemptOutcome.FAILED: RunState.FAILED,
    AttemptOutcome.KILLED: RunState.KILLED,
    AttemptOutcome.HUNG: RunState.HUNG,
    AttemptOutcome.TIMED_OUT: RunState.TIMED_OUT,
    AttemptOutcome.CANCELLED: RunState.CANCELLED,
    AttemptOutcome.FAILED_TO_START: RunState.FAILED_TO_START,
}

# Continue-as-new well before Temporal's history warning (10,240 events by default), or when
# the server suggests it (4,096 events or 4 MB by default).
HANDOVER_HISTORY_EVENTS = 8000
# How much decided history one execution hands to the next; pending approvals always go.
CARRIED_DECIDED_APPROVALS = 500
CARRIED_EVENTS = 500
CARRIED_AUDIT = 500

ATTEMPT_ENDED = "attempt_ended"
RUN_ENDED = "run_ended"


class NewEvent(NamedTuple):
    """An event the workflow is about to record; it numbers and stamps it."""

    kind: str
    data: dict[str, JsonValue]


def approver_refusal(approvers: Sequence[str], by: str | None) -> str | None:
    """Why `by` may not decide under the allowlist `approvers`, or None if they may.

    An empty allowlist lets anyone decide; otherwise an anonymous decision is never allowed.
    """
    if approvers and (by or "") not in approvers:
        return f"{by or 'anonymous'} is not an allowed approver"
    return None


def decided_text(record: ApprovalRecord) -> str:
    """How a closed approval reads in one line: `approved by alice`, `expired`."""
    return record.state.value + (f" by {record.decided_by}" if record.decided_by else "")


def can_retry(spec: RunSpec, retry_count: int, result: AttemptResult) -> bool:
    """Whether `result` earns the run another launch after a backoff."""
    return result.outcome in RETRYABLE_OUTCOMES and retry_count < spec.retries


def ending_state(spec: RunSpec, retry_count: int, result: AttemptResult) -> RunState | None:
    """The run's final state if `result` ends it; None if a decision or a retry comes next."""
    if result.outcome is AttemptOutcome.AWAITING_DECISION:
        return None
    if can_retry(spec, retry_count, result):
        return None
    return OUTCOME_STATE[result.outcome]


def attempt_ended(result: AttemptResult) -> NewEvent:
    """The event recorded as each launch of the tool ends, whatever comes next."""
    return NewEvent(
        ATTEMPT_ENDED,
        {
            "attempt": result.attempt,
            "outcome": result.outcome.value,
            "exit_code": result.exit_code,
            "signal": result.signal,
        },
    )


def run_ended(state: RunState, exit_code: int | None) -> NewEvent:
    """The last event of every run, however it ended (the mirror and metrics close on it)."""
    return NewEvent(RUN_ENDED, {"state": state.value, "exit_code": exit_code})


def should_hand_over(history_length: int, suggested: bool) -> bool:
    """Whether the run continues as new before its next attempt."""
    return suggested or history_length >= HANDOVER_HISTORY_EVENTS


def carried_approvals(approvals: Sequence[ApprovalRecord]) -> list[ApprovalRecord]:
    """Every pending approval and the latest decided ones, in the order they were asked."""
    decided = [a for a in approvals if a.state is not ApprovalState.PENDING]
    latest = sorted(decided, key=lambda a: a.decided_at or a.requested_at)
    kept = {a.key for a in latest[-CARRIED_DECIDED_APPROVALS:]}
    return [a for a in approvals if a.state is ApprovalState.PENDING or a.key in kept]


def opening_state(spec: RunSpec) -> tuple[RunState, ApprovalState | None]:
    """The run and approval state a run is started with, for visibility: what its first
    workflow task sets anyway (running, or waiting on its gate), so that task upserts nothing.
    """
    if spec.approve_before:
        return RunState.WAITING_APPROVAL, ApprovalState.PENDING
    return RunState.RUNNING, None
