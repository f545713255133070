"""Supervisor side of the approval protocol: the per-attempt Unix socket a tool talks to.

The `run_tool` activity creates one `ToolChannel` per attempt, passes its path to the tool in
`$TOOLWARDEN_SOCKET`, and supplies two callbacks:

- `on_heartbeat(progress, message)` for each `heartbeat` line;
- `on_request(ask, notify_pending)` for each `approval_request`: it forwards the request to the
  workflow, calls `notify_pending(approval_id, expires_at)` once the workflow has durably
  recorded it (the channel then writes the `pending` line), and returns the `Decision`.

Liveness: every byte received from the tool (hello, heartbeat, request, even a malformed line)
updates `last_seen` (a `time.monotonic()` value). `on_heartbeat` is called for heartbeat lines
only, so it never overwrites progress with nulls. Hang detection should use `last_seen`
together with `waiting_keys`: while a request awaits a decision the tool is waiting for a
person, not hung.

Each request runs in its own task, so one connection may have several requests in flight. A
request keeps running if the tool half-closes its connection (it may still read the reply);
its task is cancelled by `close()`. Cancelling `on_request` means only "nobody is listening on
this socket any more": the handler must not treat it as cancelling the approval itself.

The channel never raises into the activity because of what a tool sends: bad lines get an
`error` reply (and a log line), the connection stays open.

This module must not import temporalio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from toolwarden import protocol
from toolwarden.files import private_dir
from toolwarden.models import ApprovalAsk, Decision, ExpiryOutcome

log = logging.getLogger(__name__)

NotifyPending = Callable[[str, datetime], None]
RequestHandler = Callable[[ApprovalAsk, NotifyPending], Awaitable[Decision]]
# An agent hook's tool call: the handler applies the policy and, if it asks, gets a decision.
AgentCallHandler = Callable[[protocol.AgentCallMessage, NotifyPending], Awaitable[Decision]]

# Unix socket paths are limited by sockaddr_un.sun_path (108 bytes on Linux, 104 on macOS).
MAX_SOCKET_PATH_BYTES = 103
# Requests one connection may have in flight; more get an `invalid` error.
MAX_REQUESTS_PER_CONNECTION = 64
_READ_CHUNK = 65536


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _describe_validation(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return f"{where}: {message}" if where else message


class _Connection:
    """One accepted connection: its writer and its in-flight requests."""

    def __init__(self, number: int, writer: asyncio.StreamWriter) -> None:
        self.number = number
        self.writer = writer
        self.requests: dict[str, asyncio.Task[None]] = {}
        self.keys: dict[str, str] = {}

    def send(self, line: bytes) -> None:
        if self.writer.is_closing():
            return
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):  # peer gone
            self.writer.write(line)


class ToolChannel:
    """A Unix socket server speaking approval protocol v1 with one tool attempt."""

    def __init__(
        self,
        path: Path,
        *,
        run_id: str,
        attempt: int,
        heartbeat_interval: float,
        on_heartbeat: Callable[[float | None, str | None], None],
        on_request: RequestHandler,
        on_agent_call: AgentCallHandler | None = None,
    ) -> None:
        self._path = Path(path)
        self._run_id = run_id
        self._attempt = attempt
        self._heartbeat_interval = heartbeat_interval
        self._on_heartbeat = on_heartbeat
        self._on_request = on_request
        self._on_agent_call = on_agent_call
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._connections: dict[int, _Connection] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._next_connection = 0
        self._last_seen: float | None = None
        self._hello: protocol.Hello | None = None
        self._closed = False

    # -- properties -----------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def waiting_keys(self) -> list[str]:
        """Keys of requests awaiting a decision, oldest first, without duplicates."""
        keys: dict[str, None] = {}
        for conn in self._connections.values():
            for key in conn.keys.values():
                keys[key] = None
        return list(keys)

    @property
    def last_seen(self) -> float | None:
        """`time.monotonic()` when the tool last sent anything on any connection, or None."""
        return self._last_seen

    @property
    def hello(self) -> protocol.Hello | None:
        """The most recent `hello` (tool name and pid as the tool reported them)."""
        return self._hello

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on `path`: parent directory 0700 if created here, socket 0600."""
        if self._server is not None:
            raise RuntimeError("channel already started")
        encoded = os.fsencode(self._path)
        if len(encoded) > MAX_SOCKET_PATH_BYTES:
            raise ValueError(
                f"socket path is {len(encoded)} bytes, more than the {MAX_SOCKET_PATH_BYTES} "
                f"a Unix socket allows: {self._path} (set worker.socket_dir to a short directory)"
            )
        private_dir(self._path.parent)  # also refuses a directory someone else made in /tmp
        try:
            st = self._path.lstat()
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise FileExistsError(f"{self._path} exists and is not a socket")
            self._path.unlink()  # stale socket of an earlier incarnation of this attempt
        self._server = await asyncio.start_unix_server(self._accept, path=str(self._path), limit=_READ_CHUNK)
        os.chmod(self._path, 0o600)
        self._inode = self._path.lstat().st_ino

    async def close(self) -> None:
        """Stop listening, cancel in-flight requests, close connections, unlink the socket."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        requests: list[asyncio.Task[None]] = []
        for conn in list(self._connections.values()):
            requests.extend(conn.requests.values())
        for task in requests:
            task.cancel()
        for conn in list(self._connections.values()):
            with contextlib.suppress(Exception):
                conn.writer.close()
        # Connection handlers end by themselves once their transport is closed (cancelling them
        # would make asyncio's streams log the CancelledError).
        tasks = [*requests, *self._handlers]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        self._connections.clear()
        self._unlink()

    def _unlink(self) -> None:
        try:
            st = self._path.lstat()
        except FileNotFoundError:
            return
        if self._inode is not None and st.st_ino == self._inode:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    async def __aenter__(self) -> ToolChannel:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- connections ----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._closed:
            writer.close()
            return
        self._next_connection += 1
        conn = _Connection(self._next_connection, writer)
        self._connections[conn.number] = conn
        if task is not None:
            self._handlers.add(task)
        try:
            await self._read_lines(reader, conn)
            # Half-closed by the tool: let its requests finish, it may still be reading.
            if conn.requests:
                await asyncio.gather(*conn.requests.values(), return_exceptions=True)
        except (ConnectionError, OSError):
            pass
        finally:
            for request in list(conn.requests.values()):
                request.cancel()
            if conn.requests:
                await asyncio.gather(*conn.requests.values(), return_exceptions=True)
            self._connections.pop(conn.number, None)
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._handlers.discard(task)

    async def _read_lines(self, reader: asyncio.StreamReader, conn: _Connection) -> None:
        buffer = bytearray()
        discarding = False  # inside an oversized line: drop bytes up to the next newline
        while True:
            chunk = await reader.read(_READ_CHUNK)
            if not chunk:
                break
            self._last_seen = time.monotonic()
            start = 0
            while True:
                newline = chunk.find(b"\n", start)
                if newline < 0:
                    if not discarding:
                        buffer += chunk[start:]
                        if len(buffer) >= protocol.MAX_LINE_BYTES:
                            buffer.clear()
                            discarding = True
                            self._refuse(
                                conn,
                                protocol.ProtocolViolation(
                                    protocol.OVERSIZED,
                                    f"line is longer than {protocol.MAX_LINE_BYTES} bytes",
                                ),
                            )
                    break
                piece = chunk[start : newline + 1]
                start = newline + 1
                if discarding:
                    discarding = False
                    continue
                buffer += piece
                line = bytes(buffer)
                buffer.clear()
                self._handle_line(line, conn)
            # Back-pressure: a tool that writes without reading our replies stops being read.
            await conn.writer.drain()
        if buffer and not discarding:
            self._handle_line(bytes(buffer), conn)  # last line without a newline

    def _refuse(self, conn: _Connection, violation: protocol.ProtocolViolation) -> None:
        conn.send(protocol.encode_error(violation.code, violation.message, violation.request_id))
        log.info(
            "run %s attempt %s: protocol error: %s: %s",
            self._run_id, self._attempt, violation.code, violation.message,
        )

    def _handle_line(self, line: bytes, conn: _Connection) -> None:
        if not line.strip():
            return  # blank lines are allowed and ignored
        try:
            message = protocol.parse_line(line)
        except protocol.ProtocolViolation as violation:
            self._refuse(conn, violation)
            return
        if isinstance(message, protocol.Heartbeat):
            try:
                self._on_heartbeat(message.progress, message.message)
            except Exception:
                log.exception("on_heartbeat callback failed")
        elif isinstance(message, protocol.Hello):
            self._hello = message
            conn.send(protocol.encode_welcome(self._run_id, self._attempt, self._heartbeat_interval))
        elif isinstance(message, protocol.AgentCallMessage):
            self._start_agent_call(message, conn)
        else:
            self._start_request(message, conn)

    def _start_agent_call(self, message: protocol.AgentCallMessage, conn: _Connection) -> None:
        handler = self._on_agent_call
        if handler is None:
            self._refuse(
                conn,
                protocol.ProtocolViolation(
                    protocol.INVALID, "this run has no agent adapter (run it with --agent)", message.id
                ),
            )
            return
        if message.id in conn.requests or len(conn.requests) >= MAX_REQUESTS_PER_CONNECTION:
            text = "request id in use or too many requests in flight"
            violation = protocol.ProtocolViolation(protocol.INVALID, text, message.id)
            self._refuse(conn, violation)
            return
        key = f"agent-call:{message.tool_use_id or message.id}"
        conn.keys[message.id] = key
        task = asyncio.create_task(
            self._serve(message.id, key, lambda notify: handler(message, notify), conn), name=key
        )
        conn.requests[message.id] = task

    # -- approval requests ----------------------------------------------------------------

    def _start_request(self, message: protocol.ApprovalRequestMessage, conn: _Connection) -> None:
        def refuse(text: str) -> None:
            self._refuse(conn, protocol.ProtocolViolation(protocol.INVALID, text, message.id))

        if message.id in conn.requests:
            refuse(f"request id {message.id!r} is already waiting on this connection")
            return
        if len(conn.requests) >= MAX_REQUESTS_PER_CONNECTION:
            refuse(f"more than {MAX_REQUESTS_PER_CONNECTION} requests in flight")
            return
        try:
            ask = ApprovalAsk(
                key=message.key,
                summary=message.summary,
                details=message.details,
                timeout=(None if message.timeout is None else timedelta(seconds=message.timeout)),
                on_expiry=None if message.on_expiry is None else ExpiryOutcome(message.on_expiry),
                attempt=self._attempt,
            )
        except (ValidationError, ValueError) as exc:
            text = _describe_validation(exc) if isinstance(exc, ValidationError) else str(exc)
            refuse(text)
            return
        conn.keys[message.id] = message.key
        handler = self._on_request
        task = asyncio.create_task(
            self._serve(message.id, message.key, lambda notify: handler(ask, notify), conn),
            name=f"approval {message.key}",
        )
        conn.requests[message.id] = task

    async def _serve(
        self,
        request_id: str,
        key: str,
        decide: Callable[[NotifyPending], Awaitable[Decision]],
        conn: _Connection,
    ) -> None:
        state = {"pending_sent": False, "done": False}

        def notify_pending(approval_id: str, expires_at: datetime) -> None:
            if state["pending_sent"] or state["done"]:
                return
            state["pending_sent"] = True
            # An agent call learns its key here: the supervisor derived it from the call.
            pending_key = approval_id.rpartition("/")[2] or key
            conn.send(protocol.encode_pending(request_id, pending_key, approval_id, _iso(expires_at)))

        try:
            decision = await decide(notify_pending)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # We cancelled it (the tool hung up, or the attempt ended) and the handler
                # turned that into an error, as temporalio's update calls do ("Timeout or
                # cancellation waiting for update"): nothing went wrong, nobody to answer.
                raise asyncio.CancelledError from exc
            text = str(exc) or type(exc).__name__
            log.warning("approval %s: the supervisor could not handle it: %s", key, text)
            conn.send(protocol.encode_error(protocol.UNAVAILABLE, text, request_id))
            return
        finally:
            state["done"] = True
            conn.keys.pop(request_id, None)
            conn.requests.pop(request_id, None)
        line = protocol.encode_decision(request_id, decision.model_dump(mode="json"))
        if len(line) > protocol.MAX_REPLY_BYTES:
            line = protocol.encode_error(
                protocol.OVERSIZED,
                f"the decision is larger than {protocol.MAX_REPLY_BYTES} bytes",
                request_id,
            )
        conn.send(line)
