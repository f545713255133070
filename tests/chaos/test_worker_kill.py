"""Chaos: two workers, 100 runs of a tool with grandchildren, one worker SIGKILLed mid-run.

All 100 runs finish, and once the killed worker is back not one process of its attempts
remains: neither the leaders (parent-death signal) nor the grandchildren (reaped from the
worker's attempt ledger). Both workers are real `toolwarden worker` processes with their own
homes, on one task queue, as two hosts would be.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from temporalio.client import Client

from tests.conftest import make_settings
from tests.support import eventually
from tests.worker_process import WorkerProcess, kill_groups
from toolwarden.client import Supervisor
from toolwarden.models import RunState
from toolwarden.orphans import START_TIME_TOLERANCE, AttemptRecord, read_ledgers
from toolwarden.protocol import ENV_RUN_ID

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

RUNS = 100
# sh, and two children that outlive it; long enough to be running on a loaded machine when all
# 100 have started.
TOOL = ["sh", "-c", "sleep 44 & sleep 45; wait"]


def ledger_records(home: Path) -> list[AttemptRecord]:
    return [record for _, ledger in read_ledgers(home / "attempts") for record in ledger.attempts]


def processes_of(records: list[AttemptRecord]) -> list[int]:
    """Live processes still in a recorded group (members started after its leader, not reuse)."""
    by_group = {record.pgid: record.start_time for record in records}
    found = []
    for proc in psutil.process_iter(["status", "create_time"]):
        try:
            pgid = psutil.os.getpgid(proc.pid)
        except OSError:
            continue
        started = by_group.get(pgid)
        if (
            started is not None
            and proc.info["status"] != psutil.STATUS_ZOMBIE
            and proc.info["create_time"] >= started - START_TIME_TOLERANCE
        ):
            found.append(proc.pid)
    return found


def processes_of_runs(run_ids: set[str]) -> list[int]:
    """Every live process whose environment names one of these runs (tools and their children)."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(ENV_RUN_ID) in run_ids:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


async def test_all_runs_finish_and_nothing_of_the_killed_workers_attempts_remains(
    client: Client, temporal_address: str, tmp_path: Path
) -> None:
    worker_sections = {
        "heartbeat_interval": timedelta(seconds=1),
        "heartbeat_timeout": timedelta(seconds=10),  # a loaded 2-core machine: no false losses
        "shutdown_grace": timedelta(seconds=20),
    }
    settings_a = make_settings(tmp_path / "host-a", temporal_address, worker=worker_sections)
    settings_b = settings_a.model_copy(update={"home": tmp_path / "host-b"})
    workers = [
        WorkerProcess(settings_a, tmp_path / "worker-a.log"),
        WorkerProcess(settings_b, tmp_path / "worker-b.log"),
    ]
    recorded: list[AttemptRecord] = []
    try:
        supervisor = Supervisor(client, settings_a)
        began = time.monotonic()
        stem = uuid.uuid4().hex[:6]
        specs = [settings_a.run_spec(run_id=f"chaos-{stem}-{i:03d}", argv=TOOL) for i in range(RUNS)]
        handles = await asyncio.gather(*(supervisor.start_run(spec) for spec in specs))
        run_ids = {spec.run_id for spec in specs}

        def all_started() -> bool:
            homes = [s.logs_dir for s in (settings_a, settings_b) if s.logs_dir.is_dir()]
            started = {run.name for logs in homes for run in logs.iterdir()}
            return len(started & run_ids) == RUNS

        await eventually(all_started, timeout=180, what=f"all {RUNS} tools started")
        started_in = time.monotonic() - began
        recorded = ledger_records(settings_a.home)
        on_b = len(ledger_records(settings_b.home))
        assert recorded and on_b, f"runs did not spread: {len(recorded)} on A, {on_b} on B"

        workers[0].kill()
        # Parent death takes each `sh`; the sleeps are orphans now.
        leaders = {record.pgid for record in recorded}
        await eventually(
            lambda: not leaders & set(processes_of(recorded)), timeout=30, what="the leaders gone"
        )
        orphans = len(processes_of(recorded))
        assert orphans > 0

        killed_at = time.monotonic()
        workers[0] = WorkerProcess(settings_a, tmp_path / "worker-a2.log")  # the host comes back
        await eventually(lambda: processes_of(recorded) == [], timeout=60, what="the orphans reaped")
        reaped_in = time.monotonic() - killed_at

        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=240)
        finished_in = time.monotonic() - began
        states = [r.state for r in results]
        relaunched = sum(
            1 for spec in specs for home in (settings_a, settings_b)
            if any((home.logs_dir / spec.run_id).glob("attempt-1.2.*"))
        )
        failures = [(r.run_id, r.state.value, r.error) for r in results if r.state is not RunState.SUCCEEDED]
        assert states == [RunState.SUCCEEDED] * RUNS, (len(failures), failures[:3])
        assert processes_of(recorded) == []
        assert processes_of_runs(run_ids) == []
        print(
            f"\nchaos worker-kill: {RUNS} runs on 2 workers, all started after {started_in:.1f}s; "
            f"SIGKILLed worker A with {len(recorded)} (B {on_b}); {orphans} orphaned grandchildren; "
            f"restarted A reaped them in {reaped_in:.1f}s; {relaunched} attempts relaunched; "
            f"all {RUNS} succeeded after {finished_in:.1f}s; processes left: 0"
        )
    finally:
        for worker in workers:
            worker.stop()
        kill_groups([record.pgid for record in recorded])
