"""The vocabulary's own behaviour: ids, backoff, what an approval's state means for the tool."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from toolwarden.models import (
    ApprovalRecord,
    ApprovalState,
    ExpiryOutcome,
    RetryBackoff,
    RunSpec,
    RunState,
    approval_id,
    split_approval_id,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def record(state: ApprovalState, on_expiry: ExpiryOutcome = ExpiryOutcome.REJECT) -> ApprovalRecord:
    return ApprovalRecord(
        approval_id="r-1/k",
        run_id="r-1",
        key="k",
        summary="push?",
        state=state,
        on_expiry=on_expiry,
        requested_at=T0,
        expires_at=T0 + timedelta(hours=1),
        decided_at=T0 + timedelta(minutes=5),
        decided_by="alice",
        reason="ok",
        response={"n": 1},
    )


@pytest.mark.parametrize(
    ("state", "on_expiry", "approved"),
    [
        (ApprovalState.APPROVED, ExpiryOutcome.REJECT, True),
        (ApprovalState.REJECTED, ExpiryOutcome.APPROVE, False),
        (ApprovalState.EXPIRED, ExpiryOutcome.REJECT, False),
        (ApprovalState.EXPIRED, ExpiryOutcome.APPROVE, True),  # the tool proceeds on expiry
        (ApprovalState.CANCELLED, ExpiryOutcome.APPROVE, False),
    ],
)
def test_decision_of_a_record(state: ApprovalState, on_expiry: ExpiryOutcome, approved: bool) -> None:
    decision = record(state, on_expiry).decision()
    assert (decision.key, decision.outcome, decision.approved) == ("k", state, approved)
    assert (decision.by, decision.reason, decision.response) == ("alice", "ok", {"n": 1})
    assert decision.decided_at == T0 + timedelta(minutes=5)


def test_approval_ids_round_trip_and_split_on_the_last_slash() -> None:
    assert approval_id("run.1", "deploy") == "run.1/deploy"
    assert split_approval_id(approval_id("run.1", "deploy")) == ("run.1", "deploy")
    for bad in ("no-slash", "/key", "run/"):
        with pytest.raises(ValueError, match="expected RUN/KEY"):
            split_approval_id(bad)


@pytest.mark.parametrize("run_id", ["", "-leading-dash", "has space", "a/b", "x" * 201])
def test_run_ids_keep_to_a_conservative_alphabet(run_id: str) -> None:
    with pytest.raises(ValidationError, match="invalid run id"):
        RunSpec(run_id=run_id, tool_name="t", argv=["true"])


def test_backoff_grows_and_is_capped() -> None:
    backoff = RetryBackoff(initial=timedelta(seconds=1), coefficient=2.0, maximum=timedelta(seconds=5))
    assert [backoff.delay(n).total_seconds() for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


def test_terminal_states() -> None:
    live = {RunState.PENDING, RunState.RUNNING, RunState.WAITING_APPROVAL, RunState.RETRYING}
    assert {s for s in RunState if not s.terminal} == live
