"""Orphans: what a killed worker's tools leave behind is killed by the next worker on the host.

The end-to-end tests run `toolwarden worker` as a real process and SIGKILL it, as a crash would;
the scenario is the issue's: `sh -c 'sleep 321 & sleep 322; wait'`, whose sleeps outlive `sh`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.support import eventually
from tests.worker_process import WorkerProcess, group_members, kill_groups
from toolwarden.client import Supervisor
from toolwarden.config import Settings
from toolwarden.models import RunState
from toolwarden.orphans import (
    AttemptLedger,
    AttemptRecord,
    LedgerFile,
    kill_recorded_group,
    process_start_time,
    read_ledgers,
)

ORPHAN_MAKER = ["sh", "-c", "sleep 321 & sleep 322; wait"]


@pytest.fixture
def groups() -> Iterator[list[int]]:
    """Process groups a test started; whatever is left of them is killed at the end."""
    started: list[int] = []
    yield started
    kill_groups(started)


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
def spawn_group(groups: list[int]) -> Iterator[Callable[[list[str]], subprocess.Popen[bytes]]]:
    """Start argv as the leader of a new process group; killed and waited for at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL)
        started.append(process)
        groups.append(process.pid)
        return process

    yield spawn
    kill_groups(groups)
    for process in started:
        process.wait(timeout=10)


# -- the ledger and the kill, with real processes -----------------------------------------------


def test_the_ledger_is_rewritten_atomically_private_and_removed_when_empty(tmp_path: Path) -> None:
    ledger = AttemptLedger(tmp_path / "attempts", "host-a")
    record = AttemptRecord(run_id="r1", attempt=1, pgid=4242, start_time=1.5, host="host-a")
    ledger.add(record)
    assert oct(ledger.path.stat().st_mode & 0o777) == "0o600"
    assert oct(ledger.directory.stat().st_mode & 0o777) == "0o700"
    written = LedgerFile.model_validate_json(ledger.path.read_text())
    assert written.pid == os.getpid() and written.attempts == [record]
    assert [p.name for p in ledger.directory.iterdir()] == [ledger.path.name]  # nothing partial
    ledger.remove("r1", 1)
    assert not ledger.path.exists()


def test_a_group_whose_leader_started_at_another_time_is_never_signalled(
    spawn_group: Callable[[list[str]], subprocess.Popen[bytes]],
) -> None:
    process = spawn_group(["sleep", "60"])
    started = process_start_time(process.pid)
    assert started is not None
    # A reused pgid: same number, a leader started later than the recorded one.
    assert kill_recorded_group(process.pid, started - 30) == 0
    assert process.poll() is None
    assert kill_recorded_group(process.pid, started) == 1
    assert group_members(process.pid) == []


def test_a_group_whose_leader_died_is_killed_member_by_member(
    spawn_group: Callable[[list[str]], subprocess.Popen[bytes]],
) -> None:
    leader = spawn_group(["sh", "-c", "sleep 61 & sleep 62 & exit 0"])
    started = process_start_time(leader.pid)
    assert started is not None
    leader.wait(timeout=10)
    assert len(group_members(leader.pid)) == 2  # the two sleeps, orphaned
    assert kill_recorded_group(leader.pid, started) == 2
    assert group_members(leader.pid) == []


def test_only_ledgers_of_gone_workers_on_this_host_are_reaped(
    tmp_path: Path, spawn_group: Callable[[list[str]], subprocess.Popen[bytes]]
) -> None:
    directory = tmp_path / "attempts"
    directory.mkdir()
    live_worker = spawn_group(["sleep", "60"])
    dead_worker = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_worker.wait(timeout=10)
    tools = {name: spawn_group(["sleep", "60"]) for name in ("of-dead", "of-live", "elsewhere")}

    def write(name: str, host: str, pid: int, start: float, tool: subprocess.Popen[bytes]) -> None:
        started = process_start_time(tool.pid)
        assert started is not None
        record = AttemptRecord(run_id=name, attempt=1, pgid=tool.pid, start_time=started, host=host)
        ledger = LedgerFile(host=host, pid=pid, start_time=start, attempts=[record])
        (directory / f"{name}.attempts.json").write_text(ledger.model_dump_json())

    live_start = process_start_time(live_worker.pid)
    assert live_start is not None
    write("of-dead", "here", dead_worker.pid, 1.0, tools["of-dead"])
    write("of-live", "here", live_worker.pid, live_start, tools["of-live"])
    write("elsewhere", "there", dead_worker.pid, 1.0, tools["elsewhere"])
    (directory / "garbage.attempts.json").write_text("{not json")

    reaped = AttemptLedger(directory, "here").reap_orphans()

    assert [r.run_id for r in reaped] == ["of-dead"]
    assert group_members(tools["of-dead"].pid) == []
    assert tools["of-live"].poll() is None and tools["elsewhere"].poll() is None
    left = sorted(path.name for path, _ in read_ledgers(directory))
    assert left == ["elsewhere.attempts.json", "of-live.attempts.json"]


# -- end to end: a real worker process, SIGKILLed -------------------------------------------------


@pytest.fixture
def crash_settings(tmp_path: Path, temporal_address: str) -> Settings:
    # A short heartbeat timeout: the server gives up on the killed worker's attempt quickly.
    return make_settings(
        tmp_path / "home", temporal_address, worker={"heartbeat_timeout": timedelta(seconds=3)}
    )


async def start_orphan_maker(supervisor: Supervisor, settings: Settings, run_id: str) -> int:
    """Start the issue's run and return its process group once both sleeps run."""
    spec = settings.run_spec(run_id=run_id, argv=ORPHAN_MAKER)
    handle = await supervisor.start_run(spec)

    async def pgid() -> int | None:
        live = (await handle.status()).live
        if live is None or live.pgid is None:
            return None
        return live.pgid if len(group_members(live.pgid)) == 3 else None  # sh and two sleeps

    return await eventually(pgid, timeout=60, what="the tool and its two sleeps running")


async def relaunched_group(supervisor: Supervisor, run_id: str, old: int) -> int:
    async def pgid() -> int | None:
        live = (await supervisor.get_run(run_id).status()).live
        ok = live is not None and live.pgid not in (None, old) and live.attempt == 1
        return live.pgid if ok and live is not None and group_members(live.pgid or 0) else None

    return await eventually(pgid, timeout=60, what="the attempt relaunched")


async def test_a_new_worker_kills_what_the_killed_one_left_and_cancel_leaves_nothing(
    client, crash_settings: Settings, run_id, tmp_path: Path,
    workers: list[WorkerProcess], groups: list[int],
) -> None:
    supervisor = Supervisor(client, crash_settings)
    first = WorkerProcess(crash_settings, tmp_path / "worker-1.log")
    workers.append(first)
    rid = run_id("orphans")
    old = await start_orphan_maker(supervisor, crash_settings, rid)
    groups.append(old)

    first.kill()
    # The finding: parent-death kills `sh` only; both sleeps live on.
    await eventually(lambda: len(group_members(old)) == 2, timeout=10, what="sh gone, sleeps left")

    second = WorkerProcess(crash_settings, tmp_path / "worker-2.log")
    workers.append(second)
    await eventually(lambda: group_members(old) == [], timeout=60, what="the orphans killed")
    await eventually(lambda: f"killed process group {old} left by run {rid}" in second.output())
    new = await relaunched_group(supervisor, rid, old)
    groups.append(new)

    await supervisor.get_run(rid).cancel()
    result = await supervisor.get_run(rid).result()
    assert result.state is RunState.CANCELLED
    assert group_members(new) == [] and group_members(old) == []
    assert not list(crash_settings.attempts_dir.glob("*.attempts.json"))  # nothing left to reap


async def test_a_relaunch_on_a_worker_with_another_home_reaps_from_the_heartbeat_details(
    client, crash_settings: Settings, run_id, tmp_path: Path,
    workers: list[WorkerProcess], groups: list[int],
) -> None:
    supervisor = Supervisor(client, crash_settings)
    first = WorkerProcess(crash_settings, tmp_path / "worker-1.log")
    workers.append(first)
    rid = run_id("details")
    old = await start_orphan_maker(supervisor, crash_settings, rid)
    groups.append(old)
    first.kill()

    # Another home: the first worker's ledger is out of sight, the heartbeat details are not.
    other = crash_settings.model_copy(update={"home": tmp_path / "other-home"})
    second = WorkerProcess(other, tmp_path / "worker-2.log")
    workers.append(second)
    new = await relaunched_group(supervisor, rid, old)
    groups.append(new)
    await eventually(lambda: group_members(old) == [], timeout=30, what="the orphans killed")
    await eventually(lambda: f"run {rid}: killed process group {old} left by attempt 1" in second.output())

    await supervisor.get_run(rid).cancel()
    assert (await supervisor.get_run(rid).result()).state is RunState.CANCELLED
    assert group_members(new) == []


async def test_a_run_cancelled_while_its_host_was_down_leaves_nothing_when_the_host_returns(
    client, crash_settings: Settings, run_id, tmp_path: Path,
    workers: list[WorkerProcess], groups: list[int],
) -> None:
    supervisor = Supervisor(client, crash_settings)
    first = WorkerProcess(crash_settings, tmp_path / "worker-1.log")
    workers.append(first)
    rid = run_id("down")
    old = await start_orphan_maker(supervisor, crash_settings, rid)
    groups.append(old)
    first.kill()
    await supervisor.get_run(rid).cancel()  # no worker runs: only recorded for now

    ledgers = [json.loads(p.read_text()) for p in crash_settings.attempts_dir.glob("*.json")]
    assert [a["pgid"] for ledger in ledgers for a in ledger["attempts"]] == [old]

    back = WorkerProcess(crash_settings, tmp_path / "worker-2.log")  # the host comes back
    workers.append(back)
    await eventually(lambda: group_members(old) == [], timeout=30, what="the orphans killed")
    assert (await supervisor.get_run(rid).result()).state is RunState.CANCELLED
