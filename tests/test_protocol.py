"""The line codec of approval protocol v1 (toolwarden.protocol)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolwarden import protocol
from toolwarden.models import ApprovalState, Decision
from toolwarden.protocol import (
    ApprovalRequestMessage,
    Heartbeat,
    Hello,
    ProtocolViolation,
    parse_line,
    parse_reply,
)


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def request(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "v": 1,
        "type": "approval_request",
        "id": "c1",
        "key": "apply-patch",
        "summary": "Apply the patch?",
        "details": {"files": ["a.py"]},
        "timeout": 3600,
        "on_expiry": "reject",
    }
    base.update(fields)
    return base


def violation(raw: bytes) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation) as info:
        parse_line(raw)
    return info.value


def test_constants_match_the_spec() -> None:
    assert protocol.PROTOCOL_VERSION == 1
    assert protocol.EXIT_AWAIT_DECISION == 75
    assert protocol.MAX_LINE_BYTES == 65536
    assert protocol.MAX_DETAILS_BYTES == 32768
    assert protocol.ENV_SOCKET == "TOOLWARDEN_SOCKET"
    assert protocol.ENV_RESUME == "TOOLWARDEN_RESUME"


def test_parse_each_tool_message() -> None:
    assert parse_line(line({"v": 1, "type": "hello", "tool": "t", "pid": 12})) == Hello("t", 12)
    assert parse_line(b'{"v":1,"type":"hello"}') == Hello(None, None)
    beat = parse_line(line({"v": 1, "type": "heartbeat", "progress": 0.5, "message": "half"}))
    assert beat == Heartbeat(0.5, "half")
    assert parse_line(line({"v": 1, "type": "heartbeat"})) == Heartbeat(None, None)
    ask = parse_line(line(request()))
    assert ask == ApprovalRequestMessage(
        "c1", "apply-patch", "Apply the patch?", {"files": ["a.py"]}, 3600.0, "reject"
    )
    assert isinstance(ask, ApprovalRequestMessage)
    assert ask.timeout_delta == timedelta(hours=1)


def test_crlf_and_unknown_fields_are_accepted() -> None:
    raw = json.dumps({"v": 1, "type": "heartbeat", "future": [1, 2]}).encode() + b"\r\n"
    assert parse_line(raw) == Heartbeat(None, None)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json\n",
        b"[1,2]\n",
        b'"text"\n',
        b"\xff\xfe\n",
        b'{"v":1,"type":"heartbeat","progress":NaN}\n',
        b"\n",
    ],
)
def test_malformed_lines(raw: bytes) -> None:
    assert violation(raw).code == "malformed"


@pytest.mark.parametrize("version", [2, 0, None, "1", True])
def test_unsupported_version_echoes_the_id(version: Any) -> None:
    obj = request(v=version)
    if version is None:
        del obj["v"]
    err = violation(line(obj))
    assert err.code == "unsupported_version"
    assert err.request_id == "c1"


def test_unknown_type() -> None:
    err = violation(line({"v": 1, "type": "welcome", "id": "x"}))
    assert (err.code, err.request_id) == ("unknown_type", "x")
    assert violation(line({"v": 1})).code == "unknown_type"


@pytest.mark.parametrize(
    "fields",
    [
        {"key": "bad key"},
        {"key": "-leading-dash"},
        {"key": "k" * 129},
        {"key": 5},
        {"summary": ""},
        {"summary": "x" * 1001},
        {"summary": "\ud800"},
        {"details": "x" * protocol.MAX_DETAILS_BYTES},
        {"timeout": -1},
        {"timeout": 0},
        {"timeout": "1h"},
        {"timeout": True},
        {"on_expiry": "maybe"},
    ],
)
def test_invalid_requests_echo_the_id(fields: dict[str, Any]) -> None:
    err = violation(line(request(**fields)))
    assert err.code == "invalid", err
    assert err.request_id == "c1"


@pytest.mark.parametrize("bad_id", [None, "", 7, "i" * 129])
def test_request_id_is_required(bad_id: Any) -> None:
    assert violation(line(request(id=bad_id))).code == "invalid"


@pytest.mark.parametrize(
    "fields",
    [{"progress": 1.5}, {"progress": -0.1}, {"progress": "half"}, {"message": "m" * 1001}],
)
def test_invalid_heartbeats(fields: dict[str, Any]) -> None:
    assert violation(line({"v": 1, "type": "heartbeat", **fields})).code == "invalid"


def test_details_limit_is_counted_in_compact_utf8() -> None:
    # Just under the limit: a string whose JSON form ("..." plus quotes) is exactly the limit.
    at_limit = "x" * (protocol.MAX_DETAILS_BYTES - 2)
    assert isinstance(parse_line(line(request(details=at_limit))), ApprovalRequestMessage)
    assert violation(line(request(details=at_limit + "x"))).code == "invalid"


def test_oversized_line() -> None:
    raw = line(request(details="x" * (protocol.MAX_LINE_BYTES + 10)))
    assert violation(raw).code == "oversized"
    exact = b'{"v":1,"type":"heartbeat","message":null}'
    padded = exact[:-1] + b" " * (protocol.MAX_LINE_BYTES - len(exact) - 1) + b"}\n"
    assert len(padded) == protocol.MAX_LINE_BYTES
    assert parse_line(padded) == Heartbeat(None, None)
    assert violation(padded[:-2] + b" }\n").code == "oversized"


def test_deep_nesting_is_refused_not_crashing() -> None:
    raw = b'{"v":1,"type":"approval_request","id":"c1","key":"k","summary":"s","details":'
    raw += b"[" * 30000 + b"]" * 30000 + b"}\n"
    assert violation(raw).code in {"malformed", "invalid"}


def test_replies_round_trip() -> None:
    welcome = parse_reply(protocol.encode_welcome("run-1", 2, 0.5))
    assert welcome == protocol.Welcome("run-1", 2, 0.5)
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    pending = parse_reply(protocol.encode_pending("c1", "k", "run-1/k", expires.isoformat()))
    assert pending == protocol.Pending("c1", "k", "run-1/k", expires)
    error = parse_reply(protocol.encode_error("invalid", "bad key", "c1"))
    assert error == protocol.ErrorReply("invalid", "bad key", "c1")
    assert parse_reply(protocol.encode_error("malformed", "x")).id is None  # type: ignore[union-attr]


def test_decision_from_the_shared_model() -> None:
    decided = datetime(2030, 1, 1, 12, tzinfo=UTC)
    model = Decision(
        key="deploy",
        outcome=ApprovalState.APPROVED,
        approved=True,
        by="alice",
        reason="ok",
        response={"branch": "main", "ünï": "cødé"},
        decided_at=decided,
    )
    raw = protocol.encode_decision("c9", model.model_dump(mode="json"))
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    raw.decode("ascii")  # replies are pure ASCII
    wire = json.loads(raw)
    assert wire["v"] == 1 and wire["type"] == "decision" and wire["id"] == "c9"
    reply = parse_reply(raw)
    assert isinstance(reply, protocol.DecisionMessage)
    assert reply.decision == protocol.DecisionReply(
        "deploy", "approved", True, "alice", "ok", {"branch": "main", "ünï": "cødé"}, decided
    )
    # to_json / from_json is the shape of TOOLWARDEN_RESUME entries
    assert protocol.DecisionReply.from_json(reply.decision.to_json()) == reply.decision
    # encode_decision also accepts the model's python dump (enums, datetimes)
    assert parse_reply(protocol.encode_decision("c9", model.model_dump())) == reply


def test_tool_side_encoders_are_parsed_by_the_supervisor_side() -> None:
    assert parse_line(protocol.encode_hello("t", 3)) == Hello("t", 3)
    assert parse_line(protocol.encode_heartbeat(0.25, "q")) == Heartbeat(0.25, "q")
    raw = protocol.encode_approval_request("i", "k", "s", {"a": "é"}, timedelta(minutes=1), "approve")
    assert parse_line(raw) == ApprovalRequestMessage("i", "k", "s", {"a": "é"}, 60.0, "approve")
    with pytest.raises(ValueError, match="approval key"):
        protocol.encode_approval_request("i", "no spaces", "s")
    with pytest.raises(ValueError, match="details"):
        protocol.encode_approval_request("i", "k", "s", {"x": object()})


def test_parse_reply_refuses_garbage() -> None:
    for raw in (b"nope\n", b'{"v":2,"type":"welcome"}\n', b'{"v":1,"type":"hello"}\n'):
        with pytest.raises(ValueError):
            parse_reply(raw)
    bad_outcome = b'{"v":1,"type":"decision","id":"c","key":"k","outcome":"maybe","approved":true}\n'
    with pytest.raises(ValueError, match="outcome"):
        parse_reply(bad_outcome)


# -- property tests --------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_parse_line_only_ever_raises_protocol_violation(raw: bytes) -> None:
    try:
        parse_line(raw)
    except ProtocolViolation as exc:
        assert exc.code in protocol.ERROR_CODES


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "v",
                "type",
                "id",
                "key",
                "summary",
                "details",
                "timeout",
                "on_expiry",
                "progress",
                "message",
                "tool",
                "pid",
            ]
        ),
        json_values | st.sampled_from([1, "hello", "heartbeat", "approval_request"]),
    )
)
def test_parse_line_on_arbitrary_json_objects(obj: dict[str, Any]) -> None:
    try:
        parse_line(json.dumps(obj).encode() + b"\n")
    except ProtocolViolation as exc:
        assert exc.code in protocol.ERROR_CODES


keys = st.from_regex(protocol.KEY_PATTERN, fullmatch=True)
texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=protocol.MAX_SUMMARY_CHARS)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    request_id=st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    key=keys,
    summary=texts,
    details=json_values,
    timeout=st.none() | st.floats(min_value=0.001, max_value=1e6),
    on_expiry=st.sampled_from([None, "approve", "reject"]),
)
def test_approval_requests_round_trip(
    request_id: str,
    key: str,
    summary: str,
    details: Any,
    timeout: float | None,
    on_expiry: str | None,
) -> None:
    raw = protocol.encode_approval_request(request_id, key, summary, details, timeout, on_expiry)
    assert parse_line(raw) == ApprovalRequestMessage(request_id, key, summary, details, timeout, on_expiry)


@settings(deadline=None)
@given(
    progress=st.none() | st.floats(min_value=0.0, max_value=1.0),
    message=st.none() | st.text(st.characters(codec="utf-8"), max_size=1000),
)
def test_heartbeats_round_trip(progress: float | None, message: str | None) -> None:
    assert parse_line(protocol.encode_heartbeat(progress, message)) == Heartbeat(progress, message)
