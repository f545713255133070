"""Claude Code end to end: the real `claude -p` binary, a real worker, the scripted model API.

The scripted model asks for Bash `rm -rf build`; the injected hook reaches the supervisor,
the policy asks a person, and the run exits and relaunches around the decision.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.agents.model_api import ModelAPI, Script
from tests.support import eventually
from toolwarden.client import RunHandle, Supervisor
from toolwarden.config import Settings
from toolwarden.models import ApprovalRecord, ApprovalState, AttemptOutcome, RunSpec, RunState

pytestmark = pytest.mark.usefixtures("worker")


def claude_spec(
    settings: Settings,
    run_id: str,
    claude_bin: str,
    workdir: Path,
    env: dict[str, str],
    **overrides: Any,
) -> RunSpec:
    return settings.run_spec(
        run_id=run_id,
        argv=[claude_bin, "-p", "clean the build"],
        cwd=str(workdir),
        env=env,
        overrides={"agent": "claude", **overrides},
    )


async def parked_approval(handle: RunHandle) -> ApprovalRecord:
    """Wait until the run waits on one approval with no claude process left."""

    async def check() -> ApprovalRecord | None:
        status = await handle.status()
        if status.state is not RunState.WAITING_APPROVAL or status.live is not None:
            return None
        if status.last_attempt is None or status.last_attempt.outcome is not AttemptOutcome.AWAITING_DECISION:
            return None
        pending = status.pending_approvals
        return pending[0] if len(pending) == 1 else None

    return await eventually(check, timeout=120, what="a deferred claude call")


async def test_approve_runs_the_command(
    supervisor: Supervisor,
    settings: Settings,
    run_id: Any,
    claude_bin: str,
    workdir: Path,
    claude_env: dict[str, str],
    model_api: ModelAPI,
) -> None:
    spec = claude_spec(settings, run_id("claude"), claude_bin, workdir, claude_env)
    handle = await supervisor.start_run(spec)
    approval = await parked_approval(handle)
    assert approval.summary == "Bash: rm -rf build"
    assert approval.details["tool_input"]["command"] == "rm -rf build"  # type: ignore[index, call-overload]
    assert (workdir / "build").exists()  # nothing ran while it waited

    await supervisor.decide(approval.approval_id, approve=True, by="alice")
    result = await handle.result()
    assert (result.state, result.exit_code, result.attempt) == (RunState.SUCCEEDED, 0, 2)
    assert not (workdir / "build").exists()
    status = await handle.status()
    assert status.last_attempt is not None and status.last_attempt.agent_session
    assert "Done. Tool said:" in "\n".join(status.last_attempt.tail)


async def test_reject_keeps_the_build_and_claude_gets_the_reason(
    supervisor: Supervisor,
    settings: Settings,
    run_id: Any,
    claude_bin: str,
    workdir: Path,
    claude_env: dict[str, str],
    model_api: ModelAPI,
) -> None:
    spec = claude_spec(settings, run_id("claude"), claude_bin, workdir, claude_env)
    handle = await supervisor.start_run(spec)
    approval = await parked_approval(handle)
    await supervisor.decide(approval.approval_id, approve=False, by="bob", reason="keep the build")
    result = await handle.result()
    assert (result.state, result.exit_code) == (RunState.SUCCEEDED, 0)
    assert (workdir / "build" / "out.o").exists()
    assert any("keep the build" in text for text in model_api.tool_results())


async def test_expiry_applies_the_configured_outcome(
    supervisor: Supervisor,
    settings: Settings,
    run_id: Any,
    claude_bin: str,
    workdir: Path,
    claude_env: dict[str, str],
    model_api: ModelAPI,
) -> None:
    spec = claude_spec(
        settings, run_id("claude"), claude_bin, workdir, claude_env, approval_timeout=timedelta(seconds=3)
    )
    handle = await supervisor.start_run(spec)
    result = await handle.result()
    assert (result.state, result.attempt) == (RunState.SUCCEEDED, 2)  # claude's own end state
    (approval,) = (await handle.status()).approvals
    assert approval.state is ApprovalState.EXPIRED
    assert (workdir / "build" / "out.o").exists()
    assert any("expired" in text for text in model_api.tool_results())


@pytest.mark.parametrize(
    ("policy", "removed", "kind"),
    [
        ({"allow": ["Bash(rm -rf build)"]}, True, "policy_allow"),
        ({"deny": ["Bash(rm *)"]}, False, "policy_deny"),
    ],
)
async def test_policy_decides_with_no_person_asked(
    supervisor: Supervisor,
    settings: Settings,
    run_id: Any,
    claude_bin: str,
    workdir: Path,
    claude_env: dict[str, str],
    model_api: ModelAPI,
    policy: dict[str, list[str]],
    removed: bool,
    kind: str,
) -> None:
    spec = claude_spec(settings, run_id("claude"), claude_bin, workdir, claude_env, policy=policy)
    handle = await supervisor.start_run(spec)
    result = await handle.result()
    assert (result.state, result.attempt) == (RunState.SUCCEEDED, 1)
    assert (workdir / "build").exists() is not removed
    status = await handle.status()
    assert status.approvals == []
    (entry,) = [e for e in status.audit if e.kind.startswith("policy_")]
    assert entry.kind == kind and entry.detail == "Bash: rm -rf build"
    rule = (policy.get("allow") or policy["deny"])[0]
    assert entry.by == f"policy: {kind.removeprefix('policy_')} {rule}"
    if not removed:
        assert any(rule in text for text in model_api.tool_results())


async def test_blocking_mode_holds_claude_until_the_decision(
    supervisor: Supervisor,
    settings: Settings,
    run_id: Any,
    claude_bin: str,
    workdir: Path,
    claude_env: dict[str, str],
    model_api: ModelAPI,
) -> None:
    spec = claude_spec(settings, run_id("claude"), claude_bin, workdir, claude_env, agent_mode="block")
    handle = await supervisor.start_run(spec)

    async def waiting_alive() -> ApprovalRecord | None:
        status = await handle.status()
        if status.live is None or not status.pending_approvals:
            return None
        return status.pending_approvals[0]

    approval = await eventually(waiting_alive, timeout=120, what="a blocked claude call")
    assert approval.summary == "Bash: rm -rf build"
    assert (workdir / "build").exists()
    await supervisor.decide(approval.approval_id, approve=True, by="carol")
    result = await handle.result()
    assert (result.state, result.attempt) == (RunState.SUCCEEDED, 1)  # no relaunch
    assert not (workdir / "build").exists()


async def test_a_second_call_in_the_same_turn_blocks_instead_of_deferring(
    supervisor: Supervisor,
    settings: Settings,
    run_id: Any,
    claude_bin: str,
    workdir: Path,
    claude_env: dict[str, str],
    model_api: ModelAPI,
) -> None:
    # Claude keeps only one deferred call per exit, so the second one must wait on the socket.
    model_api.script = Script(calls=[("Bash", {"command": "touch one"}), ("Bash", {"command": "touch two"})])
    spec = claude_spec(settings, run_id("claude"), claude_bin, workdir, claude_env)
    handle = await supervisor.start_run(spec)

    async def both_asked() -> list[ApprovalRecord] | None:
        status = await handle.status()
        pending = status.pending_approvals
        return pending if len(pending) == 2 and status.live is not None else None

    first, second = await eventually(both_asked, timeout=120, what="two calls, the second blocking")
    assert (first.summary, second.summary) == ("Bash: touch one", "Bash: touch two")
    await supervisor.decide(second.approval_id, approve=True, by="alice")
    await eventually(lambda: (workdir / "two").exists(), timeout=120, what="the blocked call ran")
    parked = await parked_approval(handle)  # then claude exits with the first call deferred
    assert parked.approval_id == first.approval_id
    await supervisor.decide(first.approval_id, approve=True, by="alice")
    result = await handle.result()
    assert (result.state, result.attempt) == (RunState.SUCCEEDED, 2)
    assert (workdir / "one").exists()


async def test_a_decision_given_before_claude_exits_still_runs_the_call(
    supervisor: Supervisor,
    settings: Settings,
    run_id: Any,
    claude_bin: str,
    workdir: Path,
    claude_env: dict[str, str],
    model_api: ModelAPI,
) -> None:
    # The hook has answered `defer`, so claude will not run the call whatever comes next; a
    # decision that lands before claude has exited must still relaunch it (it used to end the
    # run `succeeded` at attempt 1 with the approved command never run).
    spec = claude_spec(settings, run_id("claude"), claude_bin, workdir, claude_env)
    handle = await supervisor.start_run(spec)

    async def asked() -> ApprovalRecord | None:
        pending = (await handle.status()).pending_approvals
        return pending[0] if pending else None

    approval = await eventually(asked, timeout=120, interval=0.01, what="the call asked")
    await supervisor.decide(approval.approval_id, approve=True, by="alice")
    result = await handle.result()
    assert (result.state, result.exit_code, result.attempt) == (RunState.SUCCEEDED, 0, 2)
    assert not (workdir / "build").exists()
