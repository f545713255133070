"""Codex end to end: the real `codex exec` binary, a real worker, the scripted Responses API.

`codex exec` (0.171.0) never asks for approval itself, so the adapter installs a blocking
PreToolUse hook; these tests pin that it really gates the command, and that a wait outliving
the hook ends codex's turn and resumes the session (`codex exec resume`) after the decision.
The adapter's pure parts (argv, keys) and the hook's hand-over are tested here too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from tests.agents.conftest import agent_binary
from tests.agents.model_api import ModelAPI, Script
from tests.agents.test_hook import Supervisor as HookSupervisor
from tests.agents.test_hook import run_hook
from tests.support import eventually
from toolwarden import protocol
from toolwarden.agents import codex
from toolwarden.channel import NotifyPending
from toolwarden.client import RunHandle, Supervisor
from toolwarden.config import Settings
from toolwarden.models import (
    AgentMode,
    ApprovalRecord,
    ApprovalState,
    AttemptOutcome,
    Decision,
    RunSpec,
    RunState,
)
from toolwarden.worker.runner import build_worker

worker = pytest.mark.usefixtures("worker")
COMMAND = "touch made-by-codex"  # codex refuses `rm -rf` by its own rules, before any hook


@pytest.fixture
def codex_bin() -> str:
    found = agent_binary("codex")
    if found is None:
        pytest.skip("the codex binary is not installed: npm install --prefix .agents-cli @openai/codex")
    return found


@pytest.fixture
def codex_api() -> Iterator[ModelAPI]:
    server = ModelAPI(Script(calls=[("Bash", {"command": COMMAND})])).start()
    try:
        yield server
    finally:
        server.stop()


def codex_spec(
    settings: Settings, run_id: str, codex_bin: str, tmp_path: Path, api: ModelAPI, **overrides: Any
) -> RunSpec:
    home = tmp_path / "codex-home"
    (home / ".codex").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    provider = [
        "-c", "model_provider=tw", "-c", "model=gpt-test", "-c", "model_providers.tw.name=tw",
        "-c", f'model_providers.tw.base_url="{api.base_url}/v1"',
        "-c", 'model_providers.tw.wire_api="responses"', "-c", 'model_providers.tw.env_key="OPENAI_API_KEY"',
        "-c", "model_providers.tw.request_max_retries=0", "-c", "model_providers.tw.stream_max_retries=0",
    ]
    return settings.run_spec(
        run_id=run_id,
        argv=[codex_bin, "exec", "--skip-git-repo-check", "-s", "workspace-write", *provider, "make it"],
        cwd=str(work),
        env={"HOME": str(home), "CODEX_HOME": str(home / ".codex"), "OPENAI_API_KEY": "sk-test-dummy"},
        overrides={"agent": "codex", **overrides},
    )


@worker
@pytest.mark.parametrize("approve", [True, False])
async def test_a_person_decides_while_codex_waits(
    supervisor: Supervisor, settings: Settings, run_id: Any, codex_bin: str, tmp_path: Path,
    codex_api: ModelAPI, approve: bool,
) -> None:
    spec = codex_spec(settings, run_id("codex"), codex_bin, tmp_path, codex_api)
    handle = await supervisor.start_run(spec)

    async def asked() -> ApprovalRecord | None:
        status = await handle.status()
        return status.pending_approvals[0] if status.pending_approvals and status.live else None

    approval = await eventually(asked, timeout=120, what="codex's command as an approval")
    assert approval.summary == f"Bash: {COMMAND}"
    assert approval.key.startswith("codex-")
    made = tmp_path / "work" / "made-by-codex"
    assert not made.exists()
    await supervisor.decide(approval.approval_id, approve=approve, by="erin",
                            reason=None if approve else "no files today")
    result = await handle.result()
    assert (result.state, result.attempt) == (RunState.SUCCEEDED, 1)
    assert made.exists() is approve
    if not approve:
        assert any("no files today" in text for text in codex_api.tool_results())


@worker
async def test_policy_allows_codex_with_no_person_asked(
    supervisor: Supervisor, settings: Settings, run_id: Any, codex_bin: str, tmp_path: Path,
    codex_api: ModelAPI,
) -> None:
    spec = codex_spec(settings, run_id("codex"), codex_bin, tmp_path, codex_api,
                      policy={"allow": ["Bash(touch *)"]})
    result = await (await supervisor.start_run(spec)).result()
    assert result.state is RunState.SUCCEEDED
    assert (tmp_path / "work" / "made-by-codex").exists()


# -- a wait that outlives the hook: the turn ends, the session is resumed --------------------

# The shortest hook timeout: the hook hands the wait over 5 s after codex runs it.
SHORT_HOOK = timedelta(seconds=20)


async def handed_over(handle: RunHandle) -> ApprovalRecord:
    """Wait until codex ended its turn on a pending approval and no codex process is left."""

    async def check() -> ApprovalRecord | None:
        status = await handle.status()
        last = status.last_attempt
        if status.state is not RunState.WAITING_APPROVAL or status.live is not None or last is None:
            return None
        if last.outcome is not AttemptOutcome.AWAITING_DECISION:
            return None
        pending = status.pending_approvals
        return pending[0] if len(pending) == 1 else None

    return await eventually(check, timeout=120, what="codex's turn ended on a pending approval")


@worker
@pytest.mark.timeout(240)
@pytest.mark.parametrize("approve", [True, False])
async def test_a_wait_that_outlives_the_hook_resumes_the_session(
    supervisor: Supervisor, settings: Settings, run_id: Any, codex_bin: str, tmp_path: Path,
    codex_api: ModelAPI, approve: bool,
) -> None:
    spec = codex_spec(settings, run_id("codex"), codex_bin, tmp_path, codex_api,
                      agent_hook_timeout=SHORT_HOOK)
    started = time.monotonic()
    handle = await supervisor.start_run(spec)
    approval = await handed_over(handle)
    parked = time.monotonic() - started
    made = tmp_path / "work" / "made-by-codex"
    assert not made.exists()
    status = await handle.status()
    assert status.last_attempt is not None
    session = status.last_attempt.agent_session
    assert session and approval.key.startswith(f"codex-{session}-")
    told = [text for text in codex_api.tool_results() if approval.approval_id in text]
    assert told and "this turn ends, toolwarden resumes the session" in told[0]

    decided_at = time.monotonic()
    await supervisor.decide(approval.approval_id, approve=approve, by="erin",
                            reason=None if approve else "no files today")
    result = await handle.result()
    print(f"\ncodex resume ({'approve' if approve else 'reject'}): start to turn ended on the pending "
          f"approval {parked:.1f} s (hook timeout {SHORT_HOOK.total_seconds():.0f} s); decision to "
          f"the resumed run's end {time.monotonic() - decided_at:.1f} s")
    assert (result.state, result.exit_code, result.attempt) == (RunState.SUCCEEDED, 0, 2)  # one resume
    assert made.exists() is approve
    final = await handle.status()
    assert final.last_attempt is not None and final.last_attempt.agent_session == session
    # The resumed session asked for the same command again and got the decision at once.
    (record,) = final.approvals
    assert record.key == approval.key
    resumed = [c for c in final.last_attempt.agent_calls if c.approval_key == approval.key]
    assert len(resumed) == 1 and resumed[0].tool_use_id != status.last_attempt.agent_calls[0].tool_use_id
    assert any(codex.RESUME_PROMPT in json.dumps(body) for body in codex_api.requests)
    if not approve:
        assert any("no files today" in text for text in codex_api.tool_results())


@pytest.mark.timeout(240)
async def test_a_handed_over_wait_outlives_its_worker_and_a_new_worker_resumes_it(
    client: Client, supervisor: Supervisor, settings: Settings, run_id: Any, codex_bin: str,
    tmp_path: Path, codex_api: ModelAPI,
) -> None:
    spec = codex_spec(settings, run_id("codex"), codex_bin, tmp_path, codex_api,
                      agent_hook_timeout=SHORT_HOOK)
    async with build_worker(client, settings):
        handle = await supervisor.start_run(spec)
        approval = await handed_over(handle)
    # The worker is gone; no codex process and no activity hold the wait.
    decided = await supervisor.decide(approval.approval_id, approve=True, by="dave")
    assert decided.queued
    assert not (tmp_path / "work" / "made-by-codex").exists()
    async with build_worker(client, settings):
        result = await handle.result()
    assert (result.state, result.exit_code, result.attempt) == (RunState.SUCCEEDED, 0, 2)
    assert (tmp_path / "work" / "made-by-codex").exists()


# -- the hook hands a wait over ----------------------------------------------------------------


async def test_the_hook_hands_a_pending_wait_over_before_its_timeout(tmp_path: Path) -> None:
    sup = HookSupervisor(tmp_path / "s.sock")
    approval_id = "run-1/codex-s-1-abc"

    async def pending(call: protocol.AgentCallMessage, notify: NotifyPending) -> Decision:
        notify(approval_id, datetime.now(UTC) + timedelta(hours=1))
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    sup.handler = pending
    call = {"session_id": "s-1", "hook_event_name": "PreToolUse", "tool_name": "Bash",
            "tool_use_id": "call_1", "tool_input": {"command": "touch x"}}
    await sup.channel.start()
    try:
        _, out, elapsed = await run_hook(
            json.dumps(call).encode(), "codex", "--timeout", "4", "--resume", socket_path=sup.channel.path
        )
    finally:
        await sup.channel.close()
    assert out["hookSpecificOutput"] == {
        "hookEventName": "PreToolUse",
        "permissionDecision": "deny",
        "permissionDecisionReason": f"toolwarden: waiting for approval {approval_id}; this turn ends, "
        "toolwarden resumes the session once it is decided",
    }
    assert 1.5 < elapsed < 4  # handed over 2 s before its timeout, not at it
    assert [(c.wait, c.tool_use_id, c.session_id) for c in sup.calls] == [
        (True, "call_1", "s-1"), (False, "call_1", "s-1")
    ]


async def test_a_decision_that_comes_as_the_hook_hands_over_is_the_answer(tmp_path: Path) -> None:
    sup = HookSupervisor(tmp_path / "s.sock")

    async def decided_by_then(call: protocol.AgentCallMessage, notify: NotifyPending) -> Decision:
        if call.wait:
            notify("run-1/k", datetime.now(UTC) + timedelta(hours=1))
            await asyncio.Event().wait()
        return Decision(key="k", outcome=ApprovalState.APPROVED, approved=True, by="erin")

    sup.handler = decided_by_then
    call = {"session_id": "s-1", "hook_event_name": "PreToolUse", "tool_name": "Bash",
            "tool_input": {"command": "touch x"}}
    await sup.channel.start()
    try:
        _, out, _ = await run_hook(
            json.dumps(call).encode(), "codex", "--timeout", "4", "--resume", socket_path=sup.channel.path
        )
    finally:
        await sup.channel.close()
    assert out == {}  # allowed: the command runs in this turn


# -- the adapter's pure parts -------------------------------------------------------------------


def pure_spec(**fields: Any) -> RunSpec:
    return RunSpec(run_id="r1", tool_name="codex", argv=["codex", "exec", "make it"], **fields)


def hook_config(override: str) -> tuple[str, int]:
    command = override.split('command="', 1)[1].split('"', 1)[0]
    timeout = int(override.rsplit("timeout=", 1)[1].split("}", 1)[0])
    return command, timeout


def test_defer_mode_holds_codex_ten_minutes_at_most_then_resumes() -> None:
    assert hook_config(codex.hook_override(pure_spec(), resume=True)) == (
        "toolwarden hook codex --timeout 590 --resume", 600
    )
    short = pure_spec(agent_hook_timeout=timedelta(seconds=20))
    assert hook_config(codex.hook_override(short, resume=True)) == (
        "toolwarden hook codex --timeout 10 --resume", 20
    )
    block = pure_spec(agent_mode=AgentMode.BLOCK)  # holds codex up to agent_hook_timeout, no resume
    assert hook_config(codex.launch_argv(block.argv, block)[4]) == (
        f"toolwarden hook codex --timeout {86400 - 10}", 86400
    )
    assert "--resume" in codex.launch_argv(["codex", "exec", "x"], pure_spec())[4]
    assert "--resume" not in codex.launch_argv(["codex", "exec", "--ephemeral", "x"], pure_spec())[4]


def test_a_relaunch_resumes_the_session_with_the_runs_options() -> None:
    argv = ["codex", "exec", "--skip-git-repo-check", "-s", "workspace-write", "-c", "model=x",
            "-i", "a.png", "--json", "make it"]
    launched = codex.launch_argv(argv, pure_spec(), resume="01a2-sess")
    assert launched[:3] == ["codex", "exec", codex.TRUST_FLAG]
    assert launched[5:] == [
        "--skip-git-repo-check", "-s", "workspace-write", "-c", "model=x", "--json",
        "resume", "01a2-sess", codex.RESUME_PROMPT,
    ]
    # The run's own `exec resume`: its options stay after `resume`, its session and prompt go.
    own = ["codex", "exec", "-m", "o3", "resume", "--last", "--all", "more", "--", "-x"]
    assert codex.launch_argv(own, pure_spec(), resume="S")[5:] == [
        "-m", "o3", "resume", "--all", "S", codex.RESUME_PROMPT
    ]


def test_keys_bind_to_the_session_and_the_command_not_the_call() -> None:
    first = codex.approval_key("01a2-sess", "call_1", {"command": "touch x"})
    assert first == codex.approval_key("01a2-sess", "call_2", {"command": "touch x"})
    assert first.startswith("codex-01a2-sess-")
    assert first != codex.approval_key("01a2-sess", "call_1", {"command": "touch y"})
    assert first != codex.approval_key("other", "call_1", {"command": "touch x"})
    assert protocol.check_key(codex.approval_key("x" * 200 + "/!", None, None))


def test_the_attempt_awaits_only_a_handed_over_wait_with_a_session() -> None:
    assert codex.awaits_decision(0, ["k"], [], "s")  # decided since: resume at once
    assert codex.awaits_decision(0, [], ["k"], "s")
    assert not codex.awaits_decision(0, [], [], "s")
    assert not codex.awaits_decision(1, ["k"], ["k"], "s")
    assert not codex.awaits_decision(0, ["k"], ["k"], None)
