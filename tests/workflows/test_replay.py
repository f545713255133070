"""Determinism: stored histories of real runs must replay against the current workflow code.

Record new ones (after a deliberate, `workflow.patched`-guarded change) with
`TOOLWARDEN_RECORD_HISTORIES=1 pytest tests/workflows/test_replay.py`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.support import eventually, tool
from toolwarden.client import Supervisor
from toolwarden.config import Settings
from toolwarden.models import DecisionSignal
from toolwarden.workflows import APPROVE_SIGNAL
from toolwarden.workflows.tool_run import ToolRunWorkflow

HISTORIES = Path(__file__).parent.parent / "histories"
RECORD = os.environ.get("TOOLWARDEN_RECORD_HISTORIES") == "1"
# Bump when the workflow's commands change (behind `workflow.patched`, or keyed on a field that
# older recorded results lack); older files stay and keep replaying.
HISTORY_TAG = "v3"


def replayer() -> Replayer:
    return Replayer(workflows=[ToolRunWorkflow], data_converter=pydantic_data_converter)


def stored() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


@pytest.mark.parametrize("path", stored(), ids=lambda p: p.stem)
async def test_stored_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replayer().replay_workflow(history)


def test_histories_are_stored() -> None:
    assert len(stored()) >= 12, "tests/histories/ lost its recorded runs"


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
    for name, spec in scenarios.items():
        handle = await supervisor.start_run(spec)
        if name in ("approved", "gate_rejected", "relaunched"):
            key = "gate" if name == "gate_rejected" else "k"

            async def asked(h=handle) -> bool:
                return bool((await h.status()).pending_approvals)

            await eventually(asked)
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
        await handle.result()
        history = await handle._handle.fetch_history()
        await replayer().replay_workflow(history)
        if RECORD:
            HISTORIES.mkdir(exist_ok=True)
            (HISTORIES / f"{name}.{HISTORY_TAG}.json").write_text(history.to_json())


async def _running(handle) -> bool:  # type: ignore[no-untyped-def]
    status = await handle.status()
    return status.live is not None


async def _audited(handle) -> bool:  # type: ignore[no-untyped-def]
    return bool((await handle.status()).audit)
