"""The decision layer every face calls: its pure rules, then decisions on real runs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.support import eventually, tool
from toolwarden.client import (
    DecisionRefused,
    InvalidResponse,
    RefusalReason,
    RunHandle,
    Supervisor,
    approver_refusal,
    assemble_approvals,
    decided_text,
    parse_response,
)
from toolwarden.config import ApprovalSettings, Settings
from toolwarden.models import ApprovalRecord, ApprovalState, RunState, RunStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record(run_id: str, key: str, asked: int, state: ApprovalState = ApprovalState.PENDING,
           by: str | None = None) -> ApprovalRecord:
    return ApprovalRecord(
        approval_id=f"{run_id}/{key}", run_id=run_id, key=key, summary=key, state=state,
        decided_by=by, requested_at=T0 + timedelta(seconds=asked),
        expires_at=T0 + timedelta(hours=1),
    )


def status(run_id: str, *approvals: ApprovalRecord) -> RunStatus:
    return RunStatus(run_id=run_id, tool_name="t", argv=["t"], state=RunState.WAITING_APPROVAL,
                     started_at=T0, updated_at=T0, approvals=list(approvals))


def test_allowlist() -> None:
    assert approver_refusal([], "anyone") is None
    assert approver_refusal(["alice"], "alice") is None
    assert approver_refusal(["alice"], "bob") == "bob is not an allowed approver"
    assert approver_refusal(["alice"], None) == "anonymous is not an allowed approver"


def test_response_is_json_or_nothing() -> None:
    assert parse_response(None) is None
    assert parse_response("  ") is None
    assert parse_response('{"ticket": "OPS-1"}') == {"ticket": "OPS-1"}
    assert parse_response("3") == 3
    with pytest.raises(InvalidResponse, match=r"^not valid JSON: Expecting .* \(column 2\)$"):
        parse_response("{nope")


def test_decided_text() -> None:
    assert decided_text(record("r", "k", 0, ApprovalState.APPROVED, "alice")) == "approved by alice"
    assert decided_text(record("r", "k", 0, ApprovalState.EXPIRED)) == "expired"


def test_assembly_is_oldest_first_and_pending_only_by_default() -> None:
    statuses = {
        "a": status("a", record("a", "late", 30), record("a", "done", 1, ApprovalState.APPROVED)),
        "b": status("b", record("b", "early", 10)),
    }
    rows = assemble_approvals(["a", "b", "unanswered"], statuses)
    assert [p.approval.approval_id for p in rows] == ["b/early", "a/late"]
    everything = assemble_approvals(["a", "b"], statuses, include_decided=True)
    assert [p.approval.approval_id for p in everything] == ["a/done", "b/early", "a/late"]


async def asking(supervisor: Supervisor, settings: Settings, run_id: str) -> RunHandle:
    spec = settings.run_spec(run_id=run_id, argv=[*tool("approval_tool.py"), "k", "Ship it?"])
    handle = await supervisor.start_run(spec)

    async def pending() -> bool:
        return bool((await handle.status()).pending_approvals)

    await eventually(pending)
    return handle


@pytest.mark.usefixtures("worker")
async def test_refusals_say_why_in_one_line(
    supervisor: Supervisor, settings: Settings, run_id: Callable[[str], str]
) -> None:
    handle = await asking(supervisor, settings, run_id("refuse"))
    approval = f"{handle.run_id}/k"
    assert (await supervisor.decide(approval, approve=True, by="alice")).took_effect
    with pytest.raises(DecisionRefused) as late:
        await supervisor.decide(approval, approve=False, by="bob", reason="no")
    assert late.value.reason is RefusalReason.ALREADY_DECIDED
    assert str(late.value) == f"{approval} is already approved by alice"
    assert late.value.approval is not None and late.value.approval.decided_by == "alice"
    assert (await handle.result()).state is RunState.SUCCEEDED
    with pytest.raises(DecisionRefused) as ended:
        await supervisor.decide(approval, approve=False, by="bob", reason="no")
    assert ended.value.reason is RefusalReason.RUN_ENDED
    assert str(ended.value) == (
        f"{approval} is already approved by alice; run {handle.run_id} has ended (succeeded)"
    )


@pytest.mark.usefixtures("worker")
async def test_pending_and_decided_listings(
    supervisor: Supervisor, settings: Settings, run_id: Callable[[str], str]
) -> None:
    waiting = await asking(supervisor, settings, run_id("listed"))
    decided = await asking(supervisor, settings, run_id("decided"))
    await supervisor.decide(f"{decided.run_id}/k", approve=False, by="carol", reason="no")
    await decided.result()
    pending = await supervisor.pending_approvals()
    ids = {p.approval.approval_id for p in pending.approvals}
    assert f"{waiting.run_id}/k" in ids and f"{decided.run_id}/k" not in ids
    everything = await supervisor.pending_approvals(include_decided=True)
    states = {p.approval.approval_id: p.approval.state for p in everything.approvals}
    assert states[f"{waiting.run_id}/k"] is ApprovalState.PENDING
    assert states[f"{decided.run_id}/k"] is ApprovalState.REJECTED
    await waiting.cancel()


@pytest.mark.usefixtures("worker")
async def test_a_local_decider_decides_as_itself_under_an_allowlist(
    settings: Settings, run_id: Callable[[str], str], supervisor: Supervisor
) -> None:
    guarded = Supervisor(
        supervisor.client, settings.model_copy(update={"approvals": ApprovalSettings(
            approvers=["root", "alice"])})
    )
    handle = await asking(guarded, guarded.settings, run_id("asuser"))
    approval = f"{handle.run_id}/k"
    with pytest.raises(DecisionRefused) as posing:
        await guarded.decide(approval, approve=True, by="alice", acting_user="root")
    assert posing.value.reason is RefusalReason.NOT_ALLOWED
    assert str(posing.value).startswith("root may not decide as alice:")
    # Read from the run's own spec when this client's settings have no allowlist.
    with pytest.raises(DecisionRefused, match="root may not decide as alice"):
        await supervisor.decide(approval, approve=True, by="alice", acting_user="root")
    decided = await guarded.decide(approval, approve=True, by="root", acting_user="root")
    assert decided.took_effect
