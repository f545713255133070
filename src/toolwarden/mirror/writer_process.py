"""The mirror writer in a child process, so SQL work never runs under the worker's GIL.

The worker's event loop is its bottleneck: every millisecond the in-process `MirrorWriter`
thread spends in SQLAlchemy and the database driver is taken from it (see
docs/benchmarks.md, "Runs"). `MirrorWriterProcess` offers the same interface (`run_changed`,
`heartbeat`, `stats`, `start`, `stop`) but only serializes each item to one JSON line and
queues it; a sender thread writes the queued lines to the child's stdin in one write, and the
child (`python -m toolwarden.mirror.writer_process`) feeds them to a `MirrorWriter` of its own,
which batches, throttles and retries exactly as it does in-process. The child reports its
`MirrorStats` on stdout a few times a second; a reader thread keeps the latest.

Nothing here blocks or fails a run: producers only append to a deque under a short lock. When
the child dies, the sender starts a new one and says in the stats what may have been lost (a
rebuild restores it); when the worker dies, the child reads end-of-file, flushes and exits.

Wire format, one line per message, the first byte says what follows (JSON of the vocabulary):
`C` the child's `WriterConfig` (the first line: the URL, which may hold a password, never
appears in a process listing), `U` a `MirrorUpdate`, `H` a `MirrorHeartbeat`, `F` the seconds
the child may take to flush before it stops (sent by `stop`, then stdin is closed); the child
answers `S` with a `MirrorStats`. End of file without `F`: the child flushes for up to 5 s.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import subprocess
import sys
import threading
import time
from datetime import timedelta
from typing import IO

from pydantic import BaseModel

from toolwarden.config import MirrorSettings
from toolwarden.mirror.engine import redact
from toolwarden.mirror.writer import MirrorStats, MirrorWriter
from toolwarden.models import LiveDetails, MirrorUpdate

log = logging.getLogger(__name__)

CONFIG, UPDATE, HEARTBEAT, FLUSH, STATS = b"C", b"U", b"H", b"F", b"S"
# How often the child reports its stats; `/readyz` and `db status` read at most this stale.
STATS_INTERVAL_SECONDS = 0.25
# Lines written to the child in one `write`: one syscall and one GIL hand-off for a burst.
MAX_LINES_PER_WRITE = 1000
RESTART_BACKOFF_SECONDS = (0.2, 1.0, 5.0)


class WriterConfig(BaseModel):
    """What the child needs to build its `MirrorWriter` (sent on stdin, never in argv)."""

    url: str
    # MirrorSettings' durations are read as "5s" but dumped as ISO 8601: plain seconds here.
    heartbeat_write_seconds: float
    max_backlog: int
    upgrade_schema: bool = True
    retry_initial: float = 0.2
    retry_max: float = 10.0
    busy_timeout_ms: int = 2000
    log_level: int = logging.WARNING


class MirrorHeartbeat(BaseModel):
    run_id: str
    live: LiveDetails


class MirrorWriterProcess:
    """A `MirrorWriter` in a child process: the worker pays one JSON dump per item."""

    def __init__(
        self,
        url: str,
        settings: MirrorSettings,
        *,
        upgrade_schema: bool = True,
        retry_initial: float = 0.2,
        retry_max: float = 10.0,
        busy_timeout_ms: int = 2000,
    ) -> None:
        self.url = url
        self.settings = settings
        self._config = WriterConfig(
            url=url,
            heartbeat_write_seconds=settings.heartbeat_write_interval.total_seconds(),
            max_backlog=settings.max_backlog,
            upgrade_schema=upgrade_schema,
            retry_initial=retry_initial,
            retry_max=retry_max,
            busy_timeout_ms=busy_timeout_ms,
            log_level=logging.getLogger("toolwarden").getEffectiveLevel(),
        )
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._lines: collections.deque[bytes] = collections.deque()
        self._stopping = False
        self._stop_timeout = 5.0
        self._sender: threading.Thread | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._child_stats: MirrorStats | None = None
        self._shed = 0  # heartbeats not even sent: the queue to the child was full
        self._restarts = 0
        self._note: str | None = None  # why the child is not there, or what a restart lost
        self._queued_since: float | None = None

    # -- the sink interface (the worker's event loop) ----------------------------------------

    def run_changed(self, update: MirrorUpdate) -> None:
        """Queue a run snapshot and its new events; never blocks, never raises."""
        try:
            self._put(UPDATE + update.model_dump_json().encode() + b"\n", droppable=False)
        except Exception:  # the mirror never fails a run
            log.exception("mirror: could not queue an update")

    submit = run_changed  # the name the activities used before the RunSink protocol

    def heartbeat(self, run_id: str, live: LiveDetails) -> None:
        """Queue a heartbeat; the child throttles it per run (last value wins)."""
        try:
            line = MirrorHeartbeat(run_id=run_id, live=live).model_dump_json().encode()
            self._put(HEARTBEAT + line + b"\n", droppable=True)
        except Exception:
            log.exception("mirror: could not queue a heartbeat")

    def stats(self) -> MirrorStats:
        with self._lock:
            queued, since, child, note = len(self._lines), self._queued_since, self._child_stats, self._note
        lag = None if since is None else max(time.monotonic() - since, 0.0)
        if child is None:
            return MirrorStats(
                connected=False,
                backlog=queued,
                lag_seconds=lag,
                written_total=0,
                last_error=note or "mirror writer process starting",
                last_write_at=None,
            )
        if child.lag_seconds is not None:
            lag = child.lag_seconds if lag is None else max(lag, child.lag_seconds)
        backlog, error = child.backlog + queued, child.last_error or note
        return child.model_copy(update={"backlog": backlog, "lag_seconds": lag, "last_error": error})

    @property
    def child_pid(self) -> int | None:
        """The writer process's pid, while there is one (for the bench's CPU accounting)."""
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._sender is not None:
                return
            self._stopping = False
            self._sender = threading.Thread(
                target=self._send_loop, name="toolwarden-mirror-send", daemon=True
            )
            self._sender.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Hand the child what is queued and let it flush for up to `timeout` seconds."""
        with self._lock:
            sender = self._sender
            self._stopping = True
            self._stop_timeout = timeout
            self._wake.notify_all()
        if sender is not None:
            sender.join(timeout + 3.0)
        with self._lock:
            self._sender = None
            child = self._child
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()

    # -- internals ---------------------------------------------------------------------------

    def _put(self, line: bytes, *, droppable: bool) -> None:
        with self._lock:
            if droppable and len(self._lines) >= self.settings.max_backlog:
                self._shed += 1
                self._note = f"{self._shed} heartbeats shed: the writer process does not keep up"
                return
            if not self._lines:
                self._queued_since = time.monotonic()
            self._lines.append(line)
            if len(self._lines) == 1:
                self._wake.notify()

    def _spawn(self) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            [sys.executable, "-m", "toolwarden.mirror.writer_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the child's warnings go to the worker's log
            close_fds=True,
        )
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(CONFIG + self._config.model_dump_json().encode() + b"\n")
        child.stdin.flush()
        threading.Thread(
            target=self._read_stats, args=(child, child.stdout), name="toolwarden-mirror-stats", daemon=True
        ).start()
        return child

    def _read_stats(self, child: subprocess.Popen[bytes], stdout: IO[bytes]) -> None:
        for line in stdout:
            if not line.startswith(STATS):
                continue
            try:
                stats = MirrorStats.model_validate_json(line[1:])
            except ValueError:
                log.debug("mirror: unreadable stats line from the writer process", exc_info=True)
                continue
            with self._lock:
                if self._child is child:
                    self._child_stats = stats

    def _take(self) -> list[bytes] | None:
        """The next lines to send, waiting for some; None once stopping and all are taken."""
        with self._lock:
            while not self._lines and not self._stopping:
                self._wake.wait()
            if not self._lines:
                return None
            count = min(len(self._lines), MAX_LINES_PER_WRITE)
            lines = [self._lines.popleft() for _ in range(count)]
            self._queued_since = time.monotonic() if self._lines else None
            return lines

    def _send_loop(self) -> None:
        failures = 0
        pending: list[bytes] | None = None
        while True:
            child = self._child
            with self._lock:
                idle_stop = self._stopping and not self._lines and pending is None
            if idle_stop and (child is None or child.poll() is not None):
                return  # nothing to hand over and no child to flush
            if child is None or child.poll() is not None:
                if child is not None:
                    failures += 1
                    self._child_exited(child)
                    if self._stopping:
                        return
                    time.sleep(RESTART_BACKOFF_SECONDS[min(failures, len(RESTART_BACKOFF_SECONDS)) - 1])
                try:
                    child = self._spawn()
                except (OSError, ValueError) as exc:
                    with self._lock:
                        self._note = f"mirror writer process not started: {exc}"[:500]
                    log.warning("mirror: writer process not started (%s); retrying", exc)
                    if self._stopping:
                        return
                    time.sleep(RESTART_BACKOFF_SECONDS[-1])
                    continue
                with self._lock:
                    self._child, self._child_stats = child, None
            if pending is None:
                pending = self._take()
            if pending is None:  # stopping, everything handed over: let the child flush
                self._close(child)
                return
            assert child.stdin is not None
            try:
                child.stdin.write(b"".join(pending))
                child.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                continue  # the child died: restart it and send these lines again
            pending = None
            failures = 0

    def _child_exited(self, child: subprocess.Popen[bytes]) -> None:
        code = child.wait()
        with self._lock:
            if self._stopping:
                return
            self._restarts += 1
            self._note = (
                f"mirror writer process exited with code {code} and was restarted "
                f"({self._restarts}x); what it held may be missing: `toolwarden db rebuild` restores it"
            )
            self._child, self._child_stats = None, None
        log.warning("mirror: writer process for %s exited with code %s; restarting", redact(self.url), code)

    def _close(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stdin is not None
        with contextlib.suppress(OSError, ValueError):
            child.stdin.write(FLUSH + str(self._stop_timeout).encode() + b"\n")
            child.stdin.flush()
        with contextlib.suppress(OSError, ValueError):
            child.stdin.close()
        try:
            child.wait(self._stop_timeout + 2.0)
        except subprocess.TimeoutExpired:
            log.warning("mirror: writer process did not stop in time; killed")
            child.kill()
            child.wait()


# -- the child ---------------------------------------------------------------------------------


def _report(writer: MirrorWriter, out: IO[bytes], stop: threading.Event) -> None:
    last = b""
    while True:
        line = STATS + writer.stats().model_dump_json().encode() + b"\n"
        if line != last:
            try:
                out.write(line)
                out.flush()
            except (OSError, ValueError):
                return
            last = line
        if stop.wait(STATS_INTERVAL_SECONDS):
            return


def child_main(stdin: IO[bytes], stdout: IO[bytes]) -> int:
    first = stdin.readline()
    if not first.startswith(CONFIG):
        print("toolwarden mirror writer: the first line must be its configuration", file=sys.stderr)
        return 2
    config = WriterConfig.model_validate_json(first[1:])
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = MirrorSettings(
        url=config.url,
        heartbeat_write_interval=timedelta(seconds=config.heartbeat_write_seconds),
        max_backlog=config.max_backlog,
    )
    writer = MirrorWriter(
        config.url,
        settings,
        upgrade_schema=config.upgrade_schema,
        retry_initial=config.retry_initial,
        retry_max=config.retry_max,
        busy_timeout_ms=config.busy_timeout_ms,
    )
    writer.start()
    flush_seconds = 5.0
    stop = threading.Event()
    reporter = threading.Thread(target=_report, args=(writer, stdout, stop), daemon=True)
    reporter.start()
    for line in stdin:  # end of file: the worker stopped or died
        try:
            if line.startswith(UPDATE):
                writer.submit(MirrorUpdate.model_validate_json(line[1:]))
            elif line.startswith(HEARTBEAT):
                beat = MirrorHeartbeat.model_validate_json(line[1:])
                writer.heartbeat(beat.run_id, beat.live)
            elif line.startswith(FLUSH):
                flush_seconds = float(line[1:])
        except ValueError:
            log.warning("mirror: unreadable line from the worker skipped: %.200r", line)
    writer.stop(timeout=flush_seconds)
    stop.set()
    reporter.join()
    with contextlib.suppress(OSError, ValueError):
        stdout.write(STATS + writer.stats().model_dump_json().encode() + b"\n")
        stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.stdin.buffer, sys.stdout.buffer))
