"""Process control for one tool launch: spawn, capture output, watch, kill the whole group.

Plain asyncio, no Temporal: the `run_tool` activity is a thin adapter over `launch` and
`supervise`, and both are unit-tested here with real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import shlex
import shutil
import signal
import struct
import sys
import termios
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from toolwarden.files import open_private, private_dir
from toolwarden.models import DEFAULT_LIVENESS, AttemptOutcome, Liveness

READ_CHUNK = 64 * 1024
MAX_TAIL_LINE = 2000
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
CLI_SHIM_NAME = "toolwarden"


# `setpriv --pdeathsig KILL` (util-linux) sets PR_SET_PDEATHSIG and execs the tool, so the tool
# dies with its worker. A Python `preexec_fn` would do the same but forces a full fork() of the
# worker instead of vfork(): ~35 ms per launch at worker size and a blocked event loop.
SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None
# `setsid --ctty` (util-linux) makes the tool a session leader whose controlling terminal is
# its stdin, the pseudo-terminal of prompt mode, so `/dev/tty` and job control work as in a
# shell. Without it the tool still gets the terminal on stdin, stdout and stderr.
SETSID = shutil.which("setsid") if sys.platform.startswith("linux") else None
# Wide enough that a long prompt does not wrap, so it stays the last line of output.
TERMINAL_SIZE = (50, 250)
# CPU seconds a process group must use within a window to count as alive: /proc counts in
# 10 ms ticks, an idle process waking now and then uses a tick or two, and a busy one starved
# to a few percent of a core on a loaded host still shows this much within the window.
CPU_PROGRESS_SECONDS = 0.03
CPU_WINDOW_SECONDS = 5.0


def resolve_executable(argv0: str, cwd: str | None, env: dict[str, str]) -> None:
    """Fail like exec would (127 missing, 126 not executable), before anything is spawned."""
    if "/" in argv0:
        path = Path(cwd or os.getcwd()) / argv0
        if not path.exists():
            raise LaunchError(f"{argv0}: No such file or directory", EXIT_NOT_FOUND)
        if path.is_dir() or not os.access(path, os.X_OK):
            raise LaunchError(f"{argv0}: Permission denied", EXIT_NOT_EXECUTABLE)
        return
    if shutil.which(argv0, path=env.get("PATH", os.defpath)) is None:
        raise LaunchError(f"{argv0}: No such file or directory in PATH", EXIT_NOT_FOUND)


def install_cli_shim(directory: Path, interpreter: str = sys.executable) -> Path:
    """Write `DIRECTORY/toolwarden`, running this installation's CLI; return DIRECTORY.

    Tools inherit the worker's environment, and its PATH need not hold the worker's own install
    (`/opt/toolwarden/bin/toolwarden worker` under systemd, `.venv/bin/toolwarden up` without
    activating the venv), so `toolwarden beat` and `toolwarden ask` would not be found. A
    directory holding only this shim goes first on every tool's PATH: it shadows nothing else,
    and the tool talks to the worker with the worker's own version of the protocol.
    """
    text = (
        "#!/bin/sh\n"
        "# Written by the toolwarden worker: its own CLI, for `toolwarden beat` and `ask` in tools.\n"
        f'exec {shlex.quote(interpreter)} -m toolwarden.cli "$@"\n'
    )
    shim = directory / CLI_SHIM_NAME
    with contextlib.suppress(OSError):
        if shim.read_text() == text and os.access(shim, os.X_OK):
            return directory
    private_dir(directory)
    # Written aside and renamed: a tool starting meanwhile never runs half a script.
    partial = directory / f".{CLI_SHIM_NAME}.{os.getpid()}"
    partial.write_text(text)
    partial.chmod(0o755)
    os.replace(partial, shim)
    return directory


def path_with_first(directory: Path, path: str | None) -> str:
    """A PATH value that searches DIRECTORY first, then PATH (the OS default when unset)."""
    rest = (os.defpath if path is None else path).split(os.pathsep)
    return os.pathsep.join([str(directory), *(entry for entry in rest if entry != str(directory))])


def with_parent_death_signal(argv: list[str]) -> list[str]:
    return [SETPRIV, "--pdeathsig", "KILL", "--", *argv] if SETPRIV else argv


class LaunchError(Exception):
    """The tool could not be started; never retried."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class OutputSink:
    """One output stream: appended to a size-capped log file, last lines kept in memory."""

    def __init__(
        self,
        path: Path,
        cap_bytes: int,
        tail: deque[str],
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> None:
        self.path = path
        self.on_chunk = on_chunk
        self.cap_bytes = cap_bytes
        self.tail = tail
        self.total_bytes = 0
        self.written_bytes = 0
        self.truncated = False
        self.last_output = time.monotonic()
        self._partial = ""
        # 0600: tool output often holds secrets.
        descriptor = open_private(path, os.O_WRONLY | os.O_APPEND)
        self._file: IO[bytes] = os.fdopen(descriptor, "ab", buffering=0)

    def feed(self, chunk: bytes) -> None:
        self.last_output = time.monotonic()
        self.total_bytes += len(chunk)
        room = self.cap_bytes - self.written_bytes
        if room > 0:
            part = chunk[:room]
            self._file.write(part)
            self.written_bytes += len(part)
        if len(chunk) > max(room, 0) and not self.truncated:
            self.truncated = True
            self._file.write(
                f"\n[toolwarden: log capped at {self.cap_bytes} bytes; rest discarded]\n".encode()
            )
        self._remember(chunk)
        if self.on_chunk is not None:
            self.on_chunk(chunk)

    def _remember(self, chunk: bytes) -> None:
        if self.tail.maxlen == 0:
            return
        # Only the last few lines of a chunk can survive in the tail, so never split it whole.
        keep = (self.tail.maxlen or 1) + 1
        text = self._partial + chunk[-keep * MAX_TAIL_LINE :].decode("utf-8", "replace")
        lines = text.split("\n")
        self._partial = lines.pop()[-MAX_TAIL_LINE:]
        for line in lines[-keep:]:
            self.tail.append(line[-MAX_TAIL_LINE:].rstrip("\r"))

    def close(self) -> None:
        if self._partial:
            self.tail.append(self._partial)
            self._partial = ""
        self._file.close()


class Terminal:
    """The controlling side of a tool's pseudo-terminal; what is written is the tool's input."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False

    def write(self, text: str) -> bool:
        """Type `text` into the tool's terminal; False if it is gone or its input is full.

        An answer is a few bytes and the terminal's input buffer holds kilobytes, so it only
        fills if the tool stopped reading long ago; the write never blocks the event loop.
        """
        if self.closed:
            return False  # never write to a closed, possibly reused, descriptor
        data = text.encode()
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError:  # BlockingIOError included
            return False
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


@dataclass
class Launched:
    process: asyncio.subprocess.Process
    pid: int
    pgid: int
    started_at: datetime
    stdout: OutputSink
    stderr: OutputSink
    tail: deque[str]
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    terminal: Terminal | None = None

    @property
    def last_output(self) -> float:
        return max(self.stdout.last_output, self.stderr.last_output)


async def launch(
    argv: list[str],
    *,
    cwd: str | None,
    env: dict[str, str],
    stdout_path: Path,
    stderr_path: Path,
    log_cap_bytes: int,
    tail_lines: int,
    terminal: bool = False,
    on_output: Callable[[bytes], None] | None = None,
) -> Launched:
    """Start `argv` (never through a shell) in its own session, output to capped log files.

    With `terminal`, stdin, stdout and stderr are one pseudo-terminal, as in a shell: the tool
    prompts as it would for a person, its output is one stream (logged as stdout), and
    `Launched.terminal` types its input. `on_output` sees every chunk of the tool's output.
    """
    if cwd is not None and not Path(cwd).is_dir():
        raise LaunchError(f"working directory not found: {cwd}", EXIT_NOT_FOUND)
    resolve_executable(argv[0], cwd, env)
    private_dir(stdout_path.parent)
    private_dir(stderr_path.parent)
    if terminal:
        return await _launch_on_terminal(
            argv, cwd=cwd, env=env, stdout_path=stdout_path, stderr_path=stderr_path,
            log_cap_bytes=log_cap_bytes, tail_lines=tail_lines, on_output=on_output,
        )
    try:
        process = await asyncio.create_subprocess_exec(
            *with_parent_death_signal(argv),
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise _launch_error(argv, exc) from exc
    tail: deque[str] = deque(maxlen=tail_lines)
    launched = Launched(
        process=process,
        pid=process.pid,
        pgid=process.pid,  # start_new_session makes the tool its group's leader
        started_at=_start_time(process.pid),
        stdout=OutputSink(stdout_path, log_cap_bytes, tail, on_output),
        stderr=OutputSink(stderr_path, log_cap_bytes, tail, on_output),
        tail=tail,
    )
    assert process.stdout is not None and process.stderr is not None
    launched.readers = [
        asyncio.create_task(_pump(process.stdout, launched.stdout)),
        asyncio.create_task(_pump(process.stderr, launched.stderr)),
    ]
    return launched


def _start_time(pid: int) -> datetime:
    """When the kernel started `pid`: with the pgid, what tells this group from a later one."""
    import psutil

    try:
        return datetime.fromtimestamp(psutil.Process(pid).create_time(), UTC)
    except psutil.Error:  # already gone and reaped: it started about now
        return datetime.now(UTC)


async def _launch_on_terminal(
    argv: list[str],
    *,
    cwd: str | None,
    env: dict[str, str],
    stdout_path: Path,
    stderr_path: Path,
    log_cap_bytes: int,
    tail_lines: int,
    on_output: Callable[[bytes], None] | None,
) -> Launched:
    controller, tool_side = os.openpty()
    rows, columns = TERMINAL_SIZE
    fcntl.ioctl(tool_side, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    # setsid(1) starts the session itself (it does not fork: its parent's group is not its own).
    command = with_parent_death_signal(argv)
    if SETSID:
        command = [SETSID, "--ctty", *command]
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=cwd,
            env={"TERM": "dumb", **env},
            stdin=tool_side,
            stdout=tool_side,
            stderr=tool_side,
            start_new_session=SETSID is None,
        )
    except OSError as exc:
        os.close(controller)
        raise _launch_error(argv, exc) from exc
    finally:
        os.close(tool_side)  # the tool holds it now; EOF comes when the tool's side is gone
    os.set_blocking(controller, False)
    terminal = Terminal(controller)
    tail: deque[str] = deque(maxlen=tail_lines)
    launched = Launched(
        process=process,
        pid=process.pid,
        pgid=process.pid,  # the session leader leads its group too
        started_at=_start_time(process.pid),
        stdout=OutputSink(stdout_path, log_cap_bytes, tail, on_output),
        stderr=OutputSink(stderr_path, log_cap_bytes, tail),
        tail=tail,
        terminal=terminal,
    )
    launched.stderr.close()  # the terminal is one stream: stderr's log stays empty
    launched.readers = [asyncio.create_task(_pump_terminal(terminal, launched.stdout, process))]
    return launched


def _launch_error(argv: list[str], exc: OSError) -> LaunchError:
    if isinstance(exc, FileNotFoundError):
        return LaunchError(f"{argv[0]}: {exc.strerror or 'not found'}", EXIT_NOT_FOUND)
    if isinstance(exc, PermissionError):
        return LaunchError(f"{argv[0]}: {exc.strerror or 'permission denied'}", EXIT_NOT_EXECUTABLE)
    code = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_NOT_EXECUTABLE
    return LaunchError(f"{argv[0]}: {exc.strerror or exc}", code)


async def _pump_terminal(
    terminal: Terminal, sink: OutputSink, process: asyncio.subprocess.Process
) -> None:
    """Copy the terminal's output to `sink` until the tool's side is closed (EIO on Linux).

    The terminal is closed only once the tool has exited: closing it hangs it up, and `rm -i`
    closes its stdin, stdout and stderr just before exiting, so closing at EOF would kill it
    with SIGHUP on its way out.
    """
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(terminal.fd, readable.set)
    try:
        while True:
            await readable.wait()
            readable.clear()
            try:
                chunk = os.read(terminal.fd, READ_CHUNK)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:
                    break
                raise
            if not chunk:
                break
            sink.feed(chunk)
        loop.remove_reader(terminal.fd)
        await process.wait()
    finally:
        loop.remove_reader(terminal.fd)
        terminal.close()
        sink.close()


async def _pump(stream: asyncio.StreamReader, sink: OutputSink) -> None:
    try:
        while chunk := await stream.read(READ_CHUNK):
            sink.feed(chunk)
    finally:
        sink.close()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _group_has_live_member(pgid)


def _group_has_live_member(pgid: int) -> bool:
    """killpg(0) also succeeds for zombies waiting to be reaped; those are already dead."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency
        return True
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _until_group_gone(launched: Launched, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if launched.process.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(launched.process.wait()), 0.05)
        if launched.process.returncode is not None and not group_alive(launched.pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)


async def kill_group(launched: Launched, grace: float) -> None:
    """SIGTERM the whole group, SIGKILL after `grace`; return when no member survives."""
    _signal_group(launched.pgid, signal.SIGTERM)
    if not await _until_group_gone(launched, grace):
        _signal_group(launched.pgid, signal.SIGKILL)
        await _until_group_gone(launched, 10.0)


def kill_stale_group(pgid: int) -> None:
    """Kill a group left by a previous attempt on this host (its worker died)."""
    if group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)


@dataclass
class Ending:
    outcome: AttemptOutcome
    exit_code: int | None = None
    signal: str | None = None
    error: str | None = None


def classify(returncode: int) -> Ending:
    if returncode == 0:
        return Ending(AttemptOutcome.SUCCEEDED, exit_code=0)
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return Ending(AttemptOutcome.KILLED, exit_code=128 - returncode, signal=name)
    return Ending(AttemptOutcome.FAILED, exit_code=returncode)


class GroupCpu:
    """CPU time used by a process group, sampled: a busy tool that prints nothing is alive."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.active_at = time.monotonic()
        self._used: dict[tuple[int, float], float] = {}  # (pid, create time) -> CPU seconds
        self._grew: deque[tuple[float, float]] = deque()  # (when, CPU seconds) within the window

    def sample(self) -> float:
        """Take a sample; return when the group was last seen using CPU (monotonic)."""
        import psutil

        used: dict[tuple[int, float], float] = {}
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) != self.pgid:
                    continue
                with proc.oneshot():
                    times = proc.cpu_times()
                    member = (proc.pid, proc.create_time())
            except (OSError, psutil.Error):
                continue
            # Children's times count what members reaped: make's finished compiler runs.
            used[member] = times.user + times.system + times.children_user + times.children_system
        grown = sum(total - self._used.get(member, 0.0) for member, total in used.items())
        self._used = used
        now = time.monotonic()
        if grown > 0:
            self._grew.append((now, grown))
        while self._grew and self._grew[0][0] < now - CPU_WINDOW_SECONDS:
            self._grew.popleft()
        if self._grew and sum(seconds for _, seconds in self._grew) >= CPU_PROGRESS_SECONDS:
            self.active_at = max(self.active_at, self._grew[-1][0])  # when it last grew
        return self.active_at


def _silence(liveness: Collection[Liveness]) -> str:
    names = [sign.value for sign in Liveness if sign in liveness]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


async def supervise(
    launched: Launched,
    *,
    timeout: float | None,
    hang_timeout: float | None,
    kill_grace: float,
    tick: float,
    last_tool_heartbeat: Callable[[], float],
    waiting_for_person: Callable[[], bool],
    on_tick: Callable[[], None],
    liveness: Collection[Liveness] = DEFAULT_LIVENESS,
) -> Ending:
    """Wait for the tool to end; kill its group when it hangs or exceeds `timeout`.

    Liveness is the latest of: start, and each sign in `liveness` (any output, any tool
    heartbeat, CPU used by the group). While the tool waits for a person it is never hung, and
    its silence clock restarts when the wait ends.
    """
    started = time.monotonic()
    waited_until = started
    cpu = GroupCpu(launched.pgid) if Liveness.CPU in liveness and hang_timeout else None

    def last_sign_of_life() -> float:
        signs = [started, waited_until]
        if Liveness.OUTPUT in liveness:
            signs.append(launched.last_output)
        if Liveness.HEARTBEAT in liveness:
            signs.append(last_tool_heartbeat())
        if cpu is not None:
            signs.append(cpu.active_at)
        return max(signs)

    wait_task = asyncio.ensure_future(launched.process.wait())
    try:
        while True:
            now = time.monotonic()
            if waiting_for_person():
                waited_until = now
            alive_at = last_sign_of_life()
            sleep_for = tick
            if timeout is not None:
                sleep_for = min(sleep_for, started + timeout - now)
            if hang_timeout is not None:
                sleep_for = min(sleep_for, alive_at + hang_timeout - now)
            done, _ = await asyncio.wait({wait_task}, timeout=max(sleep_for, 0.01))
            if done:
                break
            on_tick()
            now = time.monotonic()
            if timeout is not None and now - started >= timeout:
                await kill_group(launched, kill_grace)
                return Ending(AttemptOutcome.TIMED_OUT, error=f"timed out after {timeout:g}s")
            if cpu is not None:
                await asyncio.to_thread(cpu.sample)  # reads /proc: off the event loop
            alive_at = last_sign_of_life()
            if (
                hang_timeout is not None
                and not waiting_for_person()
                and now - alive_at >= hang_timeout
            ):
                await kill_group(launched, kill_grace)
                return Ending(
                    AttemptOutcome.HUNG,
                    error=f"no {_silence(liveness)} for {hang_timeout:g}s",
                )
    except asyncio.CancelledError:
        await asyncio.shield(kill_group(launched, kill_grace))
        raise
    finally:
        if not wait_task.done():
            wait_task.cancel()
    returncode = launched.process.returncode
    assert returncode is not None
    # The leader is gone; nothing it spawned may outlive the run.
    if group_alive(launched.pgid):
        await kill_group(launched, kill_grace)
    return classify(returncode)


async def drain_output(launched: Launched, timeout: float = 5.0) -> None:
    """Let the readers reach EOF (the group is dead, so the pipes close)."""
    done, pending = await asyncio.wait(launched.readers, timeout=timeout)
    for task in pending:
        task.cancel()
    for task in done:
        task.result()
