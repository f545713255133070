"""A deferred claude call outlives its worker: decided while none runs, resumed by a new one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from temporalio.client import Client

from tests.agents.model_api import ModelAPI
from tests.agents.test_claude import claude_spec, parked_approval
from toolwarden.client import Supervisor
from toolwarden.config import Settings
from toolwarden.models import RunState
from toolwarden.worker.runner import build_worker


async def test_decided_while_no_worker_runs_then_resumed_by_a_new_worker(
    client: Client,
    supervisor: Supervisor,
    settings: Settings,
    run_id: Any,
    claude_bin: str,
    workdir: Path,
    claude_env: dict[str, str],
    model_api: ModelAPI,
) -> None:
    spec = claude_spec(settings, run_id("claude"), claude_bin, workdir, claude_env)
    async with build_worker(client, settings):
        handle = await supervisor.start_run(spec)
        approval = await parked_approval(handle)
    # The worker is gone; no claude process and no activity hold the wait.
    decided = await supervisor.decide(approval.approval_id, approve=True, by="dave")
    assert decided.queued
    assert (workdir / "build").exists()
    async with build_worker(client, settings):
        result = await handle.result()
        (record,) = (await handle.status()).approvals
    assert (result.state, result.exit_code, result.attempt) == (RunState.SUCCEEDED, 0, 2)
    assert not (workdir / "build").exists()
    assert record.decided_by == "dave"
