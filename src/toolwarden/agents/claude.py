"""Claude Code (`claude -p`): the settings we inject, the relaunch argv, and its approvals.

How a risky call becomes a decision without holding a process (see docs/agents.md):

1. `launch_argv` adds `--settings '{"hooks":{"PreToolUse":...}}'` running `toolwarden hook
   claude`; claude merges it with the user's own settings files, so their hooks still run.
2. The hook sends the call to the supervisor (`agent_call`), which applies the policy; a call
   that asks becomes an approval keyed by `approval_key` and the hook answers `defer`.
3. Claude then exits 0 with `stop_reason: tool_deferred`. Exit status 0 alone cannot tell a
   deferral from a finished task, so `awaits_decision` asks what the supervisor itself saw: a
   call it answered "pending" to. Decided or not by the time claude exited, that call has not
   run, so the run relaunches (at once, if it was decided meanwhile).
4. After the decision the next attempt runs `launch_argv(..., resume=SESSION)`: the prompt
   removed, `--resume SESSION` added, the same flags and settings. Claude runs the hook again
   for the same `tool_use_id` and input; the approval key is the same, so the workflow answers
   with the recorded decision at once and the hook says allow, or deny with the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from toolwarden.agents import policy
from toolwarden.models import AgentMode, ApprovalAsk, RunSpec

HOOK_COMMAND = "toolwarden hook claude"
# The shortest hook timeout we inject (agent_hook_timeout is normally far longer).
DEFER_HOOK_TIMEOUT = timedelta(seconds=60)
# The hook answers this long before claude would kill it (claude fails open on a timeout).
HOOK_MARGIN = timedelta(seconds=10)

PRINT_FLAGS = frozenset({"-p", "--print"})
RESUME_FLAGS = frozenset({"-r", "--resume", "-c", "--continue", "--session-id"})
# Options of `claude` that take a value, so the word after them is not the prompt.
VALUE_OPTIONS = frozenset(
    {
        "--model", "--fallback-model", "--settings", "--setting-sources", "--output-format",
        "--input-format", "--permission-mode", "--append-system-prompt", "--system-prompt",
        "--mcp-config", "--max-turns", "--session-id", "--resume", "-r", "--agents", "--agent",
        "--permission-prompt-tool", "--plugin-dir", "--betas", "--max-budget-usd",
    }
)
MAX_SUMMARY_SUBJECT = 300
MAX_DETAILS_BYTES = 30000  # under the protocol's 32 KiB, leaving room for the other fields
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._:-]+")


def hook_timeout(spec: RunSpec) -> timedelta:
    """The hook's `timeout` in the injected settings: long, for the blocking fallback.

    A deferring hook answers within a round trip, but a second call deferred in the same turn
    would be dropped by claude, so the supervisor makes that one block; it needs the time.
    """
    return max(spec.agent_hook_timeout, DEFER_HOOK_TIMEOUT)


def settings_document(spec: RunSpec) -> str:
    """The `--settings` JSON: one PreToolUse hook on every tool, answering before its timeout."""
    timeout = hook_timeout(spec)
    answer_within = int((timeout - HOOK_MARGIN).total_seconds())
    command = f"{HOOK_COMMAND} --timeout {answer_within}"
    if spec.agent_mode is AgentMode.BLOCK:
        command += " --block"
    hook = {"type": "command", "command": command, "timeout": int(timeout.total_seconds())}
    return json.dumps(
        {"hooks": {"PreToolUse": [{"matcher": "*", "hooks": [hook]}]}}, separators=(",", ":")
    )


def prompt_index(argv: Sequence[str]) -> int | None:
    """Where the prompt is in `claude -p PROMPT [flags]` (or `claude [flags] -p PROMPT`)."""
    for i, word in enumerate(argv[1:], start=1):
        if word in PRINT_FLAGS and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            return i + 1
    last = len(argv) - 1
    if last >= 1 and not argv[last].startswith("-") and argv[last - 1] not in VALUE_OPTIONS:
        return last
    return None


def launch_argv(argv: Sequence[str], spec: RunSpec, resume: str | None = None) -> list[str]:
    """The argv to run: the user's, plus our settings, and on a relaunch `--resume SESSION`."""
    words = list(argv)
    if resume is not None:
        index = prompt_index(words)
        if index is not None:
            del words[index]
        words = _without_session_flags(words)
        words[1:1] = ["--resume", resume]
    words[1:1] = ["--settings", settings_document(spec)]
    return words


def _without_session_flags(words: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        if word in RESUME_FLAGS:
            skip = word in VALUE_OPTIONS
            continue
        kept.append(word)
    return kept


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def approval_key(tool_use_id: str | None, tool_input: Any) -> str:
    """`claude-<tool_use_id>-<hash of the canonical input>`: one exact call, one decision."""
    digest = hashlib.sha256(canonical_json(tool_input).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    use = _UNSAFE_KEY_CHARS.sub("-", tool_use_id or "call").strip("-.:_")[:80] or "call"
    return f"claude-{use}-{digest}"


def summary(tool_name: str, tool_input: Any, cwd: str | None = None) -> str:
    """`Bash: rm -rf build`, `Edit: src/app.py`: the tool and what it acts on, on one line."""
    found = policy.subject(tool_name, tool_input, cwd)
    if found is None:
        found = "" if tool_input in (None, {}) else canonical_json(tool_input)
    found = " ".join(found.split())
    if len(found) > MAX_SUMMARY_SUBJECT:
        found = found[: MAX_SUMMARY_SUBJECT - 1] + "…"
    return f"{tool_name}: {found}" if found else tool_name


def approval_ask(
    agent: str,
    tool_name: str,
    tool_input: Any,
    *,
    tool_use_id: str | None,
    session_id: str | None,
    cwd: str | None,
    rule: str,
) -> ApprovalAsk:
    """The approval a person sees for one call; details carry the full input."""
    details: dict[str, Any] = {
        "agent": agent,
        "tool_name": tool_name,
        "tool_input": tool_input,
        "tool_use_id": tool_use_id,
        "session_id": session_id,
        "cwd": cwd,
        "rule": rule,
    }
    size = len(canonical_json(details).encode("utf-8", "surrogatepass"))
    if size > MAX_DETAILS_BYTES:  # a large Write: keep the start of the input, say it is cut
        text = canonical_json(tool_input)[: MAX_DETAILS_BYTES // 2]
        details["tool_input"] = {"truncated_json": text, "bytes": size}
    return ApprovalAsk(
        key=approval_key(tool_use_id, tool_input),
        summary=summary(tool_name, tool_input, cwd),
        details=details,
    )


def awaits_decision(exit_code: int | None, deferred: Sequence[str]) -> bool:
    """Claude exited cleanly after our hook deferred a call: it ran nothing of it yet.

    Claude's exit status after a deferral is 0 (not EXIT_AWAIT_DECISION): the deferral is
    known from the supervisor's side, the `pending` it sent to a hook that then hung up. The
    call may have been decided before claude exited; it is still unrun, so the relaunch runs
    (or refuses) it with nothing left to wait for.
    """
    return exit_code == 0 and bool(deferred)
