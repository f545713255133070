"""Chaos: one tool blocks in 12 asks at once, past the server's 10 in-flight updates per run.

Each blocking ask holds a `wait_decision` update while it waits, and Temporal refuses more than
`history.maxInFlightUpdates` (10 by default) per run at a time: the asks past
it retry until a slot frees (the worker logs them), and a person's decision, itself an update,
is refused too, so it goes as a signal instead. All 12 are decided as they are listed, the
tool gets every answer and the run succeeds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.test_worker_kill import processes_of_runs
from tests.support import eventually
from toolwarden.client import DecisionRefused, Supervisor
from toolwarden.config import Settings
from toolwarden.models import RunState

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.usefixtures("worker")]

ASKS = 12
TOOL = [sys.executable, str(Path(__file__).parent / "many_asks.py"), str(ASKS)]


async def test_more_blocking_asks_than_in_flight_updates(
    supervisor: Supervisor, settings: Settings, run_id: Any
) -> None:
    rid = run_id("asks")
    handle = await supervisor.start_run(settings.run_spec(run_id=rid, argv=TOOL))
    began = time.monotonic()
    decided: dict[str, bool] = {}  # approval id -> whether it went as a queued signal

    async def decide_what_is_listed() -> bool:
        status = await handle.status()
        for approval in status.pending_approvals:
            if approval.approval_id in decided:
                continue
            try:
                result = await supervisor.decide(approval.approval_id, approve=True, by="ops")
            except DecisionRefused as exc:
                assert "already approved" in str(exc), exc  # a signal applied since the listing
                continue
            decided[approval.approval_id] = result.queued
        return len(decided) == ASKS

    await eventually(decide_what_is_listed, timeout=180, interval=0.5, what=f"all {ASKS} decided")
    result = await handle.result()
    assert result.state is RunState.SUCCEEDED, result
    status = await handle.status()
    assert sorted(status.last_attempt.tail if status.last_attempt else []) == sorted(
        f"step-{i} True" for i in range(ASKS)
    )
    await eventually(lambda: processes_of_runs({rid}) == [], timeout=30, what="no process left")
    queued = sum(decided.values())
    print(
        f"\nchaos update limit: {ASKS} blocking asks at once in one run; all decided and the run "
        f"succeeded in {time.monotonic() - began:.1f}s; {queued} decisions went as signals "
        f"(the run's updates were at the server's limit), {ASKS - queued} as updates"
    )
