"""Reading a run's log files, `<logs_dir>/<run_id>/attempt-N[.L].(stdout|stderr).log`.

N is the attempt, L the launch of that attempt when its worker was lost and it was relaunched.
The files exist only on the worker's host; elsewhere the faces fall back to the tail the tool
reported by heartbeat. Standard library only, for `toolwarden logs` and the TUI alike.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

LOG_NAME = re.compile(r"^attempt-(\d+)(?:\.(\d+))?\.(stdout|stderr)\.log$")
STREAMS = ("stdout", "stderr")
TAIL_BYTES = 64 * 1024


@dataclass(frozen=True, order=True)
class LogFile:
    """One stream of one launch of one attempt; ordered oldest first."""

    attempt: int
    launch: int
    stream: str
    path: Path


def log_files(directory: Path, streams: tuple[str, ...] = STREAMS) -> list[LogFile]:
    """Every log file of a run in `directory`, oldest attempt first; none if it does not exist."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    found = []
    for path in entries:
        match = LOG_NAME.match(path.name)
        if match and match.group(3) in streams:
            found.append(
                LogFile(int(match.group(1)), int(match.group(2) or 1), match.group(3), path)
            )
    return sorted(found)


def tail_lines(directory: Path, count: int) -> list[str] | None:
    """The last `count` lines of the latest launch (stderr lines marked), or None if no file."""
    files = log_files(directory)
    if not files:
        return None
    latest = (files[-1].attempt, files[-1].launch)
    lines: deque[str] = deque(maxlen=count)
    for log in files:
        if (log.attempt, log.launch) != latest:
            continue
        try:
            with log.path.open("rb") as handle:
                handle.seek(0, 2)
                handle.seek(max(handle.tell() - TAIL_BYTES, 0))
                data = handle.read()
        except OSError:
            continue
        prefix = "! " if log.stream == "stderr" else ""
        for line in data.decode("utf-8", "replace").splitlines()[-count:]:
            lines.append(prefix + line)
    return list(lines)


@dataclass(frozen=True)
class Growth:
    """What one log file grew by since the last read; `new_file` on its first sighting, with
    `skipped` bytes left unread at its start (beyond `max_initial_bytes`)."""

    log: LogFile
    data: bytes
    new_file: bool = False
    skipped: int = 0


class LogFollower:
    """Follows every log file of a run (all attempts, in order) as the files grow."""

    def __init__(
        self,
        directory: Path,
        streams: tuple[str, ...] = STREAMS,
        *,
        max_initial_bytes: int | None = None,
    ) -> None:
        self.directory = directory
        self.streams = streams
        self.max_initial_bytes = max_initial_bytes
        self.offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}

    def files(self) -> list[LogFile]:
        return log_files(self.directory, self.streams)

    def read(self) -> list[Growth]:
        grown: list[Growth] = []
        for log in self.files():
            new_file = log.path not in self.offsets
            skipped = 0
            if new_file:
                try:
                    size = log.path.stat().st_size
                except OSError:
                    continue
                if self.max_initial_bytes is not None:
                    skipped = max(size - self.max_initial_bytes, 0)
                self.offsets[log.path] = skipped
            try:
                with log.path.open("rb") as handle:
                    handle.seek(self.offsets[log.path])
                    data = handle.read()
            except OSError:
                data = b""
            self.offsets[log.path] += len(data)
            if data or new_file:
                grown.append(Growth(log, data, new_file, skipped))
        return grown

    def read_lines(self) -> list[str]:
        """New complete lines, a header before each file's first, stderr lines marked `! `."""
        out: list[str] = []
        for growth in self.read():
            log = growth.log
            if growth.new_file:
                out.append(f"── attempt {log.attempt} {log.stream} ──")
                if growth.skipped:
                    out.append(f"… ({growth.skipped} earlier bytes not shown)")
            if not growth.data:
                continue
            *complete, rest = (self._partial.pop(log.path, b"") + growth.data).split(b"\n")
            if rest:
                self._partial[log.path] = rest
            prefix = "! " if log.stream == "stderr" else ""
            out.extend(prefix + line.decode("utf-8", "replace") for line in complete)
        return out
