"""What the `run_tool` activity asks of an agent adapter: the argv, and one call's fate.

The activity stays a thin adapter: it calls `launch_argv` before launching, `screen` for each
`agent_call` a hook sends, and `awaits_decision` when the agent exits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from toolwarden import protocol
from toolwarden.agents import claude, codex, policy
from toolwarden.models import (
    AgentCallRecord,
    AgentKind,
    ApprovalAsk,
    ApprovalState,
    Decision,
    RunSpec,
)


def launch_argv(spec: RunSpec, resume_session: str | None) -> list[str]:
    """The agent's argv with our hook installed (and the session resumed after a decision)."""
    if spec.agent is AgentKind.CLAUDE:
        return claude.launch_argv(spec.argv, spec, resume=resume_session)
    if spec.agent is AgentKind.CODEX:
        return codex.launch_argv(spec.argv, spec)
    return list(spec.argv)


@dataclass(frozen=True, slots=True)
class Screened:
    """A call the policy decided (`decision`), or one a person must decide (`ask`)."""

    record: AgentCallRecord
    decision: Decision | None = None
    ask: ApprovalAsk | None = None


def screen(spec: RunSpec, call: protocol.AgentCallMessage, cwd: str | None, now: datetime) -> Screened:
    """Apply the run's policy to one call."""
    verdict = policy.evaluate(spec.agent_policy, call.tool_name, call.tool_input, cwd)
    summary = claude.summary(call.tool_name, call.tool_input, cwd)
    record = AgentCallRecord(
        at=now,
        tool_name=call.tool_name,
        summary=summary,
        tool_use_id=call.tool_use_id,
        verdict=verdict.verdict.value,
        rule=verdict.rule,
    )
    if verdict.verdict is policy.Verdict.ASK:
        ask = claude.approval_ask(
            call.agent,
            call.tool_name,
            call.tool_input,
            tool_use_id=call.tool_use_id,
            session_id=call.session_id,
            cwd=cwd,
            rule=verdict.rule,
        )
        if spec.agent is AgentKind.CODEX:
            ask = ask.model_copy(update={"key": "codex" + ask.key.removeprefix("claude")})
        record.approval_key = ask.key
        return Screened(record=record, ask=ask)
    approved = verdict.verdict is policy.Verdict.ALLOW
    decision = Decision(
        key=record.approval_key or f"policy-{call.tool_use_id or call.id}",
        outcome=ApprovalState.APPROVED if approved else ApprovalState.REJECTED,
        approved=approved,
        by=verdict.decided_by,
        reason=f"{verdict.rule}: {summary}",
        decided_at=now,
    )
    return Screened(record=record, decision=decision)


def awaits_decision(spec: RunSpec, exit_code: int | None, deferred: Sequence[str]) -> bool:
    """The agent exited so a person can decide: relaunch it (resumed) after the decision."""
    if spec.agent is AgentKind.CLAUDE:
        return claude.awaits_decision(exit_code, deferred)
    return False
