"""Chaos: generated Claude hook inputs and bad protocol lines, 10,000 in all, on a live run.

One agent run (`agent: claude`, policy: allow Read, deny Bash and Write, no defaults) of a
stand-in agent that waits for a gate. Against its socket, at once:

- 5,000 hypothesis-generated hook inputs, answered by `toolwarden.cli.hook.answer` (the whole
  hook but reading stdin) from worker threads: well-formed calls (allowed or denied by the
  policy) and bad ones (not UTF-8, not JSON, not an object, wrong types, oversized ids, huge,
  nested past any parser, lone surrogates). Every bad one is denied with a reason; no answer is
  an internal error or comes after its deadline. A sample of them also goes through the real
  `toolwarden hook claude` process, which must answer the same;
- 5,000 bad protocol lines (the generator of test_protocol_fuzz.py) on one connection, each
  answered with an error.

Then the channel still says welcome, the gate opens and the run succeeds.
"""

from __future__ import annotations

import asyncio
import json
import string
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.chaos.test_protocol_fuzz import generate_lines, json_values
from tests.chaos.test_worker_kill import processes_of_runs
from tests.support import eventually
from toolwarden import protocol
from toolwarden.activities.tool_run import socket_path
from toolwarden.cli import hook
from toolwarden.client import Supervisor
from toolwarden.config import Settings
from toolwarden.models import RunState

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.usefixtures("worker")]

HOOK_INPUTS = 5_000
PROTOCOL_LINES = 5_000
PROCESS_SAMPLE = 40  # of the hook inputs, also run through the real `toolwarden hook claude`
DEADLINE_S = 15.0  # each answer's deadline, as `--timeout` gives the real hook
THREADS = 4
BATCH = 200
AGENT = Path(__file__).parent / "agent_waits.py"
TOOLWARDEN = str(Path(sys.executable).parent / "toolwarden")
POLICY = {"allow": ["Read"], "deny": ["Bash", "Write"], "ask": [], "defaults": False}
EXPECTED = {"Read": "allow", "Bash": "deny", "Write": "deny"}


@dataclass(frozen=True)
class Case:
    """One hook input and the answer it must get; `size` stands in for a huge body."""

    kind: str
    expected: str  # allow or deny
    raw: bytes = b""
    size: int = 0

    def body(self) -> bytes:
        if not self.size:
            return self.raw
        filler = "x" * self.size
        return json.dumps(call("Read", {"file_path": filler})).encode()


def call(tool_name: Any, tool_input: Any = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "session_id": "sess-fuzz",
        "transcript_path": "/tmp/t.jsonl",
        "cwd": "/work",
        "hook_event_name": "PreToolUse",
        "tool_name": tool_name,
        "tool_input": {} if tool_input is None else tool_input,
        "tool_use_id": "toolu_fuzz",
    }
    data.update(extra)
    return data


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


ids = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=40)
words = st.text(max_size=60)  # no surrogates: valid text
not_a_string = json_values.filter(lambda v: v is not None and not isinstance(v, str))
not_an_object = json_values.filter(lambda v: v is not None and not isinstance(v, dict))
extras = st.dictionaries(st.text(max_size=8), json_values, max_size=3)

valid = st.one_of(
    st.builds(lambda p, x: {"file_path": p, **x}, words, extras).map(lambda i: ("Read", i)),
    st.builds(lambda c: {"command": c}, words).map(lambda i: ("Bash", i)),
    st.builds(lambda p, c: {"file_path": p, "content": c}, words, words).map(lambda i: ("Write", i)),
)
valid_cases = st.builds(
    lambda named, sid, uid: Case(
        "valid", EXPECTED[named[0]], encoded(call(named[0], named[1], session_id=sid, tool_use_id=uid))
    ),
    valid,
    ids,
    ids,
)


def _not_an_object(text: str) -> bool:
    try:
        return not isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return True


def _stays_lone(text: str) -> bool:
    """A high and a low surrogate escaped in a row decode to one character: not lone."""
    return any(0xD800 <= ord(c) <= 0xDFFF for c in json.loads(json.dumps(text)))


def _corrupt(raw: bytes, at: int) -> bytes:
    at %= len(raw) + 1
    return raw[:at] + b"\xff\xfe" + raw[at:]


bad_cases = st.one_of(
    # Not UTF-8: a good call with bytes no UTF-8 text has.
    st.builds(lambda v, at: Case("not-utf8", "deny", _corrupt(encoded(call("Read", {"file_path": v})), at)),
              words, st.integers(0, 10_000)),
    # Text with lone surrogates, written as the raw bytes Python's surrogatepass gives.
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=5).map(
        lambda s: Case(
            "surrogate-bytes", "deny",
            encoded(call("Read"))[:-1] + s.encode("utf-8", "surrogatepass") + b"}",
        )
    ),
    # Not JSON, or JSON but not an object.
    st.text(max_size=200).filter(_not_an_object).map(lambda t: Case("not-json", "deny", t.encode())),
    not_an_object.map(lambda v: Case("not-object", "deny", encoded(v))),
    # No tool_name, an empty one, or one of the wrong type.
    st.one_of(st.just(""), not_a_string).map(lambda n: Case("tool-name", "deny", encoded(call(n)))),
    st.just(Case("no-tool-name", "deny", b'{"tool_input": {"file_path": "x"}}')),
    # A call the policy would allow, with a field of the wrong type.
    not_an_object.map(lambda v: Case("tool-input-type", "deny", encoded(call("Read", v)))),
    st.builds(
        lambda f, v: Case("field-type", "deny", encoded(call("Read", {"file_path": "a"}, **{f: v}))),
        st.sampled_from(["session_id", "tool_use_id", "hook_event_name", "cwd", "transcript_path"]),
        not_a_string,
    ),
    # Lone surrogates as JSON escapes: valid JSON, text no UTF-8 can carry.
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3).filter(_stays_lone).map(
        lambda s: Case("surrogate-escape", "deny", encoded(call("Read", {"file_path": s})))
    ),
    # Ids and a tool name longer than the protocol allows: the supervisor refuses them.
    st.builds(
        lambda f, n: Case("long-id", "deny", encoded(call("Read", {"file_path": "a"}, **{f: "i" * n}))),
        st.sampled_from(["session_id", "tool_use_id"]),
        st.integers(protocol.MAX_ID_CHARS + 1, 2_000),
    ),
    st.integers(protocol.MAX_TOOL_CHARS + 1, 2_000).map(
        lambda n: Case("long-tool-name", "deny", encoded(call("Read" + "d" * n)))
    ),
    # Huge: past the protocol's line, or past the hook's input limit.
    st.integers(protocol.MAX_LINE_BYTES, 4 * protocol.MAX_LINE_BYTES).map(
        lambda n: Case("huge-line", "deny", size=n)
    ),
    st.integers(hook.MAX_STDIN_BYTES, hook.MAX_STDIN_BYTES + 10_000).map(
        lambda n: Case("huge-input", "deny", size=n)
    ),
    # Nested past any parser's recursion limit.
    st.integers(20_000, 100_000).map(
        lambda n: Case(
            "nested", "deny", b'{"tool_name": "Read", "tool_input": {"a": ' + b"[" * n + b"]" * n + b"}}"
        )
    ),
)
cases = st.one_of(valid_cases, bad_cases)


def generate_cases(count: int) -> list[Case]:
    generated: list[Case] = []

    @settings(
        max_examples=count, database=None, deadline=None, derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(cases)
    def collect(case: Case) -> None:
        generated.append(case)

    collect()
    return generated


def answer_of(case: Case, path: str) -> tuple[hook.Answer, float]:
    began = time.monotonic()
    answer, _ = hook.answer(
        "claude", case.body(), wait=False, deadline=began + DEADLINE_S, socket_path=path
    )
    return answer, time.monotonic() - began


async def real_hook(case: Case, path: str) -> tuple[str, str, float]:
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        TOOLWARDEN, "hook", "claude", "--timeout", str(DEADLINE_S),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", protocol.ENV_SOCKET: path},
    )
    out, _ = await asyncio.wait_for(proc.communicate(case.body()), timeout=DEADLINE_S + 30)
    assert proc.returncode == 0
    specific = json.loads(out)["hookSpecificOutput"]
    return specific["permissionDecision"], specific["permissionDecisionReason"], time.monotonic() - began


def reason_kind(reason: str) -> str:
    for marker in ("policy: allow", "policy: deny", "malformed hook input", "larger than",
                   "refused the call", "internal error"):
        if marker in reason:
            return marker
    return reason[:40]


async def flood_protocol(path: str, lines: list[bytes]) -> Counter[str]:
    reader, writer = await asyncio.open_unix_connection(path, limit=protocol.MAX_LINE_BYTES * 2)
    codes: Counter[str] = Counter()
    for start in range(0, len(lines), BATCH):
        batch = lines[start : start + BATCH]
        writer.write(b"".join(batch))
        await writer.drain()
        for line in batch:
            reply = json.loads(await asyncio.wait_for(reader.readline(), timeout=60))
            assert reply["type"] == protocol.ERROR and reply["message"], (line, reply)
            codes[reply["code"]] += 1
    writer.write(protocol.encode_hello())
    await writer.drain()
    assert json.loads(await reader.readline())["type"] == protocol.WELCOME
    writer.close()
    await writer.wait_closed()
    return codes


async def test_every_bad_hook_input_is_denied_and_the_run_succeeds(
    supervisor: Supervisor, settings: Settings, run_id: Any, tmp_path: Path
) -> None:
    began = time.monotonic()
    inputs = generate_cases(HOOK_INPUTS)
    lines = generate_lines(PROTOCOL_LINES)
    assert len(inputs) >= HOOK_INPUTS * 0.95 and len(lines) >= PROTOCOL_LINES * 0.95
    generated_s = time.monotonic() - began
    gate = tmp_path / "release"
    rid = run_id("hookfuzz")
    spec = settings.run_spec(
        run_id=rid, argv=[str(AGENT)], env={"GATE": str(gate)},
        overrides={"agent": "claude", "policy": POLICY},
    )
    assert spec.agent_policy.defaults is False  # the policy under test, not the defaults
    handle = await supervisor.start_run(spec)
    path = str(socket_path(settings, rid, "attempt-1"))
    await eventually(Path(path).exists, timeout=60, what="the agent's socket")

    sent_at = time.monotonic()
    flood = asyncio.create_task(flood_protocol(path, lines))
    limit = asyncio.Semaphore(THREADS)

    async def one(case: Case) -> tuple[hook.Answer, float]:
        async with limit:
            return await asyncio.to_thread(answer_of, case, path)

    answers = await asyncio.gather(*(one(case) for case in inputs))
    codes = await flood
    fuzz_s = time.monotonic() - sent_at

    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for case, (answer, elapsed) in zip(inputs, answers, strict=True):
        kinds[case.kind] += 1
        reasons[reason_kind(answer.reason)] += 1
        assert (answer.behavior, case.kind) == (case.expected, case.kind), (case, answer)
        assert answer.reason and "internal error" not in answer.reason, (case, answer)
        if case.kind != "valid":
            assert answer.reason.startswith("toolwarden: denied: "), (case, answer)
        assert elapsed < DEADLINE_S + 2, (case, elapsed)
    slowest = max(elapsed for _, elapsed in answers)

    # The real process on a sample: the same answer as the function gave the same input.
    sample = list(range(0, len(inputs), max(1, len(inputs) // PROCESS_SAMPLE)))[:PROCESS_SAMPLE]
    process_began = time.monotonic()
    for index in sample:
        behavior, reason, elapsed = await real_hook(inputs[index], path)
        expected = answers[index][0]
        assert (behavior, reason_kind(reason)) == (expected.behavior, reason_kind(expected.reason)), (
            inputs[index], reason
        )
        assert elapsed < DEADLINE_S + 5
    process_s = time.monotonic() - process_began

    gate.touch()
    result = await handle.result()
    assert result.state is RunState.SUCCEEDED, result
    await eventually(lambda: processes_of_runs({rid}) == [], timeout=30, what="no agent process left")
    status = await handle.status()
    policy_calls = sum(1 for entry in status.audit if entry.kind.startswith("policy_"))
    print(
        f"\nchaos hook fuzz: {len(inputs)} hook inputs + {len(lines)} protocol lines = "
        f"{len(inputs) + len(lines)} on one live agent run ({generated_s:.1f}s to generate), "
        f"answered in {fuzz_s:.1f}s (slowest hook answer {slowest:.2f}s); inputs by kind "
        f"{dict(sorted(kinds.items()))}; answers by reason {dict(sorted(reasons.items()))}; "
        f"protocol error replies {dict(sorted(codes.items()))}; {len(sample)} through the real "
        f"`toolwarden hook claude` in {process_s:.1f}s, all the same; policy calls audited "
        f"{policy_calls}; worker crashes 0; processes left 0; the run then {result.state.value}"
    )
