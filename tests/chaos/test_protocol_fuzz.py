"""Chaos: 10,000 generated bad protocol lines against a live worker's socket, mid-run.

Every line is bad by construction (not JSON, not an object, a wrong version, an unknown type,
an approval request with an invalid key), so every one must get an error reply; after them
the channel still answers `hello`, and the run finishes normally.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import eventually, tool
from toolwarden import protocol
from toolwarden.activities.tool_run import socket_path
from toolwarden.client import Supervisor
from toolwarden.config import Settings
from toolwarden.models import RunState

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.usefixtures("worker")]

LINES = 10_000
BATCH = 200
KNOWN_TYPES = {protocol.HELLO, protocol.HEARTBEAT, protocol.APPROVAL_REQUEST}
# Values an agent could send: JSON has no NaN or Infinity (json.dumps would write them anyway).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
no_newline = st.text(st.characters(blacklist_characters="\n\r"), min_size=1, max_size=200)


def _line(value: object) -> bytes:
    return json.dumps(value).encode() + b"\n"


bad_lines = st.one_of(
    # Not JSON at all (and not blank: blank lines are skipped without a reply).
    no_newline.filter(lambda text: text.strip() != "" and _not_json(text)).map(
        lambda text: text.encode("utf-8", "surrogatepass") + b"\n"  # lone surrogates: bad UTF-8
    ),
    # JSON, but not an object.
    json_values.filter(lambda value: not isinstance(value, dict)).map(_line),
    # An object of another version, or of none.
    st.dictionaries(st.text(max_size=8), json_values, max_size=5)
    .filter(lambda obj: obj.get("v") != 1 or type(obj.get("v")) is not int)
    .map(_line),
    # Version 1, a type nobody knows.
    st.builds(
        lambda kind, extra: {**extra, "v": 1, "type": kind},
        st.text(max_size=20).filter(lambda kind: kind not in KNOWN_TYPES),
        st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    ).map(_line),
    # An approval request whose key breaks the key's alphabet.
    st.builds(
        lambda key, summary: {"v": 1, "type": protocol.APPROVAL_REQUEST, "id": "f",
                              "key": key, "summary": summary},
        st.text(max_size=30).filter(lambda key: not key.isascii() or " " in key or key == ""),
        st.text(min_size=1, max_size=50),
    ).map(_line),
)


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def generate_lines(count: int) -> list[bytes]:
    generated: list[bytes] = []

    @settings(
        max_examples=count, database=None, deadline=None, derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(bad_lines)
    def collect(line: bytes) -> None:
        generated.append(line)

    collect()
    return generated


async def test_every_bad_line_gets_an_error_and_the_worker_carries_on(
    supervisor: Supervisor, settings: Settings, run_id, tmp_path: Path
) -> None:
    began = time.monotonic()
    lines = generate_lines(LINES)
    assert len(lines) >= LINES * 0.95  # hypothesis may stop a little short, never far
    generated_in = time.monotonic() - began
    gate = tmp_path / "release"
    rid = run_id("fuzz")
    spec = settings.run_spec(run_id=rid, argv=[*tool("wait_for_file.py"), str(gate)])
    handle = await supervisor.start_run(spec)
    path = socket_path(settings, rid, "attempt-1")
    await eventually(path.exists, timeout=60, what="the tool's socket")

    reader, writer = await asyncio.open_unix_connection(str(path), limit=protocol.MAX_LINE_BYTES * 2)
    codes: dict[str, int] = {}
    sent_at = time.monotonic()
    for start in range(0, len(lines), BATCH):
        batch = lines[start : start + BATCH]
        writer.write(b"".join(batch))
        await writer.drain()
        for line in batch:
            reply = json.loads(await asyncio.wait_for(reader.readline(), timeout=30))
            assert reply["type"] == protocol.ERROR, (line, reply)
            assert reply["message"]
            codes[reply["code"]] = codes.get(reply["code"], 0) + 1
    flood_s = time.monotonic() - sent_at
    writer.write(protocol.encode_hello())
    await writer.drain()
    assert json.loads(await reader.readline())["type"] == protocol.WELCOME
    writer.close()
    await writer.wait_closed()

    gate.touch()
    result = await handle.result()
    assert result.state is RunState.SUCCEEDED
    print(
        f"\nchaos protocol fuzz: {len(lines)} generated bad lines ({generated_in:.1f}s to generate) "
        f"sent to a live worker in {flood_s:.1f}s; {sum(codes.values())} error replies "
        f"{dict(sorted(codes.items()))}; worker crashes 0; the run then {result.state.value}",
        file=sys.stdout,
    )
