"""Approvals end to end: real tools asking over the socket, decisions by signal and update."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support import eventually, tool
from toolwarden.client import DecisionRefused, RefusalReason, RunHandle, Supervisor
from toolwarden.config import ApprovalSettings, Settings
from toolwarden.models import ApprovalState, RunState, RunStatus
from toolwarden.worker.devserver import temporal_binary
from toolwarden.workflows import APPROVE_SIGNAL

pytestmark = pytest.mark.usefixtures("worker")


async def pending(handle: RunHandle, count: int = 1) -> RunStatus:
    async def check() -> RunStatus | None:
        status = await handle.status()
        return status if len(status.pending_approvals) >= count else None

    return await eventually(check)


def decision_line(status: RunStatus) -> dict[str, object]:
    assert status.last_attempt is not None
    line = next(t for t in status.last_attempt.tail if t.startswith("DECISION "))
    return json.loads(line.removeprefix("DECISION "))  # type: ignore[no-any-return]


async def test_approve_with_response_reaches_the_tool(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(
        run_id=run_id("ask"), argv=[*tool("approval_tool.py"), "deploy", "Deploy to prod"]
    )
    handle = await supervisor.start_run(spec)
    status = await pending(handle)
    assert status.state is RunState.WAITING_APPROVAL
    listed = await supervisor.pending_approvals()
    assert any(p.approval.approval_id == f"{spec.run_id}/deploy" for p in listed.approvals)
    result = await supervisor.decide(
        f"{spec.run_id}/deploy", approve=True, by="alice", reason="ok",
        response={"branch": "main"},
    )
    assert result.took_effect
    final = await handle.result()
    assert final.state is RunState.SUCCEEDED
    decision = decision_line(await handle.status())
    assert decision["approved"] is True
    assert decision["response"] == {"branch": "main"}
    assert decision["by"] == "alice"


async def test_reject_through_the_shell_tool(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(
        run_id=run_id("sh"), argv=[*tool("ask_tool.sh"), "Push to main", "push"]
    )
    handle = await supervisor.start_run(spec)
    await pending(handle)
    await supervisor.decide(f"{spec.run_id}/push", approve=False, by="bob", reason="not today")
    result = await handle.result()
    assert (result.state, result.exit_code) == (RunState.FAILED, 1)
    tail = (await handle.status()).last_attempt.tail  # type: ignore[union-attr]
    assert "EXIT 1" in tail


async def test_unanswered_approval_expires_on_its_timer(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(
        run_id=run_id(),
        argv=[*tool("approval_tool.py"), "risky", "Risky step", "--timeout", "1"],
    )
    handle = await supervisor.start_run(spec)
    result = await handle.result()
    assert result.state is RunState.FAILED
    status = await handle.status()
    assert status.approvals[0].state is ApprovalState.EXPIRED
    assert decision_line(status)["outcome"] == "expired"


async def test_expiry_outcome_from_the_profile(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(
        run_id=run_id(),
        argv=[*tool("approval_tool.py"), "lenient", "Lenient step", "--timeout", "1"],
        overrides={"approval_on_expiry": "approve"},
    )
    result = await (await supervisor.start_run(spec)).result()
    assert result.state is RunState.SUCCEEDED


@pytest.mark.parametrize(
    ("approve", "expected", "attempts"),
    [(True, RunState.SUCCEEDED, 1), (False, RunState.REJECTED, 0), (None, RunState.EXPIRED, 0)],
)
async def test_gate_before_launch(
    supervisor: Supervisor, settings: Settings, run_id, tmp_path: Path,
    approve: bool | None, expected: RunState, attempts: int,
) -> None:
    marker = tmp_path / "ran"
    spec = settings.run_spec(
        run_id=run_id("gate"),
        argv=["touch", str(marker)],
        overrides={
            "approve_before": "Deploy to prod",
            "approval_timeout": timedelta(seconds=1 if approve is None else 60),
        },
    )
    handle = await supervisor.start_run(spec)
    status = await pending(handle)
    assert status.attempt == 0 and status.state is RunState.WAITING_APPROVAL
    if approve is not None:
        await supervisor.decide(
            f"{spec.run_id}/gate", approve=approve, by="carol", reason="because"
        )
    result = await handle.result()
    assert result.state is expected
    assert result.attempt == attempts
    assert marker.exists() is (expected is RunState.SUCCEEDED)


async def test_exit_and_relaunch_holds_no_process(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(
        run_id=run_id("relaunch"),
        argv=[*tool("approval_tool.py"), "apply", "Apply the patch", "--or-exit"],
    )
    handle = await supervisor.start_run(spec)

    async def parked() -> bool:
        status = await handle.status()
        return (
            status.state is RunState.WAITING_APPROVAL
            and status.live is None
            and status.last_attempt is not None
        )

    await eventually(parked)
    description = await handle._handle.describe()
    assert not description.raw_description.pending_activities
    await supervisor.decide(
        f"{spec.run_id}/apply", approve=True, by="dave", response={"patch": 42}
    )
    result = await handle.result()
    assert (result.state, result.attempt) == (RunState.SUCCEEDED, 2)
    status = await handle.status()
    assert decision_line(status)["response"] == {"patch": 42}
    assert len(status.approvals) == 1


async def test_decided_key_is_not_asked_again_after_a_retry(
    supervisor: Supervisor, settings: Settings, run_id, tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    script = (
        f"{sys.executable} {tool('approval_tool.py')[1]} push 'Push it' && "
        f"{sys.executable} {tool('flaky.py')[1]} {counter} 2"
    )
    spec = settings.run_spec(
        run_id=run_id(), argv=["sh", "-c", script],
        overrides={"retries": 1, "retry_backoff": timedelta(milliseconds=100)},
    )
    handle = await supervisor.start_run(spec)
    await pending(handle)
    await supervisor.decide(f"{spec.run_id}/push", approve=True, by="erin")
    result = await handle.result()
    assert (result.state, result.retry_count) == (RunState.SUCCEEDED, 1)
    status = await handle.status()
    assert [a.state for a in status.approvals] == [ApprovalState.APPROVED]
    assert decision_line(status)["by"] == "erin"


async def test_two_approvers_race_and_exactly_one_wins(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(run_id=run_id(), argv=[*tool("approval_tool.py"), "k", "Race"])
    handle = await supervisor.start_run(spec)
    await pending(handle)
    first, second = await asyncio.gather(
        supervisor.decide(f"{spec.run_id}/k", approve=True, by="frank"),
        supervisor.decide(f"{spec.run_id}/k", approve=False, by="grace", reason="no"),
        return_exceptions=True,
    )
    (winner,) = [r for r in (first, second) if not isinstance(r, BaseException)]
    (loser,) = [r for r in (first, second) if isinstance(r, BaseException)]
    assert isinstance(loser, DecisionRefused) and winner.took_effect and winner.approval
    assert loser.reason is RefusalReason.ALREADY_DECIDED
    assert f"already {winner.approval.state.value} by {winner.approval.decided_by}" in str(loser)
    await handle.result()
    status = await handle.status()
    (loser_name,) = {"frank", "grace"} - {winner.approval.decided_by}
    assert any(e.kind == "decision_refused" and e.by == loser_name for e in status.audit)


async def test_unknown_and_malformed_ids(supervisor: Supervisor) -> None:
    with pytest.raises(DecisionRefused, match="unknown run") as unknown:
        await supervisor.decide("no-such-run/key", approve=True, by="x")
    assert unknown.value.reason is RefusalReason.UNKNOWN
    with pytest.raises(DecisionRefused, match="RUN/KEY") as malformed:
        await supervisor.decide("nokey", approve=True, by="x")
    assert malformed.value.reason is RefusalReason.UNKNOWN


async def test_unknown_key_and_disallowed_approver_change_nothing(
    client, settings: Settings, run_id
) -> None:
    settings = settings.model_copy(update={"approvals": ApprovalSettings(approvers=["alice"])})
    supervisor = Supervisor(client, settings)
    spec = settings.run_spec(run_id=run_id(), argv=[*tool("approval_tool.py"), "k", "Guarded"])
    handle = await supervisor.start_run(spec)
    await pending(handle)
    with pytest.raises(DecisionRefused, match="unknown approval") as unknown:
        await supervisor.decide(f"{spec.run_id}/other", approve=True, by="alice")
    assert unknown.value.reason is RefusalReason.UNKNOWN
    with pytest.raises(DecisionRefused, match="mallory is not an allowed approver") as refused:
        await supervisor.decide(f"{spec.run_id}/k", approve=True, by="mallory")
    assert refused.value.reason is RefusalReason.NOT_ALLOWED
    # The workflow refuses too, without the client's check (another SDK, an older client).
    open_door = Supervisor(client, settings.model_copy(update={"approvals": ApprovalSettings()}))
    with pytest.raises(DecisionRefused, match="mallory is not an allowed approver") as by_run:
        await open_door.decide(f"{spec.run_id}/k", approve=True, by="mallory")
    assert by_run.value.reason is RefusalReason.NOT_ALLOWED
    # The same refusal holds for a raw signal (as the Go CLI would send).
    await handle._handle.signal(APPROVE_SIGNAL, {"key": "k", "by": "mallory"})

    async def refused() -> bool:
        return any(e.by == "mallory" for e in (await handle.status()).audit)

    await eventually(refused)
    assert (await handle.status()).approvals[0].state is ApprovalState.PENDING
    assert (await supervisor.decide(f"{spec.run_id}/k", approve=True, by="alice")).took_effect
    assert (await handle.result()).state is RunState.SUCCEEDED


async def test_several_pending_approvals_in_one_run(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    ask = tool("ask_tool.sh")[0]
    script = f"{ask} 'First' one & {ask} 'Second' two & wait"
    spec = settings.run_spec(run_id=run_id(), argv=["bash", "-c", script])
    handle = await supervisor.start_run(spec)
    status = await pending(handle, count=2)
    assert {a.key for a in status.pending_approvals} == {"one", "two"}
    await supervisor.decide(f"{spec.run_id}/one", approve=True, by="h")
    await supervisor.decide(f"{spec.run_id}/two", approve=False, by="h", reason="no")
    assert (await handle.result()).state is RunState.SUCCEEDED  # `wait` returns the last status
    states = {a.key: a.state for a in (await handle.status()).approvals}
    assert states == {"one": ApprovalState.APPROVED, "two": ApprovalState.REJECTED}


async def test_go_cli_approves_through_the_documented_signal(
    supervisor: Supervisor, settings: Settings, run_id, temporal_address: str
) -> None:
    spec = settings.run_spec(run_id=run_id("go"), argv=[*tool("approval_tool.py"), "ship", "Ship"])
    handle = await supervisor.start_run(spec)
    await pending(handle)
    payload = json.dumps({"key": "ship", "by": "go-cli", "response": {"ok": True}})
    completed = await asyncio.to_thread(
        subprocess.run,
        [
            temporal_binary(), "workflow", "signal", "--address", temporal_address,
            "--workflow-id", spec.run_id, "--name", APPROVE_SIGNAL, "--input", payload,
        ],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert (await handle.result()).state is RunState.SUCCEEDED
    decision = decision_line(await handle.status())
    assert (decision["by"], decision["response"]) == ("go-cli", {"ok": True})


async def test_cancel_cancels_pending_approvals(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(run_id=run_id(), argv=[*tool("approval_tool.py"), "k", "Cancel me"])
    handle = await supervisor.start_run(spec)
    await pending(handle)
    await handle.cancel()
    assert (await handle.result()).state is RunState.CANCELLED
    assert (await handle.status()).approvals[0].state is ApprovalState.CANCELLED


async def test_waiting_for_a_person_is_not_hung(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(
        run_id=run_id(),
        argv=[*tool("approval_tool.py"), "slow", "Slow person"],
        overrides={"hang_timeout": timedelta(seconds=1)},
    )
    handle = await supervisor.start_run(spec)
    await pending(handle)

    async def waited() -> bool:
        status = await handle.status()
        return status.state is RunState.WAITING_APPROVAL and _older_than(status, 2.5)

    await eventually(waited)
    await supervisor.decide(f"{spec.run_id}/slow", approve=True, by="i")
    assert (await handle.result()).state is RunState.SUCCEEDED


def _older_than(status: RunStatus, seconds: float) -> bool:
    from datetime import UTC, datetime

    started = status.live.started_at if status.live else None
    return started is not None and (datetime.now(UTC) - started).total_seconds() > seconds
