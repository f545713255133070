"""What a worker leaves behind when it dies: a ledger of its live attempts, and their reaping.

`setpriv --pdeathsig KILL` kills a tool with its worker, but not what the tool spawned: after a
SIGKILL of the worker, `sh -c 'sleep 321 & sleep 322; wait'` leaves both sleeps alive with
parent 1. So each worker keeps, under its home, one small file listing every process group it
supervises now (`AttemptLedger`). A worker starting on the same host, and every relaunch of an
attempt, kills the groups recorded by workers that are gone (`reap_orphans`).

A group is signalled only if it is still the one recorded: its leader, when alive, must have
the recorded start time; with the leader gone, every member signalled must have started no
earlier than it did. A pid is never reused while it names a live process group, so a group
whose leader died still has its original number; and a reused number has a new leader, started
later, which the start time tells apart.

Plain functions over the file system and psutil, no Temporal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import psutil
from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

# psutil derives a start time from the boot time, which it reads in whole seconds and which
# may differ by one between two processes reading it; a reused pid starts far later than this.
START_TIME_TOLERANCE = 1.0
KILL_WAIT = 5.0  # a SIGKILLed group is gone within milliseconds; this only bounds a stuck D-state
KILL_POLL = 0.01
LEDGER_SUFFIX = ".attempts.json"


class AttemptRecord(BaseModel):
    """One live attempt: the process group a worker started for it."""

    run_id: str
    attempt: int
    pgid: int
    start_time: float  # the group leader's start time, seconds since the epoch (psutil)
    host: str


class LedgerFile(BaseModel):
    """The content of one worker's ledger: who wrote it, and what it supervises now."""

    host: str
    pid: int
    start_time: float
    attempts: list[AttemptRecord]


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None if there is no such process."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def same_start(recorded: float, actual: float | None) -> bool:
    return actual is not None and abs(actual - recorded) <= START_TIME_TOLERANCE


def group_members(pgid: int) -> list[psutil.Process]:
    """The live (non-zombie) processes of group `pgid`."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


def kill_recorded_group(pgid: int, start_time: float) -> int:
    """SIGKILL what is left of the group recorded as (`pgid`, `start_time`); return how many died.

    Returns 0 without signalling anything when the group is gone or is not the recorded one.
    """
    members = group_members(pgid)
    if not members:
        return 0
    leader = next((proc for proc in members if proc.pid == pgid), None)
    if leader is not None:
        if not same_start(start_time, _start_of(leader)):
            log.warning(
                "not killing process group %d: its leader started at %s, the recorded one at %s",
                pgid, _when(_start_of(leader)), _when(start_time),
            )
            return 0
        targets = members
    else:
        targets = [
            proc for proc in members
            if (started := _start_of(proc)) is not None and started >= start_time - START_TIME_TOLERANCE
        ]
    for proc in targets:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    _until_dead(pgid, targets)
    return len(targets)


def _until_dead(pgid: int, targets: list[psutil.Process]) -> None:
    """Wait until every target is dead, zombies counting as dead.

    Not `psutil.wait_procs`: orphans are init's children, and an init that reaps slowly (a
    container's) keeps each a zombie for a second or more, which would hold up every relaunch.
    """
    deadline = time.monotonic() + KILL_WAIT
    alive = targets
    while alive:
        alive = [proc for proc in alive if _living(proc)]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(KILL_POLL)
    for proc in alive:
        log.warning("process %d of group %d survived SIGKILL for %gs", proc.pid, pgid, KILL_WAIT)


def _living(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _start_of(proc: psutil.Process) -> float | None:
    try:
        return float(proc.create_time())
    except psutil.Error:
        return None


def _when(timestamp: float | None) -> str:
    return "never" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat()


class AttemptLedger:
    """This worker's live attempts, in `DIRECTORY/HOST-PID.attempts.json`, rewritten atomically.

    Written aside and renamed over, so a reader never sees half a file. Not fsynced: the file
    only has to survive the worker's death, and the kernel keeps it through that; a host that
    loses power loses its tools with it.
    """

    def __init__(self, directory: Path, host: str) -> None:
        self.directory = directory
        self.host = host
        self.pid = os.getpid()
        self.start_time = process_start_time(self.pid) or time.time()
        self.path = directory / f"{host}-{self.pid}{LEDGER_SUFFIX}"
        self._attempts: dict[tuple[str, int], AttemptRecord] = {}

    def add(self, record: AttemptRecord) -> None:
        self._attempts[(record.run_id, record.attempt)] = record
        self._write()

    def remove(self, run_id: str, attempt: int) -> None:
        if self._attempts.pop((run_id, attempt), None) is not None:
            self._write()

    def supervised(self) -> list[AttemptRecord]:
        return list(self._attempts.values())

    def _write(self) -> None:
        if not self._attempts:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        content = LedgerFile(
            host=self.host, pid=self.pid, start_time=self.start_time, attempts=self.supervised()
        )
        partial = self.path.with_name(f".{self.path.name}.partial")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content.model_dump_json())
        os.replace(partial, self.path)

    def reap_orphans(self) -> list[AttemptRecord]:
        """Kill every group recorded on this host by a worker that is gone; return those killed.

        Ledgers of live workers (another worker sharing this home) are left alone: they
        supervise their attempts. A gone worker's ledger is deleted once its groups are dead.
        """
        killed = []
        for path, ledger in read_ledgers(self.directory):
            if ledger.host != self.host or path == self.path:
                continue
            if same_start(ledger.start_time, process_start_time(ledger.pid)):
                continue  # its worker still runs
            for record in ledger.attempts:
                if kill_recorded_group(record.pgid, record.start_time):
                    log.warning(
                        "killed process group %d left by run %s attempt %d (worker %d is gone)",
                        record.pgid, record.run_id, record.attempt, ledger.pid,
                    )
                    killed.append(record)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return killed


def read_ledgers(directory: Path) -> Iterable[tuple[Path, LedgerFile]]:
    """Every readable ledger in `directory`; an unreadable one is logged and skipped."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(f"*{LEDGER_SUFFIX}")):
        try:
            yield path, LedgerFile.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            continue  # its worker ended meanwhile
        except (OSError, ValidationError) as exc:
            log.warning("cannot read the attempt ledger %s: %s", path, str(exc).splitlines()[0])
