"""Chaos: a run with 2,000 approvals over 40 attempts stays under Temporal's history limits.

On the session's dev server with Temporal's defaults (continue-as-new suggested at 4,096 events,
a warning at 10,240), tests/tools/many_approvals.py asks 50 approvals an attempt and holds one
over each retry. The run must continue as new with its state carried over, keep every held
approval decidable across the hand-overs, and lose no approval and no event in the mirror.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from temporalio.client import Client

from tests.support import tool
from tests.workflows.long_run import Approver, executions, pending_across_hand_overs
from toolwarden.client import Supervisor
from toolwarden.config import MirrorSettings, Settings
from toolwarden.mirror import MirrorWriter, make_engine
from toolwarden.mirror.schema import Approval, RunEventRow
from toolwarden.models import RunEvent, RunState
from toolwarden.worker.runner import build_worker

ATTEMPTS = 40
PER_ATTEMPT = 50
HISTORY_WARNING_EVENTS = 10_240  # Temporal's limit.historyCount.warn default
HISTORY_WARNING_BYTES = 10 * 1024 * 1024  # limit.historySize.warn


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_two_thousand_approvals_continue_as_new(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"mirror": MirrorSettings(enabled=True)})
    settings.home.mkdir(parents=True, exist_ok=True)
    spec = settings.run_spec(
        run_id=f"many-{tmp_path.name}",
        argv=[*tool("many_approvals.py"), str(ATTEMPTS), str(PER_ATTEMPT)],
        cwd=str(tmp_path),
        overrides={
            "retries": ATTEMPTS,
            "retry_backoff": timedelta(seconds=0.1),
            "backoff_coefficient": 1.0,
        },
    )
    writer = MirrorWriter(settings.mirror_url, settings.mirror, retry_initial=0.05)
    writer.start()
    supervisor = Supervisor(client, settings)
    started = time.monotonic()
    try:
        async with build_worker(client, settings, sinks=[writer]):
            handle = await supervisor.start_run(spec)
            approver = Approver(supervisor, spec.run_id)
            await asyncio.wait_for(approver.run(), timeout=800)
            result = await handle.result()
    finally:
        await asyncio.to_thread(writer.stop, 30.0)
    took = time.monotonic() - started

    assert result.state is RunState.SUCCEEDED, result
    assert result.attempt == ATTEMPTS
    held = (tmp_path / "held.log").read_text().splitlines()
    assert held == [f"held-{n} approved" for n in range(1, ATTEMPTS)]
    total = ATTEMPTS * PER_ATTEMPT + ATTEMPTS - 1
    assert approver.decided == total

    runs = await executions(client, spec.run_id)
    lengths = [r.history_length for r in runs]
    sizes = [sum(e.ByteSize() for e in r.history.events) for r in runs]
    assert len(runs) >= 2, lengths
    assert max(lengths) < HISTORY_WARNING_EVENTS, lengths
    assert max(sizes) < HISTORY_WARNING_BYTES, sizes

    engine = make_engine(settings.mirror_url)
    try:
        with engine.connect() as conn:
            approved_rows = conn.execute(
                select(func.count()).select_from(Approval).where(
                    Approval.run_id == spec.run_id, Approval.state == "approved"
                )
            ).scalar_one()
            rows = conn.execute(
                select(RunEventRow).where(RunEventRow.run_id == spec.run_id).order_by(RunEventRow.seq)
            )
            events = [RunEvent(seq=r.seq, at=r.at, kind=r.kind, data=r.data) for r in rows]
    finally:
        engine.dispose()
    assert approved_rows == total
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].kind == "run_ended"
    carried = pending_across_hand_overs(events)
    assert carried, "no approval was pending across a hand-over"
    print(
        f"\n{total} approvals over {ATTEMPTS} attempts in {took:.0f} s "
        f"({total / took:.1f} decided/s); {len(runs)} executions, history lengths {lengths}, "
        f"largest {max(sizes) / 1024:.0f} KiB; {len(carried)} approvals pending across a "
        f"hand-over, all decided; mirror: {approved_rows} approved rows, {len(events)} events"
    )


