"""`toolwarden hook claude|codex` as the agents run it: a subprocess, JSON on stdin and stdout.

The supervisor here is the real `ToolChannel` with a handler standing in for the activity, so
these tests pin the hook's own behaviour: it never crashes, never runs past its timeout, and
answers deny with a reason on anything it cannot trust.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from toolwarden import protocol
from toolwarden.channel import NotifyPending, ToolChannel
from toolwarden.models import ApprovalAsk, ApprovalState, Decision

TOOLWARDEN = str(Path(sys.executable).parent / "toolwarden")
CALL = {
    "session_id": "s-1",
    "hook_event_name": "PreToolUse",
    "tool_name": "Bash",
    "tool_input": {"command": "rm -rf build"},
    "tool_use_id": "toolu_1",
}
Handler = Callable[[protocol.AgentCallMessage, NotifyPending], Awaitable[Decision]]


async def run_hook(
    stdin: bytes, *args: str, socket_path: Path | None = None
) -> tuple[int, dict[str, Any], float]:
    env = {"PATH": "/usr/bin:/bin"}
    if socket_path is not None:
        env[protocol.ENV_SOCKET] = str(socket_path)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        TOOLWARDEN, "hook", *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout=60)
    return proc.returncode or 0, json.loads(out), time.monotonic() - started


def claude_answer(output: dict[str, Any]) -> tuple[str, str]:
    specific = output["hookSpecificOutput"]
    assert specific["hookEventName"] == "PreToolUse"
    return specific["permissionDecision"], specific["permissionDecisionReason"]


class Supervisor:
    """A channel whose agent calls go to `handler`; records what it was sent."""

    def __init__(self, path: Path) -> None:
        self.calls: list[protocol.AgentCallMessage] = []
        self.handler: Handler | None = None
        self.channel = ToolChannel(
            path,
            run_id="run-1",
            attempt=1,
            heartbeat_interval=1.0,
            on_heartbeat=lambda progress, message: None,
            on_request=self._unused,
            on_agent_call=self._call,
        )

    async def _unused(self, ask: ApprovalAsk, notify: NotifyPending) -> Decision:
        raise AssertionError("the hook sends agent calls only")

    async def _call(self, call: protocol.AgentCallMessage, notify: NotifyPending) -> Decision:
        self.calls.append(call)
        assert self.handler is not None
        return await self.handler(call, notify)


@pytest.fixture
async def supervisor(tmp_path: Path) -> AsyncIterator[Supervisor]:
    sup = Supervisor(tmp_path / "s.sock")
    await sup.channel.start()
    try:
        yield sup
    finally:
        await sup.channel.close()


def decided(approved: bool, reason: str | None = None) -> Handler:
    async def handler(call: protocol.AgentCallMessage, notify: NotifyPending) -> Decision:
        state = ApprovalState.APPROVED if approved else ApprovalState.REJECTED
        return Decision(key="k", outcome=state, approved=approved, by="alice", reason=reason)

    return handler


def pending_forever() -> Handler:
    async def handler(call: protocol.AgentCallMessage, notify: NotifyPending) -> Decision:
        notify("run-1/claude-toolu_1-abc", datetime.now(UTC) + timedelta(hours=1))
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return handler


async def test_allow_and_deny_carry_the_decision(supervisor: Supervisor) -> None:
    supervisor.handler = decided(True)
    code, out, _ = await run_hook(json.dumps(CALL).encode(), "claude", socket_path=supervisor.channel.path)
    assert code == 0 and claude_answer(out) == ("allow", "toolwarden: approved by alice")
    (call,) = supervisor.calls
    assert (call.agent, call.tool_name, call.tool_use_id, call.session_id, call.wait) == (
        "claude", "Bash", "toolu_1", "s-1", False
    )
    assert call.tool_input == {"command": "rm -rf build"}

    supervisor.handler = decided(False, "keep the build")
    _, out, _ = await run_hook(json.dumps(CALL).encode(), "claude", socket_path=supervisor.channel.path)
    assert claude_answer(out) == ("deny", "toolwarden: rejected by alice: keep the build")


async def test_pending_defers_and_blocking_waits_until_its_timeout(supervisor: Supervisor) -> None:
    supervisor.handler = pending_forever()
    _, out, elapsed = await run_hook(json.dumps(CALL).encode(), "claude", socket_path=supervisor.channel.path)
    behavior, reason = claude_answer(out)
    assert behavior == "defer" and "run-1/claude-toolu_1-abc" in reason
    assert elapsed < 10

    _, out, elapsed = await run_hook(
        json.dumps(CALL).encode(), "claude", "--block", "--timeout", "2", socket_path=supervisor.channel.path
    )
    behavior, reason = claude_answer(out)
    assert behavior == "deny" and "run-1/claude-toolu_1-abc is still pending" in reason
    assert 1.5 < elapsed < 10
    assert supervisor.calls[-1].wait is True


@pytest.mark.parametrize(
    ("stdin", "why"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"tool_input": {}}', "no tool_name"),
        (b"\xff\xfe", "not JSON"),
        (b"", "not JSON"),
        (b'{"tool_name": "Read", "tool_input": ["x"]}', "tool_input is not a JSON object"),
        (b'{"tool_name": "Read", "tool_input": {}, "tool_use_id": 7}', "tool_use_id is not a string"),
        (b'{"tool_name": "Read", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not JSON"),
    ],
)
async def test_malformed_input_is_denied_with_a_reason(
    supervisor: Supervisor, stdin: bytes, why: str
) -> None:
    code, out, _ = await run_hook(stdin, "claude", socket_path=supervisor.channel.path)
    behavior, reason = claude_answer(out)
    assert code == 0 and behavior == "deny" and "malformed hook input" in reason and why in reason
    assert supervisor.calls == []


async def test_unsupervised_or_unreachable_is_denied(tmp_path: Path) -> None:
    _, out, _ = await run_hook(json.dumps(CALL).encode(), "claude")
    assert claude_answer(out)[0] == "deny" and "not supervised" in claude_answer(out)[1]
    _, out, _ = await run_hook(json.dumps(CALL).encode(), "claude", socket_path=tmp_path / "gone.sock")
    assert claude_answer(out)[0] == "deny" and "supervisor unreachable" in claude_answer(out)[1]


async def test_codex_answers_in_its_permission_request_shape(supervisor: Supervisor) -> None:
    supervisor.handler = decided(False, "no network")
    codex_call = {"hook_event_name": "PermissionRequest", "tool_name": "Bash",
                  "tool_input": {"command": "curl example.com"}}
    _, out, _ = await run_hook(json.dumps(codex_call).encode(), "codex", socket_path=supervisor.channel.path)
    assert out == {
        "hookSpecificOutput": {
            "hookEventName": "PermissionRequest",
            "decision": {"behavior": "deny", "message": "toolwarden: rejected by alice: no network"},
        }
    }
    assert supervisor.calls[-1].wait is True and supervisor.calls[-1].agent == "codex"


async def test_codex_pre_tool_use_says_nothing_to_allow_and_denies_with_a_reason(
    supervisor: Supervisor,
) -> None:
    codex_call = {"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_use_id": "call_1",
                  "tool_input": {"command": "touch x"}}
    supervisor.handler = decided(True)
    _, out, _ = await run_hook(json.dumps(codex_call).encode(), "codex", socket_path=supervisor.channel.path)
    assert out == {}
    supervisor.handler = decided(False, "not here")
    _, out, _ = await run_hook(json.dumps(codex_call).encode(), "codex", socket_path=supervisor.channel.path)
    assert out["hookSpecificOutput"] == {
        "hookEventName": "PreToolUse",
        "permissionDecision": "deny",
        "permissionDecisionReason": "toolwarden: rejected by alice: not here",
    }
    _, out, _ = await run_hook(b"garbage", "codex", socket_path=supervisor.channel.path)
    assert out["hookSpecificOutput"]["permissionDecision"] == "deny"
