"""A worker dies while its tool waits for a person; another worker takes the run over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psutil
import pytest

import toolwarden.client
from tests.cli.test_cli import invoke, write_config
from tests.support import eventually, tool
from toolwarden.client import Supervisor
from toolwarden.config import Settings, WorkerSettings
from toolwarden.models import ApprovalState, RunState
from toolwarden.worker.runner import build_worker


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWARDEN_")}
    env.update(
        TOOLWARDEN_HOME=str(settings.home),
        TOOLWARDEN_TEMPORAL__ADDRESS=settings.temporal.address,
        TOOLWARDEN_TEMPORAL__TASK_QUEUE=settings.temporal.task_queue,
        TOOLWARDEN_WORKER__HEALTH_ADDRESS="",
        TOOLWARDEN_WORKER__SDK_METRICS_ADDRESS="",
        TOOLWARDEN_WORKER__HEARTBEAT_INTERVAL="0.5s",
        TOOLWARDEN_MIRROR__ENABLED="false",
    )
    return env


class WorkerProcess:
    def __init__(self, settings: Settings, log: Path) -> None:
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "toolwarden.cli", "worker"],
            env=worker_env(settings),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.log.close()
        return self.process.returncode


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


async def test_pending_approval_survives_a_worker_kill(
    client, settings: Settings, run_id, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"worker": WorkerSettings(
            heartbeat_timeout=timedelta(seconds=3), heartbeat_interval=timedelta(seconds=0.5),
            health_address=None, sdk_metrics_address=None,
        )}
    )
    supervisor = Supervisor(client, settings)
    workers.append(WorkerProcess(settings, tmp_path / "worker-a.log"))
    spec = settings.run_spec(
        run_id=run_id("failover"), argv=[*tool("approval_tool.py"), "deploy", "Deploy"]
    )
    handle = await supervisor.start_run(spec)

    async def waiting_tool() -> int | None:
        status = await handle.status()
        live = status.live
        if status.pending_approvals and live and live.waiting_keys:
            return live.pid
        return None

    first_pid = await eventually(waiting_tool, timeout=60)
    workers[0].kill()
    # PR_SET_PDEATHSIG: the tool dies with its worker.
    await eventually(
        lambda: not psutil.pid_exists(first_pid)
        or psutil.Process(first_pid).status() == psutil.STATUS_ZOMBIE
    )
    workers.append(WorkerProcess(settings, tmp_path / "worker-b.log"))

    async def relaunched() -> bool:
        pid = await waiting_tool()
        return pid is not None and pid != first_pid

    await eventually(relaunched, timeout=90)
    status = await handle.status()
    assert [a.state for a in status.approvals] == [ApprovalState.PENDING]
    result = await supervisor.decide(f"{spec.run_id}/deploy", approve=True, by="ops")
    assert result.took_effect
    final = await handle.result()
    assert final.state is RunState.SUCCEEDED
    assert workers[1].stop() == 0  # SIGTERM drains cleanly


async def test_decisions_made_while_no_worker_runs_apply_when_one_returns(
    client, settings: Settings, run_id, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # How long the client waits for a worker before it says none answers.
    monkeypatch.setattr(toolwarden.client, "DECIDE_TIMEOUT", timedelta(seconds=2))
    monkeypatch.setattr(toolwarden.client, "QUERY_TIMEOUT", timedelta(seconds=2))
    supervisor = Supervisor(client, settings)
    # Exit-and-relaunch: while it waits nothing runs, so stopping the worker stops no tool.
    spec = settings.run_spec(
        run_id=run_id("queued"),
        argv=[*tool("approval_tool.py"), "deploy", "Deploy", "--or-exit"],
    )
    async with build_worker(client, settings):
        handle = await supervisor.start_run(spec)

        async def parked() -> bool:
            status = await handle.status()
            return bool(status.pending_approvals) and status.live is None

        await eventually(parked, timeout=60)

    # Other tests' runs on this server may be waiting without a worker too.
    listing = await supervisor.pending_approvals()
    assert spec.run_id in listing.unanswered_runs
    assert all(p.approval.run_id != spec.run_id for p in listing.approvals)
    config = write_config(settings, tmp_path / "supervision.yaml")
    listed = await invoke(config, "approvals")
    assert listed.exit_code == 1
    assert "waiting for approval did not answer, so their approvals are not listed" in listed.stderr
    queued = await invoke(
        config, "approve", f"{spec.run_id}/deploy", "--by", "ops", "--reason", "ok",
        "--response", '{"branch": "main"}',
    )
    assert queued.exit_code == 0, queued.stderr
    assert queued.stdout.startswith(f"queued: no worker answers run {spec.run_id} now")
    assert f"approval of {spec.run_id}/deploy is recorded" in queued.stdout

    async with build_worker(client, settings):
        final = await handle.result()
        status = await handle.status()
    assert final.state is RunState.SUCCEEDED
    (approval,) = status.approvals
    assert (approval.state, approval.decided_by, approval.response) == (
        ApprovalState.APPROVED, "ops", {"branch": "main"}
    )
    assert status.last_attempt is not None
    assert any('"branch": "main"' in line for line in status.last_attempt.tail)
