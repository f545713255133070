"""Reading a run's log files (`<logs_dir>/<run_id>/attempt-N.stdout.log`): TUI and HTTP API.

The files exist only on the host of the worker that ran the attempt; elsewhere a face falls
back to the tail the tool reported by heartbeat, or says which host holds them.
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

LOG_NAME = re.compile(r"^attempt-(\d+)(?:\.(\d+))?\.(stdout|stderr)\.log$")
TAIL_BYTES = 64 * 1024


def log_files(directory: Path) -> list[tuple[tuple[int, int], str, Path]]:
    """(order, stream, path) of every attempt's log file, oldest attempt first."""
    found = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    for path in entries:
        match = LOG_NAME.match(path.name)
        if match:
            order = (int(match.group(1)), int(match.group(2) or 1))
            found.append((order, match.group(3), path))
    return sorted(found)


def tail_lines(directory: Path, count: int) -> list[str] | None:
    """The last `count` lines of the latest attempt (stderr lines marked), or None if no file."""
    files = log_files(directory)
    if not files:
        return None
    latest = files[-1][0]
    lines: deque[str] = deque(maxlen=count)
    for order, stream, path in files:
        if order != latest:
            continue
        try:
            with path.open("rb") as handle:
                handle.seek(0, 2)
                size = handle.tell()
                handle.seek(max(size - TAIL_BYTES, 0))
                data = handle.read()
        except OSError:
            continue
        prefix = "! " if stream == "stderr" else ""
        for line in data.decode("utf-8", "replace").splitlines()[-count:]:
            lines.append(prefix + line)
    return list(lines)


class LogReader:
    """Follows every log file of a run, returning new complete lines on each `read()`."""

    def __init__(self, directory: Path, max_initial_bytes: int = 4 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_initial_bytes = max_initial_bytes
        self.offsets: dict[Path, int] = {}
        self.partial: dict[Path, bytes] = {}

    def exists(self) -> bool:
        return bool(log_files(self.directory))

    def read(self) -> list[str]:
        out: list[str] = []
        for order, stream, path in log_files(self.directory):
            if path not in self.offsets:
                out.append(f"── attempt {order[0]} {stream} ──")
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                start = max(size - self.max_initial_bytes, 0)
                self.offsets[path] = start
                if start:
                    out.append(f"… ({start} earlier bytes not shown)")
            try:
                with path.open("rb") as handle:
                    handle.seek(self.offsets[path])
                    data = handle.read()
            except OSError:
                continue
            if not data:
                continue
            self.offsets[path] += len(data)
            data = self.partial.pop(path, b"") + data
            *complete, rest = data.split(b"\n")
            if rest:
                self.partial[path] = rest
            prefix = "! " if stream == "stderr" else ""
            out.extend(prefix + line.decode("utf-8", "replace") for line in complete)
        return out
