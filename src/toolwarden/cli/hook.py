"""`toolwarden hook claude|codex`: the agents' hook, run by the agent before a tool call.

Claude Code runs it as a PreToolUse command hook, Codex as a PermissionRequest hook: JSON on
stdin, one JSON answer on stdout. It forwards the call to the supervisor over the run's socket
(an `agent_call`, see specs/approval-protocol-v1.md), which applies the run's policy and, if a
person must decide, opens the approval.

Both agents run a tool call when a hook crashes or times out ("fails open"), so this command
never does either: every failure, including malformed input and an unreachable supervisor, is
answered with a deny that says why, and it answers `--timeout` seconds after it started at the
latest. It runs once per tool call inside the agent, so it imports only click, the standard
library and the protocol module (like `toolwarden ask`).
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import click

MAX_STDIN_BYTES = 1024 * 1024
# Claude's `defer` needs `-p`; elsewhere (or when it is not honoured) the hook blocks instead.
_DEFER = "defer"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the hook tells the agent: allow, deny, or (Claude only) defer, and why."""

    behavior: str
    reason: str


class HookFailure(Exception):
    """Anything that stops the hook from getting a decision; the agent is told to deny."""


def _read_stdin(deadline: float) -> bytes:
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (e.g. a test runner's)
        return sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HookFailure("the hook input did not arrive in time")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_STDIN_BYTES:
            raise HookFailure(f"the hook input is larger than {MAX_STDIN_BYTES} bytes")
        chunks.append(chunk)


# Fields Claude Code and Codex send as strings when they send them at all.
_TEXT_FIELDS = ("session_id", "tool_use_id", "hook_event_name", "cwd", "transcript_path")


def parse_input(raw: bytes) -> dict[str, Any]:
    """The agent's hook JSON; raises HookFailure saying what is wrong with it.

    Anything an agent would not send is refused, not repaired: a `tool_name` that is not a
    non-empty string, a `tool_input` that is not an object, an id or event that is not a string.
    """
    if len(raw) > MAX_STDIN_BYTES:
        raise HookFailure(f"the hook input is larger than {MAX_STDIN_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise HookFailure(f"malformed hook input (not JSON: {one_line(exc)})") from None
    if not isinstance(data, dict):
        raise HookFailure("malformed hook input (not a JSON object)")
    name = data.get("tool_name")
    if not isinstance(name, str) or not name:
        raise HookFailure("malformed hook input (no tool_name)")
    tool_input = data.get("tool_input")
    if tool_input is not None and not isinstance(tool_input, dict):
        raise HookFailure("malformed hook input (tool_input is not a JSON object)")
    for field in _TEXT_FIELDS:
        value = data.get(field)
        if value is not None and not isinstance(value, str):
            raise HookFailure(f"malformed hook input ({field} is not a string)")
    return data


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def ask_supervisor(
    agent: str, data: dict[str, Any], *, wait: bool, deadline: float, path: str | None
) -> Answer:
    """Send the call over the run's socket at `path` and turn the reply into an answer."""
    from toolwarden import protocol

    if not path:
        raise HookFailure(f"not supervised ({protocol.ENV_SOCKET} is not set)")
    request_id = uuid.uuid4().hex
    session = data.get("session_id")
    use_id = data.get("tool_use_id")
    try:
        line = protocol.encode_agent_call(
            request_id,
            agent=agent,
            tool_name=data["tool_name"],
            tool_input=data.get("tool_input"),
            session_id=session if isinstance(session, str) and session else None,
            tool_use_id=use_id if isinstance(use_id, str) and use_id else None,
            wait=wait,
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise HookFailure(f"malformed hook input ({one_line(exc)})") from None
    if len(line) > protocol.MAX_LINE_BYTES:
        raise HookFailure(f"the tool call is larger than {protocol.MAX_LINE_BYTES} bytes")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            sock.connect(path)
            sock.sendall(line)
        except OSError as exc:
            raise HookFailure(f"supervisor unreachable at {path}: {exc.strerror or exc}") from None
        return _await_reply(sock, request_id, wait=wait, deadline=deadline)


def _await_reply(sock: socket.socket, request_id: str, *, wait: bool, deadline: float) -> Answer:
    from toolwarden import protocol

    buffer = b""
    pending: protocol.Pending | None = None
    next_beat = time.monotonic() + protocol.DEFAULT_HEARTBEAT_INTERVAL
    while True:
        now = time.monotonic()
        if now >= deadline:
            if pending is not None:
                raise HookFailure(
                    f"approval {pending.approval_id} is still pending after the hook's timeout; "
                    "decide it, then resume the run"
                )
            raise HookFailure("no answer from the supervisor within the hook's timeout")
        if now >= next_beat:
            # A blocking wait shows as alive; hang detection already ignores a pending approval.
            what = pending.approval_id if pending is not None else "a decision"
            sock.sendall(protocol.encode_heartbeat(None, f"waiting for {what}"))
            next_beat = now + protocol.DEFAULT_HEARTBEAT_INTERVAL
        sock.settimeout(max(0.05, min(deadline, next_beat) - now))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError as exc:
            raise HookFailure(f"lost the supervisor: {exc.strerror or exc}") from None
        if not chunk:
            raise HookFailure("the supervisor closed the connection without an answer")
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            try:
                reply = protocol.parse_reply(line + b"\n")
            except ValueError as exc:
                raise HookFailure(f"unreadable reply from the supervisor: {exc}") from None
            if isinstance(reply, protocol.ErrorReply):
                raise HookFailure(f"the supervisor refused the call: {reply.code}: {reply.message}")
            if isinstance(reply, protocol.Pending) and reply.id == request_id:
                if not wait:
                    return Answer(_DEFER, f"waiting for a person: toolwarden approval {reply.approval_id}")
                pending = reply
            elif isinstance(reply, protocol.DecisionMessage) and reply.id == request_id:
                return _from_decision(reply.decision)


def _from_decision(decision: Any) -> Answer:
    by = f" by {decision.by}" if decision.by else ""
    if decision.approved:
        return Answer("allow", f"toolwarden: {decision.outcome}{by}")
    reason = f": {decision.reason}" if decision.reason else ""
    return Answer("deny", f"toolwarden: {decision.outcome}{by}{reason}")


def answer(
    agent: str, raw: bytes, *, wait: bool, deadline: float, socket_path: str | None
) -> tuple[Answer, str | None]:
    """The hook's answer to one input as the agent wrote it (and the input's hook event).

    Asks the supervisor at `socket_path` and answers by `deadline` (a `time.monotonic()`);
    never raises: anything that is not a decision is a deny that says why.
    """
    event: str | None = None
    try:
        data = parse_input(raw)
        found = data.get("hook_event_name")
        event = found if isinstance(found, str) else None
        return ask_supervisor(agent, data, wait=wait, deadline=deadline, path=socket_path), event
    except HookFailure as exc:
        return Answer("deny", f"toolwarden: denied: {exc}"), event
    except Exception as exc:  # a bug here must not let the call through: deny, say why
        text = f"toolwarden: denied: internal error in the hook: {type(exc).__name__}: {exc}"
        return Answer("deny", text), event


def decide(agent: str, *, wait: bool, timeout: float) -> tuple[Answer, str | None]:
    """The whole hook: read stdin, ask, answer (and the input's hook event); never raises."""
    from toolwarden import protocol

    deadline = time.monotonic() + max(1.0, timeout)
    try:
        raw = _read_stdin(deadline)
    except HookFailure as exc:
        return Answer("deny", f"toolwarden: denied: {exc}"), None
    except Exception as exc:  # as in `answer`: deny, say why
        text = f"toolwarden: denied: internal error in the hook: {type(exc).__name__}: {exc}"
        return Answer("deny", text), None
    path = os.environ.get(protocol.ENV_SOCKET)
    return answer(agent, raw, wait=wait, deadline=deadline, socket_path=path)


def claude_output(answer: Answer) -> dict[str, Any]:
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": answer.behavior,
            "permissionDecisionReason": answer.reason,
        }
    }


def codex_output(answer: Answer, event: str) -> dict[str, Any]:
    """Codex's answer for the event it ran us on (PreToolUse in `codex exec`)."""
    allowed = answer.behavior == "allow"
    if event == "PermissionRequest":
        decision = {"behavior": "allow" if allowed else "deny", "message": answer.reason}
        return {"hookSpecificOutput": {"hookEventName": event, "decision": decision}}
    if allowed:
        # Codex 0.171.0 reports `permissionDecision: allow` from PreToolUse as a failed hook
        # (and runs the command anyway); saying nothing is how a PreToolUse hook lets it run.
        return {}
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": answer.reason,
        }
    }


@click.group("hook", short_help="Agent hooks: run by claude or codex before a tool call.")
def hook() -> None:
    """The hooks `--agent` installs in an agent. They answer on stdout and always exit 0."""


@hook.command("claude")
@click.option("--timeout", type=click.FloatRange(min=1.0), default=50.0, show_default=True,
              help="Answer within this many seconds (below the hook's timeout in settings).")
@click.option("--block", is_flag=True, help="Wait for the decision instead of answering defer.")
def claude(timeout: float, block: bool) -> None:
    """Claude Code's PreToolUse hook: allow, deny, or defer until a person decides."""
    answer, _ = decide("claude", wait=block, timeout=timeout)
    click.echo(json.dumps(claude_output(answer)))


@hook.command("codex")
@click.option("--timeout", type=click.FloatRange(min=1.0), default=590.0, show_default=True,
              help="Answer within this many seconds (codex's default hook timeout is 600 s).")
def codex(timeout: float) -> None:
    """Codex's PreToolUse (or PermissionRequest) hook: waits for the decision."""
    answer, event = decide("codex", wait=True, timeout=timeout)
    click.echo(json.dumps(codex_output(answer, event or "PreToolUse")))
