"""A worker dies while its tool waits at a terminal prompt; the relaunched tool finds its approval."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import psutil

from tests.support import eventually
from tests.worker.test_failover import WorkerProcess, workers  # noqa: F401 (the fixture)
from toolwarden.client import Supervisor
from toolwarden.config import Settings, WorkerSettings
from toolwarden.models import ApprovalState, RunState


async def test_a_prompt_pending_across_a_worker_kill_is_asked_once(
    client, settings: Settings, run_id, workers: list[WorkerProcess], tmp_path: Path  # noqa: F811
) -> None:
    settings = settings.model_copy(
        update={"worker": WorkerSettings(
            heartbeat_timeout=timedelta(seconds=3), heartbeat_interval=timedelta(seconds=0.5),
            health_address=None, sdk_metrics_address=None,
        )}
    )
    supervisor = Supervisor(client, settings)
    target = tmp_path / "f"
    target.touch()
    workers.append(WorkerProcess(settings, tmp_path / "worker-a.log"))
    spec = settings.run_spec(
        run_id=run_id("prompt-failover"), argv=["rm", "-i", str(target)],
        overrides={"prompts": [r"remove .*\?"]},
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
    (approval,) = status.approvals
    assert approval.state is ApprovalState.PENDING
    assert status.live is not None and status.live.waiting_keys == [approval.key]
    assert target.exists()
    await supervisor.decide(approval.approval_id, approve=True, by="ops")
    assert (await handle.result()).state is RunState.SUCCEEDED
    assert not target.exists()
