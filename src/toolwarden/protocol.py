"""The approval protocol, version 1: JSON lines between a supervised tool and its supervisor.

This module is the single executable description of `specs/approval-protocol-v1.md`. It is
standard library only, because the tool-side library (`toolwarden.tool`) and the fast CLI
commands (`toolwarden beat`, `toolwarden ask`) import it and must not pull in pydantic or
temporalio.

Supervisor side: `parse_line` turns one line from the tool into a `Hello`, `Heartbeat` or
`ApprovalRequestMessage` (or raises `ProtocolViolation` carrying the error code to reply with),
and `encode_welcome` / `encode_pending` / `encode_decision` / `encode_error` build the replies.

Tool side: `encode_hello` / `encode_heartbeat` / `encode_approval_request` build requests and
`parse_reply` turns a supervisor line into a `Welcome`, `Pending`, `DecisionMessage` or
`ErrorReply`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Final, TypeGuard

PROTOCOL_VERSION: Final = 1

ENV_SOCKET: Final = "TOOLWARDEN_SOCKET"
ENV_RUN_ID: Final = "TOOLWARDEN_RUN_ID"
ENV_ATTEMPT: Final = "TOOLWARDEN_ATTEMPT"
ENV_RESUME: Final = "TOOLWARDEN_RESUME"

# Exit status with which a tool says "I asked, the request is recorded, relaunch me with the
# decision" (EX_TEMPFAIL in sysexits.h).
EXIT_AWAIT_DECISION: Final = 75

# A line from the tool, newline included. Longer lines get an `oversized` error and are dropped.
MAX_LINE_BYTES: Final = 65536
# `details` of an approval request, serialized as compact UTF-8 JSON.
MAX_DETAILS_BYTES: Final = 32768
# A line from the supervisor (a decision carries an operator's response). Tools must accept
# replies up to this size; the supervisor never sends a longer one.
MAX_REPLY_BYTES: Final = 1024 * 1024
DEFAULT_HEARTBEAT_INTERVAL: Final = 1.0

MAX_SUMMARY_CHARS: Final = 1000
MAX_MESSAGE_CHARS: Final = 1000
MAX_ID_CHARS: Final = 128
MAX_TOOL_CHARS: Final = 200
# Ten years: anything longer is a mistake and would overflow some datetime arithmetic.
MAX_TIMEOUT_SECONDS: Final = 10 * 365 * 86400.0

KEY_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

# Error codes (the `code` field of an `error` line).
MALFORMED: Final = "malformed"
OVERSIZED: Final = "oversized"
UNSUPPORTED_VERSION: Final = "unsupported_version"
UNKNOWN_TYPE: Final = "unknown_type"
INVALID: Final = "invalid"
UNAVAILABLE: Final = "unavailable"
ERROR_CODES: Final = frozenset(
    {MALFORMED, OVERSIZED, UNSUPPORTED_VERSION, UNKNOWN_TYPE, INVALID, UNAVAILABLE}
)

OUTCOMES: Final = frozenset({"approved", "rejected", "expired", "cancelled"})
ON_EXPIRY_VALUES: Final = frozenset({"approve", "reject"})

# Message types.
HELLO: Final = "hello"
HEARTBEAT: Final = "heartbeat"
APPROVAL_REQUEST: Final = "approval_request"
AGENT_CALL: Final = "agent_call"
WELCOME: Final = "welcome"
PENDING: Final = "pending"
DECISION: Final = "decision"
ERROR: Final = "error"


class ProtocolViolation(Exception):
    """A line the supervisor refuses; `code` is the error code to reply with."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


# ---------------------------------------------------------------------------------------------
# Tool -> supervisor messages


@dataclass(frozen=True, slots=True)
class Hello:
    tool: str | None
    pid: int | None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    progress: float | None
    message: str | None


@dataclass(frozen=True, slots=True)
class ApprovalRequestMessage:
    id: str
    key: str
    summary: str
    details: Any
    timeout: float | None
    on_expiry: str | None

    @property
    def timeout_delta(self) -> timedelta | None:
        return None if self.timeout is None else timedelta(seconds=self.timeout)


@dataclass(frozen=True, slots=True)
class AgentCallMessage:
    """A coding agent's tool call, sent by its hook (`toolwarden hook claude|codex`).

    The supervisor applies the run's policy, and if it says "ask", turns the call into an
    approval it keys, summarizes and details itself; the replies are those of an
    `approval_request`. With `wait` false the hook wants `pending` and then hangs up (Claude's
    defer); with `wait` true it stays for the `decision` (a blocking hook).
    """

    id: str
    agent: str
    session_id: str | None
    tool_use_id: str | None
    tool_name: str
    tool_input: Any
    wait: bool


ToolMessage = Hello | Heartbeat | ApprovalRequestMessage | AgentCallMessage


# ---------------------------------------------------------------------------------------------
# Supervisor -> tool messages


@dataclass(frozen=True, slots=True)
class Welcome:
    run_id: str
    attempt: int
    heartbeat_interval: float


@dataclass(frozen=True, slots=True)
class Pending:
    id: str
    key: str
    approval_id: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class DecisionReply:
    """The answer to one approval request, as the tool receives it (`models.Decision` is the
    supervisor's side of the same answer)."""

    key: str
    outcome: str
    approved: bool
    by: str | None = None
    reason: str | None = None
    response: Any = None
    decided_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The decision as plain JSON data (the shape used in `TOOLWARDEN_RESUME`)."""
        return {
            "key": self.key,
            "outcome": self.outcome,
            "approved": self.approved,
            "by": self.by,
            "reason": self.reason,
            "response": self.response,
            "decided_at": None if self.decided_at is None else self.decided_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, key: str | None = None) -> DecisionReply:
        """Read a decision object; raise `ValueError` if it is not one."""
        return _decision_from(data, key)


@dataclass(frozen=True, slots=True)
class DecisionMessage:
    """A `decision` line: the reply to the request whose id is `id`."""

    id: str
    decision: DecisionReply


@dataclass(frozen=True, slots=True)
class ErrorReply:
    code: str
    message: str
    id: str | None


Reply = Welcome | Pending | DecisionMessage | ErrorReply


# ---------------------------------------------------------------------------------------------
# JSON helpers


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(data: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity. Raises ValueError (or RecursionError)."""
    return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):
        return model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _line(obj: dict[str, Any], *, ascii_only: bool = True) -> bytes:
    # Replies are pure ASCII (\u escapes), so they are valid UTF-8 whatever an operator typed.
    # Requests keep UTF-8 text, so their size matches the limits the spec states.
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=ascii_only, allow_nan=False, default=_default)
    return text.encode("utf-8") + b"\n"


def details_size(details: Any) -> int:
    """Bytes of `details` as compact UTF-8 JSON; raises ValueError if it is not JSON."""
    try:
        return len(
            json.dumps(details, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"details are not JSON: {exc}") from exc


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 timestamp (or null); raises ValueError otherwise."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("timestamp must be an ISO 8601 string")
    return datetime.fromisoformat(value)


# ---------------------------------------------------------------------------------------------
# Validation shared by both sides


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise ValueError(
            f"invalid approval key {key!r}: use letters, digits and . _ : - "
            "(at most 128, starting with a letter or digit)"
        )
    return key


def _is_text(value: Any, low: int, high: int) -> TypeGuard[str]:
    if not isinstance(value, str) or not low <= len(value) <= high:
        return False
    try:
        value.encode("utf-8")  # lone surrogates (from "\\ud800" escapes) are not text
    except UnicodeEncodeError:
        return False
    return True


def check_summary(summary: Any) -> str:
    if not _is_text(summary, 1, MAX_SUMMARY_CHARS):
        raise ValueError(f"summary must be a string of 1 to {MAX_SUMMARY_CHARS} characters")
    return summary


def check_details(details: Any) -> Any:
    size = details_size(details)
    if size > MAX_DETAILS_BYTES:
        raise ValueError(f"details are {size} bytes as JSON, more than the limit of {MAX_DETAILS_BYTES}")
    return details


def check_timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, timedelta):
        timeout = timeout.total_seconds()
    if not _is_number(timeout) or not math.isfinite(timeout):
        raise ValueError("timeout must be a number of seconds or null")
    if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise ValueError(f"timeout must be more than 0 and at most {MAX_TIMEOUT_SECONDS:.0f} s")
    return float(timeout)


def check_on_expiry(on_expiry: Any) -> str | None:
    if isinstance(on_expiry, Enum):
        on_expiry = on_expiry.value
    if on_expiry is not None and on_expiry not in ON_EXPIRY_VALUES:
        raise ValueError('on_expiry must be "approve", "reject" or null')
    return on_expiry  # type: ignore[no-any-return]


def check_progress(progress: Any) -> float | None:
    if progress is None:
        return None
    if not _is_number(progress) or not 0.0 <= progress <= 1.0:
        raise ValueError("progress must be a number from 0 to 1, or null")
    return float(progress)


def check_message(message: Any) -> str | None:
    if message is None:
        return None
    if not _is_text(message, 0, MAX_MESSAGE_CHARS):
        raise ValueError(f"message must be a string of at most {MAX_MESSAGE_CHARS} characters")
    return message


def check_request_id(request_id: Any) -> str:
    if not _is_text(request_id, 1, MAX_ID_CHARS):
        raise ValueError(f"id must be a string of 1 to {MAX_ID_CHARS} characters")
    return request_id


# ---------------------------------------------------------------------------------------------
# Supervisor side: parse what the tool sends


def _strip_newline(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


def _decode_object(line: bytes, limit: int) -> dict[str, Any]:
    if len(line) + (0 if line.endswith(b"\n") else 1) > limit:
        raise ProtocolViolation(OVERSIZED, f"line is longer than {limit} bytes")
    body = _strip_newline(line)
    if b"\n" in body:
        raise ProtocolViolation(MALFORMED, "one JSON object per line")
    try:
        obj = _loads(body)
    except UnicodeDecodeError:
        raise ProtocolViolation(MALFORMED, "line is not valid UTF-8") from None
    except (ValueError, RecursionError):
        raise ProtocolViolation(MALFORMED, "line is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolViolation(MALFORMED, "line is not a JSON object")
    return obj


def _check_version(obj: Mapping[str, Any], request_id: str | None) -> None:
    version = obj.get("v")
    if not _is_number(version) or version != PROTOCOL_VERSION:
        raise ProtocolViolation(
            UNSUPPORTED_VERSION,
            f"protocol version {version!r} is not supported (supported: {PROTOCOL_VERSION})",
            request_id,
        )


def _opt_text(obj: Mapping[str, Any], name: str, high: int) -> str | None:
    value = obj.get(name)
    if value is not None and not _is_text(value, 1, high):
        raise ValueError(f"{name} must be a string of 1 to {high} characters, or null")
    return value


def _parse_agent_call(obj: Mapping[str, Any], raw_id: Any) -> AgentCallMessage:
    tool_name = obj.get("tool_name")
    if not _is_text(tool_name, 1, MAX_TOOL_CHARS):
        raise ValueError(f"tool_name must be a string of 1 to {MAX_TOOL_CHARS} characters")
    agent = obj.get("agent")
    if not _is_text(agent, 1, MAX_TOOL_CHARS):
        raise ValueError(f"agent must be a string of 1 to {MAX_TOOL_CHARS} characters")
    wait = obj.get("wait", False)
    if not isinstance(wait, bool):
        raise ValueError("wait must be true or false")
    return AgentCallMessage(
        id=check_request_id(raw_id),
        agent=agent,
        session_id=_opt_text(obj, "session_id", MAX_ID_CHARS),
        tool_use_id=_opt_text(obj, "tool_use_id", MAX_ID_CHARS),
        tool_name=tool_name,
        tool_input=obj.get("tool_input"),
        wait=wait,
    )


def parse_line(line: bytes) -> Hello | Heartbeat | ApprovalRequestMessage | AgentCallMessage:
    """Parse one line from a tool. Raises `ProtocolViolation` (and nothing else) if refused."""
    obj = _decode_object(line, MAX_LINE_BYTES)
    raw_id = obj.get("id")
    request_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= MAX_ID_CHARS else None
    _check_version(obj, request_id)
    kind = obj.get("type")
    try:
        if kind == HEARTBEAT:
            return Heartbeat(
                progress=check_progress(obj.get("progress")),
                message=check_message(obj.get("message")),
            )
        if kind == APPROVAL_REQUEST:
            return ApprovalRequestMessage(
                id=check_request_id(raw_id),
                key=check_key(obj.get("key")),
                summary=check_summary(obj.get("summary")),
                details=check_details(obj.get("details")),
                timeout=check_timeout(obj.get("timeout")),
                on_expiry=check_on_expiry(obj.get("on_expiry")),
            )
        if kind == AGENT_CALL:
            return _parse_agent_call(obj, raw_id)
        if kind == HELLO:
            tool = obj.get("tool")
            if tool is not None and not _is_text(tool, 0, MAX_TOOL_CHARS):
                raise ValueError(f"tool must be a string of at most {MAX_TOOL_CHARS} characters")
            pid = obj.get("pid")
            if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool)):
                raise ValueError("pid must be an integer or null")
            return Hello(tool=tool, pid=pid)
    except (ValueError, RecursionError) as exc:
        raise ProtocolViolation(INVALID, str(exc), request_id) from None
    raise ProtocolViolation(UNKNOWN_TYPE, f"unknown message type {kind!r}", request_id)


# ---------------------------------------------------------------------------------------------
# Supervisor side: encode replies


def encode_welcome(run_id: str, attempt: int, heartbeat_interval: float) -> bytes:
    return _line(
        {
            "v": PROTOCOL_VERSION,
            "type": WELCOME,
            "run_id": run_id,
            "attempt": attempt,
            "heartbeat_interval": heartbeat_interval,
        }
    )


def encode_pending(request_id: str, key: str, approval_id: str, expires_at: str) -> bytes:
    return _line(
        {
            "v": PROTOCOL_VERSION,
            "type": PENDING,
            "id": request_id,
            "key": key,
            "approval_id": approval_id,
            "expires_at": expires_at,
        }
    )


_DECISION_FIELDS = ("key", "outcome", "approved", "by", "reason", "response", "decided_at")


def encode_decision(request_id: str, decision: Mapping[str, Any]) -> bytes:
    """A `decision` line from a decision mapping (e.g. `models.Decision.model_dump()`)."""
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": DECISION, "id": request_id}
    for name in _DECISION_FIELDS:
        body[name] = decision.get(name)
    body["approved"] = bool(body["approved"])
    return _line(body)


def encode_error(code: str, message: str, request_id: str | None = None) -> bytes:
    return _line(
        {
            "v": PROTOCOL_VERSION,
            "type": ERROR,
            "code": code,
            "message": message[:MAX_MESSAGE_CHARS],
            "id": request_id,
        }
    )


# ---------------------------------------------------------------------------------------------
# Tool side: encode requests


def encode_hello(tool: str | None = None, pid: int | None = None) -> bytes:
    return _line({"v": PROTOCOL_VERSION, "type": HELLO, "tool": tool, "pid": pid}, ascii_only=False)


def encode_heartbeat(progress: float | None = None, message: str | None = None) -> bytes:
    return _line(
        {"v": PROTOCOL_VERSION, "type": HEARTBEAT, "progress": progress, "message": message},
        ascii_only=False,
    )


def encode_approval_request(
    request_id: str,
    key: str,
    summary: str,
    details: Any = None,
    timeout: float | timedelta | None = None,
    on_expiry: str | None = None,
) -> bytes:
    """An `approval_request` line; raises ValueError if an argument breaks the protocol."""
    return _line(
        {
            "v": PROTOCOL_VERSION,
            "type": APPROVAL_REQUEST,
            "id": check_request_id(request_id),
            "key": check_key(key),
            "summary": check_summary(summary),
            "details": check_details(details),
            "timeout": check_timeout(timeout),
            "on_expiry": check_on_expiry(on_expiry),
        },
        ascii_only=False,
    )


def encode_agent_call(
    request_id: str,
    *,
    agent: str,
    tool_name: str,
    tool_input: Any,
    session_id: str | None = None,
    tool_use_id: str | None = None,
    wait: bool = False,
) -> bytes:
    """An `agent_call` line (sent by the agents' hooks)."""
    return _line(
        {
            "v": PROTOCOL_VERSION,
            "type": AGENT_CALL,
            "id": check_request_id(request_id),
            "agent": agent,
            "session_id": session_id,
            "tool_use_id": tool_use_id,
            "tool_name": tool_name,
            "tool_input": tool_input,
            "wait": wait,
        },
        ascii_only=False,
    )


# ---------------------------------------------------------------------------------------------
# Tool side: parse replies


def _opt_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or null")
    return value


def _decision_from(data: Mapping[str, Any], key: str | None) -> DecisionReply:
    if not isinstance(data, Mapping):
        raise ValueError("a decision must be a JSON object")
    found_key = data.get("key", key)
    if not isinstance(found_key, str):
        raise ValueError("decision key must be a string")
    outcome = data.get("outcome")
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown decision outcome {outcome!r}")
    approved = data.get("approved")
    if not isinstance(approved, bool):
        raise ValueError("approved must be true or false")
    return DecisionReply(
        key=found_key,
        outcome=outcome,
        approved=approved,
        by=_opt_str(data, "by"),
        reason=_opt_str(data, "reason"),
        response=data.get("response"),
        decided_at=parse_time(data.get("decided_at")),
    )


def parse_reply(line: bytes) -> Reply:
    """Parse one line from the supervisor. Raises ValueError if it is not a valid reply."""
    try:
        obj = _decode_object(line, MAX_REPLY_BYTES)
    except ProtocolViolation as exc:
        raise ValueError(exc.message) from None
    if obj.get("v") != PROTOCOL_VERSION:
        raise ValueError(f"unsupported protocol version {obj.get('v')!r}")
    kind = obj.get("type")
    if kind == WELCOME:
        interval = obj.get("heartbeat_interval", DEFAULT_HEARTBEAT_INTERVAL)
        if not _is_number(interval) or interval <= 0:
            interval = DEFAULT_HEARTBEAT_INTERVAL
        attempt = obj.get("attempt")
        return Welcome(
            run_id=str(obj.get("run_id", "")),
            attempt=attempt if isinstance(attempt, int) else 0,
            heartbeat_interval=float(interval),
        )
    if kind == PENDING:
        return Pending(
            id=check_request_id(obj.get("id")),
            key=check_key(obj.get("key")),
            approval_id=str(obj.get("approval_id", "")),
            expires_at=parse_time(obj.get("expires_at")),
        )
    if kind == DECISION:
        return DecisionMessage(id=check_request_id(obj.get("id")), decision=_decision_from(obj, None))
    if kind == ERROR:
        raw_id = obj.get("id")
        return ErrorReply(
            code=str(obj.get("code", "")),
            message=str(obj.get("message", "")),
            id=raw_id if isinstance(raw_id, str) else None,
        )
    raise ValueError(f"unknown reply type {kind!r}")
