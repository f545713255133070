"""Continue-as-new: a run with many attempts and approvals hands its state to a fresh history.

A dev server of its own suggests continue-as-new at 80 events (Temporal's default is 4,096), so a
few attempts of tests/tools/many_approvals.py hand over several times. Nothing may be lost: the
approvals held pending across a hand-over are decided and answered, the event log stays one
gapless sequence in the mirror, the run is listed once, and every execution's history replays.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.conftest import make_settings
from tests.support import eventually, free_port, tool
from tests.workflows.long_run import Approver, approved, executions, pending_across_hand_overs
from toolwarden.client import Supervisor, connect_client
from toolwarden.config import MirrorSettings, ServerSettings, Settings
from toolwarden.mirror import MirrorWriter, make_engine
from toolwarden.mirror.schema import RunEventRow
from toolwarden.models import RunEvent, RunState
from toolwarden.worker.devserver import DevServer
from toolwarden.worker.runner import build_worker
from toolwarden.workflows.tool_run import ToolRunWorkflow

SUGGEST_AT = 80


@pytest.fixture
async def early_hand_overs(tmp_path: Path) -> AsyncIterator[tuple[Client, Settings]]:
    port = free_port()
    settings = make_settings(tmp_path / "home", f"127.0.0.1:{port}")
    server = ServerSettings(
        port=port,
        ui_port=0,
        log_level="error",
        dynamic_config={"limit.historyCount.suggestContinueAsNew": str(SUGGEST_AT)},
    )
    settings = settings.model_copy(
        update={"server": server, "mirror": MirrorSettings(enabled=True)}
    )
    dev = DevServer(settings)
    await dev.start()
    try:
        yield await connect_client(settings), settings
    finally:
        await dev.stop()


async def test_a_long_run_continues_as_new_and_loses_nothing(
    early_hand_overs: tuple[Client, Settings], tmp_path: Path
) -> None:
    client, settings = early_hand_overs
    attempts, per_attempt = 4, 3
    spec = settings.run_spec(
        run_id="long",
        argv=[*tool("many_approvals.py"), str(attempts), str(per_attempt)],
        cwd=str(tmp_path),
        overrides={"retries": attempts, "retry_backoff": timedelta(seconds=0.1)},
    )
    settings.home.mkdir(parents=True, exist_ok=True)
    writer = MirrorWriter(settings.mirror_url, settings.mirror, retry_initial=0.05)
    writer.start()
    supervisor = Supervisor(client, settings)
    try:
        async with build_worker(client, settings, sinks=[writer]):
            handle = await supervisor.start_run(spec)
            approver = Approver(supervisor, spec.run_id)
            await asyncio.wait_for(approver.run(), timeout=120)
            result = await handle.result()
            status = await handle.status()
            listed = await supervisor.list_runs()
    finally:
        await asyncio.to_thread(writer.stop, 10.0)

    assert result.state is RunState.SUCCEEDED, result
    assert (result.attempt, result.retry_count) == (attempts, attempts - 1)
    held = (tmp_path / "held.log").read_text().splitlines()
    assert held == [f"held-{n} approved" for n in range(1, attempts)]
    total = attempts * per_attempt + attempts - 1
    assert approved(status) == total == approver.decided
    assert [r.run_id for r in listed] == [spec.run_id]

    runs = await executions(client, spec.run_id)
    assert len(runs) >= 3, [r.history_length for r in runs]
    assert [r.status for r in runs[:-1]] == ["CONTINUED_AS_NEW"] * (len(runs) - 1)
    # Each hand-over waits for the attempt to end, so a history may pass the suggestion by one
    # attempt's worth of events, never more.
    assert max(r.history_length for r in runs) < 3 * SUGGEST_AT
    replayer = Replayer(workflows=[ToolRunWorkflow], data_converter=pydantic_data_converter)
    for run in runs:
        await replayer.replay_workflow(run.history)

    engine = make_engine(settings.mirror_url)
    try:

        def mirrored() -> list[RunEvent]:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(RunEventRow).where(RunEventRow.run_id == spec.run_id).order_by(RunEventRow.seq)
                )
                return [RunEvent(seq=r.seq, at=r.at, kind=r.kind, data=r.data) for r in rows]

        events = await eventually(
            lambda: (e := mirrored()) and e[-1].kind == "run_ended" and e, what="mirror caught up"
        )
    finally:
        engine.dispose()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sum(e.kind == "run_continued" for e in events) == len(runs) - 1
    assert sum(e.kind == "run_started" for e in events) == 1
    # Some held approval was pending while the run handed over, and was decided after it.
    assert pending_across_hand_overs(events) & {f"held-{n}" for n in range(1, attempts)}
    print(f"\n{len(runs)} executions, histories {[r.history_length for r in runs]} events")


