"""ToolRunWorkflow end to end: a real dev server, a real worker, real processes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from tests.support import eventually, tool
from toolwarden.client import DuplicateRun, Supervisor
from toolwarden.config import Settings
from toolwarden.models import ApprovalState, AttemptOutcome, DecisionSignal, RunState
from toolwarden.workflows import APPROVE_SIGNAL

pytestmark = pytest.mark.usefixtures("worker")


async def test_success_records_output_and_process(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(run_id=run_id("ok"), argv=["sh", "-c", "echo hello; echo oops >&2"])
    handle = await supervisor.start_run(spec)
    result = await handle.result()
    assert result.state is RunState.SUCCEEDED
    assert result.exit_code == 0
    status = await handle.status()
    last = status.last_attempt
    assert last is not None and last.pid and last.pgid == last.pid
    assert Path(last.stdout_path or "").read_text() == "hello\n"
    assert Path(last.stderr_path or "").read_text() == "oops\n"
    assert set(last.tail) == {"hello", "oops"}
    assert status.tool_name == "sh"


async def test_tools_find_the_worker_toolwarden_first_on_any_path(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    # A run that sets its own PATH (no venv on it) still reaches the worker's CLI, first.
    script = "command -v toolwarden; toolwarden beat --progress 0.5 --message half"
    spec = settings.run_spec(
        run_id=run_id("path"), argv=["sh", "-c", script], env={"PATH": "/usr/bin:/bin"}
    )
    handle = await supervisor.start_run(spec)
    result = await handle.result()
    assert (result.state, result.exit_code) == (RunState.SUCCEEDED, 0)
    last = (await handle.status()).last_attempt
    assert last is not None
    assert Path(last.stdout_path or "").read_text() == f"{settings.tool_bin_dir / 'toolwarden'}\n"


async def test_exit_code_is_reported(supervisor: Supervisor, settings: Settings, run_id) -> None:
    handle = await supervisor.start_run(
        settings.run_spec(run_id=run_id(), argv=["sh", "-c", "exit 7"])
    )
    result = await handle.result()
    assert (result.state, result.exit_code) == (RunState.FAILED, 7)


async def test_killed_by_signal_is_named(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    handle = await supervisor.start_run(
        settings.run_spec(run_id=run_id(), argv=["sh", "-c", "kill -9 $$"])
    )
    result = await handle.result()
    assert (result.state, result.signal, result.exit_code) == (RunState.KILLED, "SIGKILL", 137)


@pytest.mark.parametrize(
    ("argv", "cwd", "code", "reason"),
    [
        (["definitely-not-a-tool-xyz"], None, 127, "No such file"),
        ([__file__], None, 126, "Permission denied"),
        (["true"], "/nonexistent/dir", 127, "working directory not found"),
    ],
)
async def test_failed_to_start_is_not_retried(
    supervisor: Supervisor, settings: Settings, run_id, argv, cwd, code, reason
) -> None:
    spec = settings.run_spec(run_id=run_id(), argv=argv, cwd=cwd, overrides={"retries": 3})
    handle = await supervisor.start_run(spec)
    result = await handle.result()
    assert result.state is RunState.FAILED_TO_START
    assert result.exit_code == code
    assert reason in (result.error or "")
    assert result.retry_count == 0 and result.attempt == 1


async def test_hung_tool_and_grandchild_are_killed(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(
        run_id=run_id("hang"),
        argv=tool("hang_with_grandchild.py"),
        overrides={"hang_timeout": timedelta(seconds=1), "kill_grace": timedelta(seconds=1)},
    )
    handle = await supervisor.start_run(spec)
    result = await handle.result()
    assert result.state is RunState.HUNG
    status = await handle.status()
    last = status.last_attempt
    assert last is not None and last.outcome is AttemptOutcome.HUNG
    grandchild = int(next(t for t in last.tail if t.startswith("PID ")).split()[1])
    assert not psutil.pid_exists(last.pid or 0) or psutil.Process(last.pid).status() == "zombie"
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie"


async def test_timeout_kills_a_tool_that_ignores_sigterm(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(
        run_id=run_id(),
        argv=tool("ignore_term.py"),
        overrides={"timeout": timedelta(seconds=1), "kill_grace": timedelta(seconds=0.5)},
    )
    result = await (await supervisor.start_run(spec)).result()
    assert result.state is RunState.TIMED_OUT


async def test_retries_until_success(
    supervisor: Supervisor, settings: Settings, run_id, tmp_path: Path
) -> None:
    spec = settings.run_spec(
        run_id=run_id(),
        argv=[*tool("flaky.py"), str(tmp_path / "count"), "3"],
        overrides={"retries": 5, "retry_backoff": timedelta(milliseconds=100)},
    )
    handle = await supervisor.start_run(spec)
    result = await handle.result()
    assert (result.state, result.retry_count, result.attempt) == (RunState.SUCCEEDED, 2, 3)


async def test_retries_are_bounded(
    supervisor: Supervisor, settings: Settings, run_id, tmp_path: Path
) -> None:
    spec = settings.run_spec(
        run_id=run_id(),
        argv=[*tool("flaky.py"), str(tmp_path / "count"), "99"],
        overrides={"retries": 2, "retry_backoff": timedelta(milliseconds=100)},
    )
    result = await (await supervisor.start_run(spec)).result()
    assert (result.state, result.exit_code, result.retry_count) == (RunState.FAILED, 3, 2)


async def test_cancel_stops_the_tool(supervisor: Supervisor, settings: Settings, run_id) -> None:
    spec = settings.run_spec(run_id=run_id(), argv=tool("hang_with_grandchild.py"))
    handle = await supervisor.start_run(spec)

    async def pid() -> int | None:
        status = await handle.status()
        return status.live.pid if status.live and status.live.tail else None

    leader = await eventually(pid)
    await handle.cancel("test")
    result = await handle.result()
    assert result.state is RunState.CANCELLED
    await eventually(lambda: not psutil.pid_exists(leader) or psutil.Process(leader).status() == "zombie")
    assert (await handle.status()).state is RunState.CANCELLED


async def test_log_cap_bounds_the_file(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(
        run_id=run_id(),
        argv=[*tool("chatty.py"), str(5 * 1024 * 1024)],
        overrides={"log_cap": 64 * 1024},
    )
    handle = await supervisor.start_run(spec)
    assert (await handle.result()).state is RunState.SUCCEEDED
    last = (await handle.status()).last_attempt
    assert last is not None and last.truncated
    assert last.stdout_bytes == 5 * 1024 * 1024
    size = Path(last.stdout_path or "").stat().st_size
    assert 64 * 1024 <= size < 64 * 1024 + 200


async def test_duplicate_id_is_refused(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(run_id=run_id(), argv=["true"])
    await (await supervisor.start_run(spec)).result()
    with pytest.raises(DuplicateRun, match="already exists"):
        await supervisor.start_run(spec)


async def test_search_attributes_follow_the_state(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(run_id=run_id(), argv=["sleep", "30"], name="sleeper-sa")
    handle = await supervisor.start_run(spec)

    async def listed_running() -> bool:
        runs = await supervisor.list_runs(state=RunState.RUNNING, tool="sleeper-sa")
        return any(r.run_id == spec.run_id for r in runs)

    await eventually(listed_running)
    await handle.cancel()
    await handle.result()

    async def listed_cancelled() -> bool:
        runs = await supervisor.list_runs(tool="sleeper-sa")
        return any(r.run_id == spec.run_id and r.state is RunState.CANCELLED for r in runs)

    await eventually(listed_cancelled)


async def test_output_is_visible_while_the_tool_runs(
    supervisor: Supervisor, settings: Settings, run_id, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    spec = settings.run_spec(run_id=run_id(), argv=[*tool("wait_for_file.py"), str(gate)])
    handle = await supervisor.start_run(spec)

    async def first_line_live() -> bool:
        status = await handle.status()
        live = status.live
        return (
            status.state is RunState.RUNNING
            and live is not None
            and "first line" in live.tail
            and Path(live.stdout_path or "/nonexistent").read_text() == "first line\n"
        )

    await eventually(first_line_live)
    gate.touch()
    assert (await handle.result()).state is RunState.SUCCEEDED
    last = (await handle.status()).last_attempt
    assert last is not None and last.tail == ["first line", "second line"]


def _upserts(history: WorkflowHistory) -> int:
    return sum(
        e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES for e in history.events
    )


async def test_a_plain_run_upserts_its_state_once_as_it_ends(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    # Started listed `running`, the state its first workflow task sets: no upsert for it.
    handle = await supervisor.start_run(settings.run_spec(run_id=run_id(), argv=["true"]))
    assert (await handle.result()).state is RunState.SUCCEEDED
    assert _upserts(await handle._handle.fetch_history()) == 1


async def test_a_gated_run_is_listed_waiting_from_its_start(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(
        run_id=run_id(), argv=["true"], name="gated-sa", overrides={"approve_before": "Go?"}
    )
    handle = await supervisor.start_run(spec)

    async def listed() -> list[tuple[RunState | None, ApprovalState | None]]:
        runs = await supervisor.list_runs(tool="gated-sa")
        return [(r.state, r.approval_state) for r in runs if r.run_id == spec.run_id]

    assert await eventually(listed) == [(RunState.WAITING_APPROVAL, ApprovalState.PENDING)]
    # Its first workflow task opened the gate and upserted nothing.
    await eventually(lambda: handle.status(), what="the first workflow task")
    assert _upserts(await handle._handle.fetch_history()) == 0
    await handle.cancel()
    await handle.result()


def _markers(history: WorkflowHistory) -> list[str]:
    return [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]


async def test_a_run_closes_with_attempt_ended_then_run_ended_and_no_patch(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    handle = await supervisor.start_run(settings.run_spec(run_id=run_id(), argv=["sh", "-c", "exit 3"]))
    result = await handle.result()
    assert result.state is RunState.FAILED and result.exit_code == 3
    assert "core_patch" not in _markers(await handle._handle.fetch_history())
    status = await handle.status()
    events = await handle.events()
    assert [e.kind for e in events[-2:]] == ["attempt_ended", "run_ended"]
    assert events[-2].data == {"attempt": 1, "outcome": "failed", "exit_code": 3, "signal": None}
    assert events[-1].data == {"state": "failed", "exit_code": 3}
    assert events[-1].at == status.ended_at == status.updated_at


async def test_a_refusal_during_the_attempt_is_recorded_when_it_happens(
    supervisor: Supervisor, settings: Settings, run_id, tmp_path: Path
) -> None:
    gate = tmp_path / "go"
    handle = await supervisor.start_run(
        settings.run_spec(run_id=run_id(), argv=[*tool("wait_for_file.py"), str(gate)])
    )

    async def running() -> bool:
        return (await handle.status()).live is not None

    await eventually(running)
    await handle._handle.signal(APPROVE_SIGNAL, DecisionSignal(key="nope", by="mallory"))

    async def audited() -> bool:
        return any(a.kind == "decision_refused" for a in (await handle.status()).audit)

    await eventually(audited)
    gate.touch()
    assert (await handle.result()).state is RunState.SUCCEEDED
    events = await handle.events()
    assert [e.kind for e in events[-3:]] == ["approval_refused", "attempt_ended", "run_ended"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.at for e in events] == sorted(e.at for e in events)  # the log is in time order
    refused = events[-3]
    reason = f"unknown approval {handle.run_id}/nope"
    assert refused.data == {"key": "nope", "by": "mallory", "reason": reason}
