"""`toolwarden hook claude|codex`: the agents' hook, run by the agent before a tool call.

Claude Code and Codex run it as a PreToolUse command hook (Codex also as a PermissionRequest
hook, outside `codex exec`): JSON on stdin, one JSON answer on stdout. It forwards the call to
the supervisor over the run's socket (an `agent_call`, see specs/approval-protocol-v1.md),
which applies the run's policy and, if a person must decide, opens the approval.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

MAX_STDIN_BYTES = 1024 * 1024
# Codex hands a still-pending wait to the supervisor this long before the hook must answer.
HAND_OVER_RESERVE = 5.0
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
    agent: str,
    data: dict[str, Any],
    *,
    wait: bool,
    deadline: float,
    path: str | None,
    hand_over: float | None = None,
) -> Answer:
    """Send the call over the run's socket at `path` and turn the reply into an answer.

    With `hand_over` (a `time.monotonic()` value before `deadline`; Codex in defer mode), a
    blocking wait still pending then is handed to the supervisor: the call is sent again with
    `wait: false`, and its `pending` makes the answer a deny naming the approval, so the
    agent's turn ends and toolwarden resumes the session once it is decided.
    """
    from toolwarden import protocol

    if not path:
        raise HookFailure(f"not supervised ({protocol.ENV_SOCKET} is not set)")
    request_id = uuid.uuid4().hex
    line = _agent_call_line(agent, data, request_id, wait=wait)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            sock.connect(path)
            sock.sendall(line)
        except OSError as exc:
            raise HookFailure(f"supervisor unreachable at {path}: {exc.strerror or exc}") from None
        handing_over = None
        if wait and hand_over is not None:
            handing_over = (hand_over, lambda rid: _agent_call_line(agent, data, rid, wait=False))
        return _await_reply(sock, request_id, wait=wait, deadline=deadline, hand_over=handing_over)


def _agent_call_line(agent: str, data: dict[str, Any], request_id: str, *, wait: bool) -> bytes:
    from toolwarden import protocol

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
    return line


def _handed_over(approval_id: str) -> Answer:
    return Answer(
        "deny",
        f"toolwarden: waiting for approval {approval_id}; this turn ends, toolwarden resumes "
        "the session once it is decided",
    )


def _await_reply(
    sock: socket.socket,
    request_id: str,
    *,
    wait: bool,
    deadline: float,
    hand_over: tuple[float, Callable[[str], bytes]] | None = None,
) -> Answer:
    from toolwarden import protocol

    buffer = b""
    pending: protocol.Pending | None = None
    handed_id: str | None = None  # the `wait: false` copy of the call, once sent
    next_beat = time.monotonic() + protocol.DEFAULT_HEARTBEAT_INTERVAL
    while True:
        now = time.monotonic()
        if now >= deadline:
            if pending is not None and hand_over is not None:
                # The copy got no `pending` in time; the call is asked and undecided, so the
                # supervisor still resumes the session when the agent exits.
                return _handed_over(pending.approval_id)
            if pending is not None:
                raise HookFailure(
                    f"approval {pending.approval_id} is still pending after the hook's timeout; "
                    "the command was not run"
                )
            raise HookFailure("no answer from the supervisor within the hook's timeout")
        if hand_over is not None and handed_id is None and now >= hand_over[0]:
            handed_id = uuid.uuid4().hex
            try:
                sock.sendall(hand_over[1](handed_id))
            except OSError as exc:
                raise HookFailure(f"lost the supervisor: {exc.strerror or exc}") from None
        if now >= next_beat:
            # A blocking wait shows as alive; hang detection already ignores a pending approval.
            what = pending.approval_id if pending is not None else "a decision"
            sock.sendall(protocol.encode_heartbeat(None, f"waiting for {what}"))
            next_beat = now + protocol.DEFAULT_HEARTBEAT_INTERVAL
        wake = min(deadline, next_beat)
        if hand_over is not None and handed_id is None:
            wake = min(wake, hand_over[0])
        sock.settimeout(max(0.05, wake - now))
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
            ours = reply.id in (request_id, handed_id) if not isinstance(reply, protocol.Welcome) else False
            if isinstance(reply, protocol.ErrorReply) and (reply.id is None or ours):
                raise HookFailure(f"the supervisor refused the call: {reply.code}: {reply.message}")
            if isinstance(reply, protocol.Pending) and ours:
                if reply.id == handed_id:
                    return _handed_over(reply.approval_id)
                if not wait:
                    return Answer(_DEFER, f"waiting for a person: toolwarden approval {reply.approval_id}")
                pending = reply
            elif isinstance(reply, protocol.DecisionMessage) and ours:
                return _from_decision(reply.decision)


def _from_decision(decision: Any) -> Answer:
    by = f" by {decision.by}" if decision.by else ""
    if decision.approved:
        return Answer("allow", f"toolwarden: {decision.outcome}{by}")
    reason = f": {decision.reason}" if decision.reason else ""
    return Answer("deny", f"toolwarden: {decision.outcome}{by}{reason}")


def answer(
    agent: str,
    raw: bytes,
    *,
    wait: bool,
    deadline: float,
    socket_path: str | None,
    hand_over: float | None = None,
) -> tuple[Answer, str | None]:
    """The hook's answer to one input as the agent wrote it (and the input's hook event).

    Asks the supervisor at `socket_path` and answers by `deadline` (a `time.monotonic()`;
    `hand_over` as in `ask_supervisor`); never raises: anything that is not a decision is a
    deny that says why.
    """
    event: str | None = None
    try:
        data = parse_input(raw)
        found = data.get("hook_event_name")
        event = found if isinstance(found, str) else None
        asked = ask_supervisor(
            agent, data, wait=wait, deadline=deadline, path=socket_path, hand_over=hand_over
        )
        return asked, event
    except HookFailure as exc:
        return Answer("deny", f"toolwarden: denied: {exc}"), event
    except Exception as exc:  # a bug here must not let the call through: deny, say why
        text = f"toolwarden: denied: internal error in the hook: {type(exc).__name__}: {exc}"
        return Answer("deny", text), event


def decide(
    agent: str, *, wait: bool, timeout: float, hand_over: bool = False
) -> tuple[Answer, str | None]:
    """The whole hook: read stdin, ask, answer (and the input's hook event); never raises."""
    from toolwarden import protocol

    deadline = time.monotonic() + max(1.0, timeout)
    # Hand a wait over this long before answering (less on a short timeout), for the round trip.
    reserve = min(HAND_OVER_RESERVE, max(1.0, timeout) / 2)
    try:
        raw = _read_stdin(deadline)
    except HookFailure as exc:
        return Answer("deny", f"toolwarden: denied: {exc}"), None
    except Exception as exc:  # as in `answer`: deny, say why
        text = f"toolwarden: denied: internal error in the hook: {type(exc).__name__}: {exc}"
        return Answer("deny", text), None
    path = os.environ.get(protocol.ENV_SOCKET)
    at = deadline - reserve if hand_over else None
    return answer(agent, raw, wait=wait, deadline=deadline, socket_path=path, hand_over=at)


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
@click.option("--resume", "resume", is_flag=True,
              help="Near the timeout, deny naming the approval; toolwarden resumes the session.")
def codex(timeout: float, resume: bool) -> None:
    """Codex's PreToolUse (or PermissionRequest) hook: waits for the decision."""
    answer, event = decide("codex", wait=True, timeout=timeout, hand_over=resume)
    click.echo(json.dumps(codex_output(answer, event or "PreToolUse")))
