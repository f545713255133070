"""The baseline of bench/runs.py: the least a Temporal workflow can do to run one process.

`BareRunWorkflow` runs one `spawn` activity that starts the argv with
`asyncio.create_subprocess_exec` and waits for it: no log files, no socket, no search
attributes, no projection. Its worker is built with the same limits as the toolwarden worker
(`bare_worker`), so the ratio of the two throughputs is the cost of toolwarden's own work.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

if TYPE_CHECKING:  # the workflow sandbox re-imports this module: keep it light
    from toolwarden.config import Settings


@activity.defn(name="bare_spawn")
async def spawn(argv: list[str]) -> int:
    process = await asyncio.create_subprocess_exec(*argv)
    return await process.wait()


@workflow.defn(name="BareRunWorkflow")
class BareRunWorkflow:
    @workflow.run
    async def run(self, argv: list[str]) -> int:
        code: int = await workflow.execute_activity(
            spawn,
            argv,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
        return code


def bare_worker(client: Client, settings: Settings, task_queue: str) -> Worker:
    """A worker with the toolwarden worker's limits (see toolwarden.worker.runner.build_worker)."""
    worker_settings = settings.worker
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[BareRunWorkflow],
        activities=[spawn],
        max_concurrent_activities=worker_settings.max_concurrent_tools,
        max_concurrent_local_activities=worker_settings.max_concurrent_workflow_tasks,
        max_concurrent_workflow_tasks=worker_settings.max_concurrent_workflow_tasks,
        max_cached_workflows=max(1000, worker_settings.max_concurrent_tools * 2),
        graceful_shutdown_timeout=worker_settings.shutdown_grace,
    )
