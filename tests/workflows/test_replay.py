"""Determinism: stored histories of real runs must replay against the current workflow code.

`tests/histories/*.json` are real runs of each scenario below. A change to the workflow's
commands breaks them: once a release has open runs, such a change goes behind
`workflow.patched` and the old files stay; before that (0.1.0), re-record them with
`TOOLWARDEN_RECORD_HISTORIES=1 pytest tests/workflows/test_replay.py`.

`tests/histories/nondeterministic/` holds a history the code no longer matches (the recorded
`succeeded` run with its activity renamed, as if the code had changed under a running workflow):
replaying it must fail, so the replay test is seen to catch what it is there to catch.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from tests.support import eventually, tool
from toolwarden.client import Supervisor
from toolwarden.config import Settings
from toolwarden.models import DecisionSignal
from toolwarden.workflows import APPROVE_SIGNAL, RUN_TOOL_ACTIVITY
from toolwarden.workflows.tool_run import ToolRunWorkflow

HISTORIES = Path(__file__).parent.parent / "histories"
NONDETERMINISTIC = HISTORIES / "nondeterministic" / "renamed_activity.json"
RECORD = os.environ.get("TOOLWARDEN_RECORD_HISTORIES") == "1"
SCENARIOS = ("succeeded", "retried", "approved", "gate_rejected", "relaunched", "cancelled", "refused")


def replayer() -> Replayer:
    return Replayer(workflows=[ToolRunWorkflow], data_converter=pydantic_data_converter)


def stored() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


@pytest.mark.parametrize("path", stored(), ids=lambda p: p.stem)
async def test_stored_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replayer().replay_workflow(history)


def test_histories_are_stored() -> None:
    assert [p.stem for p in stored()] == sorted(SCENARIOS), "tests/histories/ lost recorded runs"


async def test_a_history_the_code_no_longer_matches_fails_to_replay() -> None:
    history = WorkflowHistory.from_json("renamed", NONDETERMINISTIC.read_text())
    with pytest.raises(NondeterminismError, match=RUN_TOOL_ACTIVITY):
        await replayer().replay_workflow(history)


def renamed_activity(history_json: str) -> str:
    """`history_json` with its tool activity scheduled under another name."""
    document = json.loads(history_json)
    renamed = 0
    for event in document["events"]:
        scheduled = event.get("activityTaskScheduledEventAttributes")
        if scheduled is not None and scheduled["activityType"]["name"] == RUN_TOOL_ACTIVITY:
            scheduled["activityType"]["name"] = f"{RUN_TOOL_ACTIVITY}_before_a_rename"
            renamed += 1
    assert renamed == 1
    return json.dumps(document, indent=2)


@pytest.mark.usefixtures("worker")
async def test_fresh_histories_replay(
    supervisor: Supervisor, settings: Settings, run_id, tmp_path: Path
) -> None:
    """Runs each scenario now, replays its history, and (when recording) stores it."""
    scenarios = {
        "succeeded": settings.run_spec(run_id=run_id(), argv=["sh", "-c", "echo hi"]),
        "retried": settings.run_spec(
            run_id=run_id(),
            argv=[*tool("flaky.py"), str(tmp_path / "c"), "2"],
            overrides={"retries": 2, "retry_backoff": timedelta(milliseconds=50)},
        ),
        "approved": settings.run_spec(
            run_id=run_id(), argv=[*tool("approval_tool.py"), "k", "Approve me"]
        ),
        "gate_rejected": settings.run_spec(
            run_id=run_id(), argv=["true"], overrides={"approve_before": "Gate"}
        ),
        "relaunched": settings.run_spec(
            run_id=run_id(), argv=[*tool("approval_tool.py"), "k", "Later", "--or-exit"]
        ),
        "cancelled": settings.run_spec(run_id=run_id(), argv=["sleep", "60"]),
        "refused": settings.run_spec(
            run_id=run_id(), argv=[*tool("wait_for_file.py"), str(tmp_path / "go")]
        ),
    }
    assert tuple(scenarios) == SCENARIOS
    for name, spec in scenarios.items():
        handle = await supervisor.start_run(spec)
        if name in ("approved", "gate_rejected", "relaunched"):
            key = "gate" if name == "gate_rejected" else "k"

            async def asked(h=handle) -> bool:
                return bool((await h.status()).pending_approvals)

            await eventually(asked)
            if name == "relaunched":  # decide once the tool has exited, as the scenario says
                await eventually(lambda h=handle: _parked(h))
            await supervisor.decide(
                f"{spec.run_id}/{key}", approve=name != "gate_rejected", by="t", reason="r"
            )
        if name == "cancelled":
            await eventually(lambda h=handle: _running(h))
            await handle.cancel()
        if name == "refused":
            await eventually(lambda h=handle: _running(h))
            await handle._handle.signal(APPROVE_SIGNAL, DecisionSignal(key="nope", by="t"))
            await eventually(lambda h=handle: _audited(h))
            (tmp_path / "go").touch()
        result = await handle.result()
        assert result.attempt == {"retried": 2, "relaunched": 2, "gate_rejected": 0}.get(name, 1)
        history = await handle._handle.fetch_history()
        await replayer().replay_workflow(history)
        if RECORD:
            HISTORIES.mkdir(exist_ok=True)
            (HISTORIES / f"{name}.json").write_text(history.to_json())
            if name == "succeeded":
                NONDETERMINISTIC.parent.mkdir(exist_ok=True)
                NONDETERMINISTIC.write_text(renamed_activity(history.to_json()))


async def _running(handle) -> bool:  # type: ignore[no-untyped-def]
    status = await handle.status()
    return status.live is not None


async def _audited(handle) -> bool:  # type: ignore[no-untyped-def]
    return bool((await handle.status()).audit)


async def _parked(handle) -> bool:  # type: ignore[no-untyped-def]
    status = await handle.status()
    return status.live is None and status.last_attempt is not None
