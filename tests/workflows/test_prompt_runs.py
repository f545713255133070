"""Prompt mode end to end: real prompting programs on a terminal, a real worker and server.

The prompt reaches a person as an approval (`pending_approvals`, `decide`), the decision is
typed back, and the program acts on it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.cli.test_cli import invoke, write_config
from tests.support import eventually, tool
from toolwarden.client import RunHandle, Supervisor
from toolwarden.config import Settings
from toolwarden.models import ApprovalRecord, ApprovalState, RunState

pytestmark = pytest.mark.usefixtures("worker")


async def pending_prompt(supervisor: Supervisor, handle: RunHandle, count: int = 1) -> ApprovalRecord:
    async def check() -> ApprovalRecord | None:
        status = await handle.status()
        waiting = status.pending_approvals
        return waiting[-1] if len(status.approvals) >= count and waiting else None

    record = await eventually(check, what="the prompt as an approval")

    async def listed() -> bool:  # `approvals` finds runs through visibility, a moment later
        found = await supervisor.pending_approvals()
        return record.approval_id in [p.approval.approval_id for p in found.approvals]

    await eventually(listed, what="the prompt in the approvals list")
    return record


@pytest.mark.parametrize("approve", [True, False])
async def test_rm_i_removes_the_file_only_when_approved(
    supervisor: Supervisor, settings: Settings, run_id, tmp_path: Path, approve: bool
) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me?\n")
    spec = settings.run_spec(
        run_id=run_id("rm"), argv=["rm", "-i", str(target)], cwd=str(tmp_path),
        overrides={"prompts": [r"remove .*\?"]},
    )
    handle = await supervisor.start_run(spec)
    record = await pending_prompt(supervisor, handle)
    assert record.summary == f"rm: remove regular file '{target}'?"
    assert isinstance(record.details, dict) and record.details["prompt"] == record.summary
    assert (await handle.status()).state is RunState.WAITING_APPROVAL
    assert target.exists()  # nothing happens before the decision
    decided = await supervisor.decide(record.approval_id, approve=approve, by="alice")
    assert decided.took_effect
    result = await handle.result()
    assert result.state is RunState.SUCCEEDED  # rm -i exits 0 either way
    assert target.exists() is not approve
    status = await handle.status()
    assert [a.state for a in status.approvals] == [
        ApprovalState.APPROVED if approve else ApprovalState.REJECTED
    ]
    assert status.last_attempt is not None
    assert status.last_attempt.tail[-1] == f"{record.summary} {'y' if approve else 'n'}"


async def test_cp_i_overwrites_only_when_approved_with_the_profile_answer(
    supervisor: Supervisor, settings: Settings, run_id, tmp_path: Path
) -> None:
    source, target = tmp_path / "new.txt", tmp_path / "old.txt"
    source.write_text("new\n")
    target.write_text("old\n")
    spec = settings.run_spec(
        run_id=run_id("cp"), argv=["cp", "-i", str(source), str(target)],
        overrides={"prompts": [r"^cp: overwrite"], "answer_yes": "yes"},
    )
    handle = await supervisor.start_run(spec)
    record = await pending_prompt(supervisor, handle)
    assert record.summary == f"cp: overwrite '{target}'?"
    await supervisor.decide(record.approval_id, approve=True, by="bob")
    assert (await handle.result()).state is RunState.SUCCEEDED
    assert target.read_text() == "new\n"


async def test_each_input_prompt_is_its_own_approval(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(
        run_id=run_id("input"),
        argv=[*tool("prompting.py"), "Deploy to staging?", "Deploy to prod?"],
        overrides={"prompts": [r"^Deploy .*\[y/N\]$"]},
    )
    handle = await supervisor.start_run(spec)
    first = await pending_prompt(supervisor, handle)
    assert first.summary == "Deploy to staging? [y/N]"
    await supervisor.decide(first.approval_id, approve=True, by="carol")
    second = await pending_prompt(supervisor, handle, count=2)
    assert second.summary == "Deploy to prod? [y/N]" and second.key != first.key
    await supervisor.decide(second.approval_id, approve=False, by="carol", reason="friday")
    assert (await handle.result()).state is RunState.SUCCEEDED
    status = await handle.status()
    assert status.last_attempt is not None
    tail = status.last_attempt.tail
    assert "TTY True True True" in tail
    assert "ANSWER 1 'y'" in tail and "ANSWER 2 'n'" in tail
    assert [(a.summary, a.state) for a in status.approvals] == [
        ("Deploy to staging? [y/N]", ApprovalState.APPROVED),
        ("Deploy to prod? [y/N]", ApprovalState.REJECTED),
    ]


async def test_a_pattern_that_never_matches_lets_the_tool_run_as_usual(
    supervisor: Supervisor, settings: Settings, run_id, tmp_path: Path
) -> None:
    spec = settings.run_spec(
        run_id=run_id("nomatch"),
        argv=["sh", "-c", "echo 'Continue? [y/N]'; echo done; exit 3"],
        overrides={"prompts": [r"^remove"]},
    )
    result = await (await supervisor.start_run(spec)).result()
    assert (result.state, result.exit_code) == (RunState.FAILED, 3)
    status = await supervisor.get_run(spec.run_id).status()
    assert status.approvals == []
    assert status.last_attempt is not None and status.last_attempt.tail[-1] == "done"


@pytest.mark.parametrize(("on_expiry", "removed"), [("reject", False), ("approve", True)])
async def test_an_unanswered_prompt_expires_with_the_configured_outcome(
    supervisor: Supervisor, settings: Settings, run_id, tmp_path: Path,
    on_expiry: str, removed: bool,
) -> None:
    target = tmp_path / "f"
    target.touch()
    spec = settings.run_spec(
        run_id=run_id("expire"), argv=["rm", "-i", str(target)],
        overrides={
            "prompts": [r"remove .*\?"],
            "approval_timeout": timedelta(seconds=1),
            "approval_on_expiry": on_expiry,
        },
    )
    handle = await supervisor.start_run(spec)
    result = await handle.result()
    status = await handle.status()
    assert result.state is RunState.SUCCEEDED, (result, status.last_attempt, status.audit)
    assert [a.state for a in status.approvals] == [ApprovalState.EXPIRED]
    assert target.exists() is not removed


async def test_a_tool_waiting_at_its_prompt_is_never_hung_and_heartbeats_flow(
    supervisor: Supervisor, settings: Settings, run_id, tmp_path: Path
) -> None:
    target = tmp_path / "f"
    target.touch()
    spec = settings.run_spec(
        run_id=run_id("hang"), argv=["rm", "-i", str(target)],
        overrides={"prompts": [r"remove .*\?"], "hang_timeout": timedelta(seconds=1)},
    )
    handle = await supervisor.start_run(spec)
    record = await pending_prompt(supervisor, handle)

    async def beating_well_past_the_hang_timeout() -> bool:
        live = (await handle.status()).live
        return bool(
            live is not None
            and live.last_heartbeat_at is None  # rm never beats: these are the worker's
            and live.waiting_keys == [record.key]
            and (await handle._handle.describe()).raw_description.pending_activities[0]
            .last_heartbeat_time.ToDatetime(tzinfo=record.requested_at.tzinfo)
            > record.requested_at + 3 * spec.hang_timeout  # type: ignore[operator]
        )

    await eventually(beating_well_past_the_hang_timeout, what="3 hang timeouts at the prompt")
    await supervisor.decide(record.approval_id, approve=True, by="dave")
    assert (await handle.result()).state is RunState.SUCCEEDED
    assert not target.exists()


async def test_the_run_timeout_still_applies_at_a_prompt_and_cancels_its_approval(
    supervisor: Supervisor, settings: Settings, run_id, tmp_path: Path
) -> None:
    target = tmp_path / "f"
    target.touch()
    spec = settings.run_spec(
        run_id=run_id("timeout"), argv=["rm", "-i", str(target)],
        overrides={"prompts": [r"remove .*\?"], "timeout": timedelta(seconds=3)},
    )
    handle = await supervisor.start_run(spec)
    await pending_prompt(supervisor, handle)
    result = await handle.result()
    assert result.state is RunState.TIMED_OUT
    status = await handle.status()
    assert [a.state for a in status.approvals] == [ApprovalState.CANCELLED]
    assert target.exists()


@pytest.mark.parametrize("approve", [True, False])
async def test_the_cli_as_a_new_user_runs_it(
    supervisor: Supervisor, settings: Settings, tmp_path: Path, approve: bool
) -> None:
    """`run --prompt ... -- rm -i FILE`, `approvals`, then `approve` or `reject`, as in the guide."""
    config = write_config(settings, tmp_path / "supervision.yaml")
    target = tmp_path / "FILE"
    target.write_text("data\n")
    started = await invoke(
        config, "run", "--detach", "--cwd", str(tmp_path), "--prompt", r"remove .*\?",
        "--", "rm", "-i", "FILE",
    )
    assert started.exit_code == 0, started.output
    run = started.stdout.strip()

    async def listed() -> str | None:
        shown = await invoke(config, "approvals")
        line = next((ln for ln in shown.stdout.splitlines() if ln.startswith(f"{run}/")), None)
        return line if line and "rm: remove regular file 'FILE'?" in line else None

    approval = (await eventually(listed, what="the prompt in `toolwarden approvals`")).split()[0]
    verb = ["approve", approval] if approve else ["reject", approval, "--reason", "keep"]
    decided = await invoke(config, *verb)
    assert decided.exit_code == 0, decided.output
    assert (await supervisor.get_run(run).result()).state is RunState.SUCCEEDED
    assert target.exists() is not approve
