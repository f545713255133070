"""The end of a run as the activity projects it (`closing_projection`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from toolwarden.activities.tool_run import closing_projection
from toolwarden.models import (
    ApprovalRecord,
    ApprovalState,
    AttemptOutcome,
    AttemptResult,
    RunEvent,
    RunSpec,
    RunState,
    RunStatus,
    RunUpdate,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ENDED = T0 + timedelta(seconds=9)


def spec(retries: int = 0) -> RunSpec:
    return RunSpec(run_id="r-1", tool_name="lint", argv=["lint", "."], retries=retries)


def result(outcome: AttemptOutcome, exit_code: int | None = 0) -> AttemptResult:
    return AttemptResult(attempt=1, outcome=outcome, exit_code=exit_code, ended_at=ENDED)


def start(retries: int = 0, retry_count: int = 0, **status: object) -> RunUpdate:
    return RunUpdate(
        status=RunStatus(
            run_id="r-1",
            tool_name="lint",
            argv=["lint", "."],
            state=RunState.RUNNING,
            attempt=retry_count + 1,
            retry_count=retry_count,
            started_at=T0,
            updated_at=T0,
            spec=spec(retries),
            **status,  # type: ignore[arg-type]
        ),
        events=[
            RunEvent(seq=1, at=T0, kind="run_started"),
            RunEvent(seq=2, at=T0, kind="attempt_started", data={"attempt": 1}),
        ],
    )


def test_closing_projection_ends_the_run_on_the_next_event_numbers() -> None:
    closing = closing_projection(start(), result(AttemptOutcome.FAILED, exit_code=3))
    assert closing is not None
    status = closing.status
    assert (status.state, status.exit_code, status.ended_at, status.updated_at) == (
        RunState.FAILED,
        3,
        ENDED,
        ENDED,
    )
    assert status.last_attempt is not None and status.last_attempt.final_projected
    assert [(e.seq, e.kind, e.at) for e in closing.events] == [
        (3, "attempt_ended", ENDED),
        (4, "run_ended", ENDED),
    ]
    assert closing.events[1].data == {"state": "failed", "exit_code": 3}


@pytest.mark.parametrize(
    "case",
    ["retry left", "awaiting decision", "pending approval", "no spec", "no events", "no end time"],
)
def test_closing_projection_declines_when_the_run_goes_on_or_cannot_be_known(case: str) -> None:
    base = start(retries=1)
    attempt = result(AttemptOutcome.FAILED, exit_code=1)
    if case == "awaiting decision":
        attempt = result(AttemptOutcome.AWAITING_DECISION, exit_code=75)
    elif case == "pending approval":
        pending = ApprovalRecord(
            approval_id="r-1/k",
            run_id="r-1",
            key="k",
            summary="push?",
            requested_at=T0,
            expires_at=T0 + timedelta(hours=1),
        )
        base = start(retries=0, approvals=[pending])
        assert pending.state is ApprovalState.PENDING
    elif case == "no spec":
        base = start(retries=0)
        base.status.spec = None
    elif case == "no events":
        base = start(retries=0)
        base.events = []
    elif case == "no end time":
        base = start(retries=0)
        attempt.ended_at = None
    assert closing_projection(base, attempt) is None
