"""The tool-side library: heartbeats and approval requests from inside a supervised tool.

    from toolwarden.tool import heartbeat, request_approval

    for i, item in enumerate(items):
        process(item)
        heartbeat(progress=i / len(items), message=f"processed {item}")

    decision = request_approval("apply-patch", "Apply the generated patch?", details={...})
    if decision.approved:
        apply(decision.response)

Standard library only: importing this module does not import temporalio or pydantic, so it is
cheap for any tool. Outside toolwarden ($TOOLWARDEN_SOCKET unset) `heartbeat` does nothing and
`request_approval` raises `NotSupervisedError`.

`heartbeat` never blocks and never raises: it stores the latest value and a background daemon
thread sends it at most once per heartbeat interval (the supervisor's `welcome` says how often;
1 s by default), last value wins. Out-of-range values are clamped rather than refused.

See docs/tool-developer-guide.md and specs/approval-protocol-v1.md.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import math
import os
import socket
import sys
import threading
from datetime import timedelta
from typing import Any, NoReturn

from toolwarden import protocol
from toolwarden.protocol import (
    ENV_RESUME,
    ENV_SOCKET,
    EXIT_AWAIT_DECISION,
    DecisionReply,
    Pending,
)

__all__ = [
    "EXIT_AWAIT_DECISION",
    "ApprovalError",
    "DecisionReply",
    "NotSupervisedError",
    "Pending",
    "aheartbeat",
    "arequest_approval",
    "arequest_approval_or_exit",
    "asubmit_approval",
    "heartbeat",
    "request_approval",
    "request_approval_or_exit",
    "resume_decisions",
    "submit_approval",
    "supervised",
]


class ApprovalError(Exception):
    """No decision could be obtained: the supervisor refused the request or went away.

    `code` is the protocol error code (`invalid`, `unavailable`, ...) or `not_supervised`.
    """

    def __init__(self, message: str, code: str = protocol.UNAVAILABLE) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotSupervisedError(ApprovalError):
    """The tool is not running under toolwarden, so there is nobody to ask."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or f"not supervised by toolwarden (${ENV_SOCKET} is not set): there is nobody to "
            "ask for approval; run the tool with `toolwarden run -- CMD`",
            code="not_supervised",
        )


def supervised() -> bool:
    """Whether this process runs under toolwarden (it has a supervisor socket)."""
    return bool(os.environ.get(ENV_SOCKET))


def resume_decisions() -> dict[str, DecisionReply]:
    """Decisions already made in this run, from $TOOLWARDEN_RESUME (empty if none or unreadable).

    An unreadable entry is skipped: asking for its key again is safe, because the supervisor
    answers an already-decided key with the recorded decision.
    """
    raw = os.environ.get(ENV_RESUME)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    decisions: dict[str, DecisionReply] = {}
    for key, value in data.items():
        try:
            decisions[key] = DecisionReply.from_json(value, key=key)
        except (ValueError, TypeError):
            continue
    return decisions


# ---------------------------------------------------------------------------------------------
# Heartbeats
#
# The hot path is three attribute stores on a slotted object and one load. The emitter thread
# clears `dirty` before reading the value, so an update racing with a send is at worst sent
# again one interval later, never lost. `idle` is True while the emitter sleeps without a
# deadline (or does not exist yet); only then does heartbeat() pay for a wake-up.


class _Beat:
    __slots__ = ("dirty", "idle", "message", "progress")

    def __init__(self) -> None:
        self.progress: Any = None
        self.message: Any = None
        self.dirty = False
        self.idle = True


_beat = _Beat()
_emitter: _Emitter | None = None
_emitter_lock = threading.Lock()


def heartbeat(progress: float | None = None, message: str | None = None) -> None:
    """Report liveness and, optionally, progress (0..1) and a short message. Never blocks."""
    beat = _beat
    beat.progress = progress
    beat.message = message
    beat.dirty = True
    if beat.idle:
        _kick()


async def aheartbeat(progress: float | None = None, message: str | None = None) -> None:
    """`heartbeat` for async code (it never blocks, so this only mirrors the sync API)."""
    heartbeat(progress, message)


def _kick() -> None:
    global _emitter
    with _emitter_lock:
        if _emitter is None:
            path = os.environ.get(ENV_SOCKET)
            if not path:
                _beat.idle = False  # unsupervised: heartbeat() stays a no-op in this process
                return
            _emitter = _Emitter(path)
            _emitter.start()
        _beat.idle = False
        _emitter.wake.set()


def _clean(progress: Any, message: Any) -> tuple[float | None, str | None]:
    if isinstance(progress, int | float) and not isinstance(progress, bool):
        value: float | None = None if math.isnan(progress) else min(max(float(progress), 0.0), 1.0)
    else:
        value = None
    text: str | None = None
    if message is not None:
        text = str(message)[: protocol.MAX_MESSAGE_CHARS]
        text = text.encode("utf-8", "replace").decode("utf-8")
    return value, text


class _Emitter(threading.Thread):
    """Owns one connection and sends the latest heartbeat at most once per interval."""

    def __init__(self, path: str) -> None:
        super().__init__(name="toolwarden-heartbeat", daemon=True)
        self.path = path
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.interval = protocol.DEFAULT_HEARTBEAT_INTERVAL
        self.sock: socket.socket | None = None
        self.send_lock = threading.Lock()
        atexit.register(self.flush)

    def run(self) -> None:
        beat = _beat
        while not self.stopping.is_set():
            self.wake.wait()
            self.wake.clear()
            while not self.stopping.is_set():
                if beat.dirty:
                    beat.dirty = False
                    self.send(beat.progress, beat.message)
                    self.stopping.wait(self.interval)
                    continue
                beat.idle = True
                if beat.dirty:  # heartbeat() ran between the check and `idle = True`
                    beat.idle = False
                    continue
                break

    def flush(self) -> None:
        """At exit: send a value the thread has not sent yet (a final progress=1.0)."""
        if _emitter is not self:  # inherited by a forked child: not ours to flush
            return
        self.stopping.set()
        self.wake.set()
        if _beat.dirty:
            _beat.dirty = False
            self.send(_beat.progress, _beat.message)
        self.disconnect()

    def send(self, progress: Any, message: Any) -> None:
        line = protocol.encode_heartbeat(*_clean(progress, message))
        with self.send_lock:
            try:
                sock = self.sock or self.connect()
                self.drain(sock)
                sock.sendall(line)
            except OSError:
                self.disconnect()  # the supervisor went away: drop the value, retry next time

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(5.0)
            sock.connect(self.path)
            name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else None
            sock.sendall(protocol.encode_hello(tool=name, pid=os.getpid()))
            reader = _LineReader(sock)
            sock.settimeout(2.0)
            with contextlib.suppress(OSError, ValueError, ApprovalError):
                line = reader.next_line()
                reply = None if line is None else protocol.parse_reply(line)
                if isinstance(reply, protocol.Welcome):
                    self.interval = reply.heartbeat_interval
            sock.settimeout(5.0)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        return sock

    def drain(self, sock: socket.socket) -> None:
        """Discard replies (only error lines could come) so the supervisor never blocks."""
        sock.settimeout(0.0)  # (MSG_DONTWAIT alone would wait out the socket timeout)
        try:
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    return
                if not data:
                    raise ConnectionResetError("supervisor closed the connection")
        finally:
            sock.settimeout(5.0)

    def disconnect(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _after_fork_in_child() -> None:
    global _emitter, _emitter_lock
    if _emitter is not None and _emitter.sock is not None:
        with contextlib.suppress(OSError):
            _emitter.sock.close()  # the parent's connection; the child makes its own
    _emitter = None
    _beat.idle = True
    _beat.dirty = False
    _emitter_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------------------------------
# Approval requests


class _LineReader:
    """Reads newline-terminated replies from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def next_line(self) -> bytes | None:
        while True:
            newline = self.buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self.buffer[: newline + 1])
                del self.buffer[: newline + 1]
                return line
            if len(self.buffer) > protocol.MAX_REPLY_BYTES:
                raise ApprovalError("the supervisor sent a line longer than the protocol allows")
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buffer += data


def _new_request_id() -> str:
    return os.urandom(6).hex()


def _prepare(
    key: str,
    summary: str,
    details: Any,
    timeout: float | timedelta | None,
    on_expiry: str | None,
) -> tuple[DecisionReply | None, str, bytes, str]:
    """Validate, consult $TOOLWARDEN_RESUME; return (known decision, id, lines, socket path)."""
    request_id = _new_request_id()
    try:
        request = protocol.encode_approval_request(request_id, key, summary, details, timeout, on_expiry)
    except TypeError as exc:  # details that json cannot serialize
        raise ValueError(f"details are not JSON: {exc}") from None
    known = resume_decisions().get(key)
    if known is not None:
        return known, request_id, b"", ""
    path = os.environ.get(ENV_SOCKET)
    if not path:
        raise NotSupervisedError()
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else None
    return None, request_id, protocol.encode_hello(tool=name, pid=os.getpid()) + request, path


def _interpret(line: bytes, request_id: str, stop_at_pending: bool) -> DecisionReply | Pending | None:
    """What one reply line means for our request: an answer, or None to keep reading."""
    try:
        reply = protocol.parse_reply(line)
    except ValueError as exc:
        raise ApprovalError(f"the supervisor sent an invalid reply: {exc}") from None
    if isinstance(reply, protocol.DecisionMessage) and reply.id == request_id:
        return reply.decision
    if isinstance(reply, protocol.Pending) and reply.id == request_id and stop_at_pending:
        return reply
    if isinstance(reply, protocol.ErrorReply) and reply.id in (request_id, None):
        raise ApprovalError(f"the supervisor refused the request: {reply.message}", reply.code)
    return None


def _lost() -> ApprovalError:
    return ApprovalError("the supervisor closed the connection before a decision was made")


def _exchange(path: str, lines: bytes, request_id: str, stop_at_pending: bool) -> DecisionReply | Pending:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        try:
            sock.connect(path)
        except OSError as exc:
            raise ApprovalError(f"cannot reach the supervisor at {path}: {exc.strerror or exc}") from None
        try:
            sock.sendall(lines)
            reader = _LineReader(sock)
            while True:
                line = reader.next_line()
                if line is None:
                    raise _lost()
                answer = _interpret(line, request_id, stop_at_pending)
                if answer is not None:
                    return answer
        except OSError as exc:
            raise ApprovalError(f"lost the supervisor connection: {exc}") from None


async def _aexchange(
    path: str, lines: bytes, request_id: str, stop_at_pending: bool
) -> DecisionReply | Pending:
    try:
        reader, writer = await asyncio.open_unix_connection(path, limit=protocol.MAX_REPLY_BYTES + 1)
    except OSError as exc:
        raise ApprovalError(f"cannot reach the supervisor at {path}: {exc.strerror or exc}") from None
    try:
        writer.write(lines)
        await writer.drain()
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                raise ApprovalError("the supervisor sent a line longer than the protocol allows") from None
            if not line:
                raise _lost()
            answer = _interpret(line, request_id, stop_at_pending)
            if answer is not None:
                return answer
    except OSError as exc:
        raise ApprovalError(f"lost the supervisor connection: {exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def request_approval(
    key: str,
    summary: str,
    details: Any = None,
    timeout: float | timedelta | None = None,
    on_expiry: str | None = None,
) -> DecisionReply:
    """Ask a person and wait (blocking) for the decision; heartbeats keep flowing meanwhile.

    `key` names the decision within the run: asking again for a decided key answers at once
    with the recorded decision. `details` is any JSON (at most 32 KiB serialized); `timeout`
    (seconds or timedelta, default: the run's approval timeout) and `on_expiry` ("approve" or
    "reject", default: the run's setting) say what happens if nobody answers.

    Raises ValueError for arguments the protocol refuses, NotSupervisedError outside
    toolwarden, ApprovalError if the supervisor refuses the request or goes away.
    """
    known, request_id, lines, path = _prepare(key, summary, details, timeout, on_expiry)
    if known is not None:
        return known
    answer = _exchange(path, lines, request_id, stop_at_pending=False)
    assert isinstance(answer, DecisionReply)
    return answer


def submit_approval(
    key: str,
    summary: str,
    details: Any = None,
    timeout: float | timedelta | None = None,
    on_expiry: str | None = None,
) -> DecisionReply | Pending:
    """Ask, and return as soon as the request is durably recorded (`Pending`) or decided.

    The building block of exit-and-relaunch: after a `Pending` the tool may exit with
    `EXIT_AWAIT_DECISION` and is relaunched with the decision in $TOOLWARDEN_RESUME.
    """
    known, request_id, lines, path = _prepare(key, summary, details, timeout, on_expiry)
    if known is not None:
        return known
    return _exchange(path, lines, request_id, stop_at_pending=True)


def request_approval_or_exit(
    key: str,
    summary: str,
    details: Any = None,
    timeout: float | timedelta | None = None,
    on_expiry: str | None = None,
) -> DecisionReply:
    """Return the decision if it is already known; otherwise exit with EXIT_AWAIT_DECISION (75).

    The supervisor then waits for the decision with no process running and relaunches the tool,
    where this same call returns the decision at once. Use it for waits that may last days.
    """
    answer = submit_approval(key, summary, details, timeout, on_expiry)
    if isinstance(answer, DecisionReply):
        return answer
    _exit_awaiting(answer)


async def arequest_approval(
    key: str,
    summary: str,
    details: Any = None,
    timeout: float | timedelta | None = None,
    on_expiry: str | None = None,
) -> DecisionReply:
    """`request_approval` for asyncio code: awaits the decision without blocking the loop."""
    known, request_id, lines, path = _prepare(key, summary, details, timeout, on_expiry)
    if known is not None:
        return known
    answer = await _aexchange(path, lines, request_id, stop_at_pending=False)
    assert isinstance(answer, DecisionReply)
    return answer


async def asubmit_approval(
    key: str,
    summary: str,
    details: Any = None,
    timeout: float | timedelta | None = None,
    on_expiry: str | None = None,
) -> DecisionReply | Pending:
    """`submit_approval` for asyncio code."""
    known, request_id, lines, path = _prepare(key, summary, details, timeout, on_expiry)
    if known is not None:
        return known
    return await _aexchange(path, lines, request_id, stop_at_pending=True)


async def arequest_approval_or_exit(
    key: str,
    summary: str,
    details: Any = None,
    timeout: float | timedelta | None = None,
    on_expiry: str | None = None,
) -> DecisionReply:
    """`request_approval_or_exit` for asyncio code (raises SystemExit(75) to defer)."""
    answer = await asubmit_approval(key, summary, details, timeout, on_expiry)
    if isinstance(answer, DecisionReply):
        return answer
    _exit_awaiting(answer)


def _exit_awaiting(pending: Pending) -> NoReturn:
    """Leave with EXIT_AWAIT_DECISION: SystemExit in the main thread, os._exit elsewhere."""
    print(
        f"toolwarden: approval {pending.approval_id} is pending; exiting with "
        f"{EXIT_AWAIT_DECISION} to be relaunched with the decision",
        file=sys.stderr,
    )
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if threading.current_thread() is threading.main_thread():
        raise SystemExit(EXIT_AWAIT_DECISION)
    os._exit(EXIT_AWAIT_DECISION)
