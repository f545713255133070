"""The supervisor side of the protocol: a real ToolChannel on a temporary Unix socket.

The request handler is scripted in the test (no Temporal): each request gets a future the test
resolves with the decision it wants the tool to receive.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.harness import DECIDED_AT, Harness
from tests.support import eventually
from toolwarden import protocol
from toolwarden.channel import NotifyPending, ToolChannel
from toolwarden.models import ApprovalAsk, ApprovalState, Decision, ExpiryOutcome

DEADLINE = 10.0



@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Short paths: Unix socket paths are limited to ~104 bytes, pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="twc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def channel(sock_dir: Path) -> AsyncIterator[tuple[ToolChannel, Harness]]:
    harness = Harness(run_id="run-1")
    chan = ToolChannel(
        sock_dir / "run" / "a1.sock",
        run_id="run-1",
        attempt=1,
        heartbeat_interval=0.25,
        on_heartbeat=harness.on_heartbeat,
        on_request=harness.on_request,
    )
    await chan.start()
    yield chan, harness
    await chan.close()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, chan: ToolChannel) -> Client:
        reader, writer = await asyncio.open_unix_connection(str(chan.path), limit=2**21)
        return cls(reader, writer)

    async def send(self, data: bytes | dict[str, Any]) -> None:
        if isinstance(data, dict):
            data = json.dumps(data).encode() + b"\n"
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.reader.readline(), DEADLINE)
        assert raw.endswith(b"\n"), raw
        obj = json.loads(raw)
        assert obj["v"] == 1
        return obj  # type: ignore[no-any-return]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def ask_line(request_id: str, key: str, **fields: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "type": "approval_request",
        "id": request_id,
        "key": key,
        "summary": f"May I {key}?",
        **fields,
    }


async def test_hello_gets_welcome(channel: tuple[ToolChannel, Harness]) -> None:
    chan, _ = channel
    client = await Client.connect(chan)
    await client.send({"v": 1, "type": "hello", "tool": "t", "pid": 42})
    welcome = await client.recv()
    assert welcome == {
        "v": 1,
        "type": "welcome",
        "run_id": "run-1",
        "attempt": 1,
        "heartbeat_interval": 0.25,
    }
    assert chan.hello == protocol.Hello("t", 42)
    await client.close()


async def test_heartbeats_reach_the_callback_and_count_as_liveness(
    channel: tuple[ToolChannel, Harness],
) -> None:
    chan, harness = channel
    assert chan.last_seen is None
    client = await Client.connect(chan)
    await client.send({"v": 1, "type": "heartbeat", "progress": 0.5, "message": "half"})
    await client.send({"v": 1, "type": "heartbeat"})
    await eventually(lambda: len(harness.heartbeats) == 2)
    assert harness.heartbeats == [(0.5, "half"), (None, None)]
    first_seen = chan.last_seen
    assert first_seen is not None
    # A hello is not a heartbeat (progress is not reset) but it is liveness.
    await client.send({"v": 1, "type": "hello"})
    await client.recv()
    assert chan.last_seen is not None and chan.last_seen > first_seen
    assert len(harness.heartbeats) == 2
    await client.close()


@pytest.mark.parametrize(
    ("outcome", "approved", "on_expiry"),
    [
        (ApprovalState.APPROVED, True, None),
        (ApprovalState.REJECTED, False, "reject"),
        (ApprovalState.EXPIRED, False, "reject"),
        (ApprovalState.EXPIRED, True, "approve"),
        (ApprovalState.CANCELLED, False, None),
    ],
)
async def test_request_round_trip(
    channel: tuple[ToolChannel, Harness],
    outcome: ApprovalState,
    approved: bool,
    on_expiry: str | None,
) -> None:
    chan, harness = channel
    client = await Client.connect(chan)
    await client.send(ask_line("c1", "deploy", details={"env": "prod"}, timeout=90, on_expiry=on_expiry))
    pending = await client.recv()
    assert pending == {
        "v": 1,
        "type": "pending",
        "id": "c1",
        "key": "deploy",
        "approval_id": "run-1/deploy",
        "expires_at": DECIDED_AT.isoformat(),
    }
    assert chan.waiting_keys == ["deploy"]
    (ask,) = harness.asks
    assert ask.key == "deploy" and ask.summary == "May I deploy?"
    assert ask.details == {"env": "prod"}
    assert ask.timeout == timedelta(seconds=90)
    assert ask.on_expiry == (None if on_expiry is None else ExpiryOutcome(on_expiry))
    assert ask.attempt == 1
    harness.decide("deploy", outcome, approved, by="alice", reason="ok", response={"b": "main"})
    reply = await client.recv()
    assert reply == {
        "v": 1,
        "type": "decision",
        "id": "c1",
        "key": "deploy",
        "outcome": outcome.value,
        "approved": approved,
        "by": "alice",
        "reason": "ok",
        "response": {"b": "main"},
        "decided_at": DECIDED_AT.isoformat().replace("+00:00", "Z"),
    }
    assert chan.waiting_keys == []
    await client.close()


async def test_decision_without_pending(channel: tuple[ToolChannel, Harness]) -> None:
    chan, harness = channel
    harness.send_pending = False  # an already-decided key: the workflow answers at once
    harness.decide("known", ApprovalState.APPROVED, True)
    client = await Client.connect(chan)
    await client.send(ask_line("c1", "known"))
    reply = await client.recv()
    assert reply["type"] == "decision" and reply["approved"] is True
    await client.close()


async def test_several_concurrent_requests(channel: tuple[ToolChannel, Harness]) -> None:
    chan, harness = channel
    client = await Client.connect(chan)
    for n in range(3):
        await client.send(ask_line(f"r{n}", f"step-{n}"))
    pendings = [await client.recv() for _ in range(3)]
    assert sorted(p["id"] for p in pendings) == ["r0", "r1", "r2"]
    assert sorted(chan.waiting_keys) == ["step-0", "step-1", "step-2"]
    # Decide in reverse order: each decision arrives for its own id.
    for n in (2, 1, 0):
        harness.decide(f"step-{n}", ApprovalState.APPROVED, True, response=n)
        reply = await client.recv()
        assert (reply["type"], reply["id"], reply["response"]) == ("decision", f"r{n}", n)
    assert chan.waiting_keys == []
    await client.close()


async def test_requests_on_separate_connections(channel: tuple[ToolChannel, Harness]) -> None:
    chan, harness = channel
    first, second = await Client.connect(chan), await Client.connect(chan)
    await first.send(ask_line("a", "one"))
    await second.send(ask_line("a", "two"))  # ids are per connection
    assert (await first.recv())["key"] == "one"
    assert (await second.recv())["key"] == "two"
    harness.decide("two", ApprovalState.REJECTED, False)
    assert (await second.recv())["outcome"] == "rejected"
    assert chan.waiting_keys == ["one"]
    await first.close()
    await second.close()


async def test_duplicate_request_id_in_flight(channel: tuple[ToolChannel, Harness]) -> None:
    chan, _ = channel
    client = await Client.connect(chan)
    await client.send(ask_line("same", "one"))
    assert (await client.recv())["type"] == "pending"
    await client.send(ask_line("same", "two"))
    error = await client.recv()
    assert (error["type"], error["code"], error["id"]) == ("error", "invalid", "same")
    await client.close()


@pytest.mark.parametrize(
    ("raw", "code", "request_id"),
    [
        (b"this is not json\n", "malformed", None),
        (b'["a list"]\n', "malformed", None),
        (b'{"v":2,"type":"heartbeat","id":"x"}\n', "unsupported_version", "x"),
        (b'{"type":"heartbeat"}\n', "unsupported_version", None),
        (b'{"v":1,"type":"shout","id":"y"}\n', "unknown_type", "y"),
        (
            b'{"v":1,"type":"approval_request","id":"z","key":"no spaces","summary":"s"}\n',
            "invalid",
            "z",
        ),
        (b'{"v":1,"type":"approval_request","id":"z","key":"k","summary":""}\n', "invalid", "z"),
        (b'{"v":1,"type":"heartbeat","progress":7}\n', "invalid", None),
    ],
)
async def test_bad_lines_get_an_error_and_the_connection_stays_open(
    channel: tuple[ToolChannel, Harness], raw: bytes, code: str, request_id: str | None
) -> None:
    chan, harness = channel
    client = await Client.connect(chan)
    await client.send(raw)
    error = await client.recv()
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["id"] == request_id
    assert error["message"]
    assert harness.asks == []
    # Still usable.
    await client.send({"v": 1, "type": "hello"})
    assert (await client.recv())["type"] == "welcome"
    await client.close()


async def test_blank_lines_are_ignored(channel: tuple[ToolChannel, Harness]) -> None:
    chan, _ = channel
    client = await Client.connect(chan)
    await client.send(b"\n  \n" + protocol.encode_hello())
    assert (await client.recv())["type"] == "welcome"
    await client.close()


@pytest.mark.parametrize("size", [protocol.MAX_LINE_BYTES, 5 * 1024 * 1024])
async def test_oversized_line_then_a_valid_line(channel: tuple[ToolChannel, Harness], size: int) -> None:
    chan, harness = channel
    client = await Client.connect(chan)
    big = b'{"v":1,"type":"heartbeat","message":"' + b"x" * size + b'"}\n'
    send = asyncio.create_task(client.send(big + protocol.encode_heartbeat(0.75, "after")))
    error = await client.recv()
    assert (error["type"], error["code"], error["id"]) == ("error", "oversized", None)
    await send
    await eventually(lambda: harness.heartbeats == [(0.75, "after")])
    # One error for the oversized line, none for the valid one: the next reply is the welcome.
    await client.send(protocol.encode_hello())
    assert (await client.recv())["type"] == "welcome"
    await client.close()


async def test_line_of_exactly_the_limit_is_accepted(channel: tuple[ToolChannel, Harness]) -> None:
    chan, harness = channel
    client = await Client.connect(chan)
    head = b'{"v":1,"type":"heartbeat","message":null'
    line = head + b" " * (protocol.MAX_LINE_BYTES - len(head) - 2) + b"}\n"
    assert len(line) == protocol.MAX_LINE_BYTES
    await client.send(line)
    await client.send(line[:-2] + b" }\n")  # one byte over
    error = await client.recv()
    assert error["code"] == "oversized"
    assert harness.heartbeats == [(None, None)]
    await client.close()


async def test_handler_failure_replies_unavailable(channel: tuple[ToolChannel, Harness]) -> None:
    chan, harness = channel
    harness.raises = RuntimeError("workflow is gone")
    client = await Client.connect(chan)
    await client.send(ask_line("c1", "deploy"))
    error = await client.recv()
    assert error == {
        "v": 1,
        "type": "error",
        "code": "unavailable",
        "message": "workflow is gone",
        "id": "c1",
    }
    assert chan.waiting_keys == []
    await client.send({"v": 1, "type": "hello"})
    assert (await client.recv())["type"] == "welcome"
    await client.close()


async def test_failing_heartbeat_callback_does_not_break_the_connection(sock_dir: Path) -> None:
    def explode(progress: float | None, message: str | None) -> None:
        raise RuntimeError("boom")

    async def never(ask: ApprovalAsk, notify: NotifyPending) -> Decision:
        raise AssertionError("not called")

    async with ToolChannel(
        sock_dir / "x.sock",
        run_id="r",
        attempt=0,
        heartbeat_interval=1.0,
        on_heartbeat=explode,
        on_request=never,
    ) as chan:
        client = await Client.connect(chan)
        await client.send(protocol.encode_heartbeat(0.1))
        await client.send(protocol.encode_hello())
        assert (await client.recv())["type"] == "welcome"
        await client.close()


async def test_half_closed_connection_still_gets_its_decision(
    channel: tuple[ToolChannel, Harness],
) -> None:
    chan, harness = channel
    client = await Client.connect(chan)
    await client.send(ask_line("c1", "deploy"))
    client.writer.write_eof()
    assert (await client.recv())["type"] == "pending"
    harness.decide("deploy", ApprovalState.APPROVED, True)
    assert (await client.recv())["type"] == "decision"
    await eventually(lambda: chan.connection_count == 0)
    await client.close()


async def test_socket_permissions(sock_dir: Path, channel: tuple[ToolChannel, Harness]) -> None:
    chan, _ = channel
    mode = chan.path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(chan.path.parent.stat().st_mode) == 0o700


async def test_close_cancels_requests_and_unlinks(sock_dir: Path) -> None:
    harness = Harness(run_id="run-1")
    chan = ToolChannel(
        sock_dir / "c.sock",
        run_id="r",
        attempt=3,
        heartbeat_interval=1.0,
        on_heartbeat=harness.on_heartbeat,
        on_request=harness.on_request,
    )
    await chan.start()
    client = await Client.connect(chan)
    await client.send(ask_line("c1", "wait"))
    assert (await client.recv())["type"] == "pending"
    await chan.close()
    assert harness.cancelled == ["wait"]
    assert not chan.path.exists()
    assert chan.waiting_keys == []
    assert await asyncio.wait_for(client.reader.read(), DEADLINE) == b""  # connection closed
    await chan.close()  # idempotent
    await client.close()


async def test_a_cancelled_handler_that_raises_instead_is_not_a_warning(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # temporalio turns a cancelled update call into WorkflowUpdateRPCTimeoutOrCancelledError;
    # the channel cancelled it itself (a deferred agent call's hook hung up), so it is no error.
    started = asyncio.Event()

    async def on_request(ask: ApprovalAsk, notify: NotifyPending) -> Decision:
        notify("r/wait", DECIDED_AT)
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("Timeout or cancellation waiting for update") from None
        raise AssertionError("never decided")

    chan = ToolChannel(
        sock_dir / "x.sock", run_id="r", attempt=1, heartbeat_interval=1.0,
        on_heartbeat=lambda progress, message: None, on_request=on_request,
    )
    await chan.start()
    client = await Client.connect(chan)
    await client.send(ask_line("x1", "wait"))
    assert (await client.recv())["type"] == "pending"
    await asyncio.wait_for(started.wait(), DEADLINE)
    with caplog.at_level("WARNING", logger="toolwarden.channel"):
        await chan.close()
    assert [r.getMessage() for r in caplog.records if r.name == "toolwarden.channel"] == []
    assert await asyncio.wait_for(client.reader.read(), DEADLINE) == b""  # no error reply
    await client.close()


async def test_start_replaces_a_stale_socket_but_not_a_file(sock_dir: Path) -> None:
    stale = sock_dir / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale))
    leftover.close()  # the file stays behind, nobody listens
    harness = Harness(run_id="run-1")

    def make(path: Path) -> ToolChannel:
        return ToolChannel(
            path,
            run_id="r",
            attempt=1,
            heartbeat_interval=1.0,
            on_heartbeat=harness.on_heartbeat,
            on_request=harness.on_request,
        )

    async with make(stale) as chan:
        client = await Client.connect(chan)
        await client.send(protocol.encode_hello())
        assert (await client.recv())["type"] == "welcome"
        await client.close()
    assert not stale.exists()

    regular = sock_dir / "file.sock"
    regular.write_text("not a socket")
    with pytest.raises(FileExistsError):
        await make(regular).start()
    assert regular.read_text() == "not a socket"


async def test_too_long_socket_path_is_a_clear_error(sock_dir: Path) -> None:
    async def never(ask: ApprovalAsk, notify: NotifyPending) -> Decision:
        raise AssertionError

    chan = ToolChannel(
        sock_dir / ("d" * 120) / "s.sock",
        run_id="r",
        attempt=1,
        heartbeat_interval=1.0,
        on_heartbeat=lambda p, m: None,
        on_request=never,
    )
    with pytest.raises(ValueError, match="socket_dir"):
        await chan.start()


async def test_a_flood_of_bad_lines_does_not_hurt_the_channel(
    channel: tuple[ToolChannel, Harness],
) -> None:
    chan, harness = channel
    client = await Client.connect(chan)
    await client.send(b"garbage\n" * 500)
    for _ in range(500):
        assert (await client.recv())["code"] == "malformed"
    await client.send(ask_line("c1", "still-works"))
    assert (await client.recv())["type"] == "pending"
    harness.decide("still-works", ApprovalState.APPROVED, True)
    assert (await client.recv())["type"] == "decision"
    await client.close()
