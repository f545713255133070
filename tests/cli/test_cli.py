"""The CLI as users run it: CliRunner for behaviour, one real console-script call."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from tests.support import eventually, tool
from toolwarden.cli.main import cli
from toolwarden.client import Supervisor, os_user
from toolwarden.config import ApprovalSettings, Settings


def write_config(settings: Settings, path: Path, **extra: object) -> Path:
    data = {
        "home": str(settings.home),
        "temporal": {
            "address": settings.temporal.address,
            "task_queue": settings.temporal.task_queue,
        },
        **extra,
    }
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def config_file(settings: Settings, tmp_path: Path) -> Path:
    return write_config(settings, tmp_path / "supervision.yaml")


async def invoke(config: Path | None, *args: str) -> Result:
    """Run the CLI in a thread: it runs its own event loop while the worker uses ours."""
    prefix = ["--config", str(config)] if config else []
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli, [*prefix, *args], catch_exceptions=False)


pytestmark = pytest.mark.usefixtures("worker")


async def test_run_streams_output_and_exits_zero(config_file: Path) -> None:
    result = await invoke(config_file, "run", "--", "sh", "-c", "sleep 1; echo hi")
    assert result.exit_code == 0, result.output
    assert "hi\n" in result.stdout


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["sh", "-c", "exit 3"], 3),
        (["no-such-tool-abc"], 127),
        (["--hang-timeout", "1", "--", "sleep", "3600"], 124),
        (["--timeout", "1", "--", "sleep", "3600"], 124),
    ],
)
async def test_run_exit_codes(config_file: Path, argv: list[str], code: int) -> None:
    args = argv if "--" in argv else ["--", *argv]
    result = await invoke(config_file, "run", *args)
    assert result.exit_code == code, result.output


async def test_detach_list_show_logs_cancel(config_file: Path, supervisor: Supervisor) -> None:
    done = await invoke(config_file, "run", "--id", "cli-done-1", "--detach", "--", "echo", "out")
    assert done.exit_code == 0 and done.stdout.strip() == "cli-done-1"
    await supervisor.get_run("cli-done-1").result()
    running = await invoke(
        config_file, "run", "--detach", "--name", "sleepy", "--", "sleep", "3600"
    )
    run_id = running.stdout.strip()

    async def listed() -> dict[str, str]:
        result = await invoke(config_file, "list", "--json")
        rows = json.loads(result.stdout)["runs"]
        return {r["run_id"]: r["state"] for r in rows if r["state"] in ("running", "succeeded")}

    states = await eventually(lambda: _both(listed(), run_id))
    assert states["cli-done-1"] == "succeeded"
    table = await invoke(config_file, "list", "--tool", "sleepy")
    assert run_id in table.stdout and "STATE" in table.stdout

    shown = await invoke(config_file, "show", "cli-done-1", "--json")
    status = json.loads(shown.stdout)
    assert status["state"] == "succeeded" and status["last_attempt"]["pid"] > 0
    human = await invoke(config_file, "show", "cli-done-1")
    assert "retry_count" in human.stdout and "web_ui" in human.stdout

    logs = await invoke(config_file, "logs", "cli-done-1")
    assert logs.stdout == "out\n"

    cancelled = await invoke(config_file, "cancel", run_id, "--reason", "test")
    assert cancelled.exit_code == 0
    assert (await supervisor.get_run(run_id).result()).state.value == "cancelled"
    again = await invoke(config_file, "cancel", run_id)
    assert again.exit_code == 1 and "already ended" in again.stderr


async def _both(listing, run_id: str):  # type: ignore[no-untyped-def]
    states = await listing
    return states if "cli-done-1" in states and run_id in states else None


async def test_approvals_approve_and_reject(
    config_file: Path, supervisor: Supervisor, tmp_path: Path
) -> None:
    # cli-appr-1 lives on after its approval until `gate` exists, so the late reject below
    # reaches the running workflow and is audited, however slow the machine.
    gate = tmp_path / "gate"
    then_wait = shlex.join([*tool("wait_for_file.py"), str(gate)])
    for run_id in ("cli-appr-1", "cli-appr-2"):
        ask = shlex.join([*tool("approval_tool.py"), "step", "Risky step"])
        script = f"{ask} && {then_wait}" if run_id == "cli-appr-1" else ask
        await invoke(config_file, "run", "--id", run_id, "--detach", "--", "sh", "-c", script)

    async def both_pending() -> list[dict[str, object]] | None:
        result = await invoke(config_file, "approvals", "--json")
        rows = [
            r for r in json.loads(result.stdout)["approvals"]
            if r["approval"]["run_id"].startswith("cli-appr-")
        ]
        return rows if len(rows) >= 2 else None

    rows = await eventually(both_pending)
    assert {r["approval"]["approval_id"] for r in rows} == {"cli-appr-1/step", "cli-appr-2/step"}
    requested = [r["approval"]["requested_at"] for r in rows]
    assert requested == sorted(requested)  # oldest first
    table = await invoke(config_file, "approvals")
    assert "EXPIRES IN" in table.stdout and "Risky step" in table.stdout

    ok = await invoke(
        config_file, "approve", "cli-appr-1/step", "--reason", "ok", "--by", "alice",
        "--response", '{"branch": "main"}',
    )
    assert ok.exit_code == 0 and "approved by alice" in ok.stdout
    late = await invoke(config_file, "reject", "cli-appr-1/step", "--reason", "late")
    assert late.exit_code == 1 and "already approved by alice" in late.stderr

    no_reason = await invoke(config_file, "reject", "cli-appr-2/step")
    assert no_reason.exit_code == 2
    bad_json = await invoke(config_file, "approve", "cli-appr-2/step", "--response", "{nope")
    assert bad_json.exit_code == 2
    rejected = await invoke(config_file, "reject", "cli-appr-2/step", "--reason", "no")
    assert rejected.exit_code == 0
    gate.touch()
    assert (await supervisor.get_run("cli-appr-1").result()).state.value == "succeeded"
    assert (await supervisor.get_run("cli-appr-2").result()).state.value == "failed"
    shown = await invoke(config_file, "show", "cli-appr-1")
    assert "approvals:" in shown.stdout and "decision_refused" in shown.stdout

    unknown = await invoke(config_file, "approve", "no-such-run/step")
    assert unknown.exit_code == 1 and "unknown run" in unknown.stderr


async def test_approver_allowlist(settings: Settings, tmp_path: Path) -> None:
    config = write_config(settings, tmp_path / "a.yaml", approvals={"approvers": ["alice"]})
    result = await invoke(config, "approve", "x/y", "--by", "mallory")
    assert result.exit_code == 1
    assert "mallory is not an allowed approver" in result.stderr


async def test_the_cli_decides_as_the_os_user_while_an_allowlist_applies(
    settings: Settings, tmp_path: Path, supervisor: Supervisor
) -> None:
    me = os_user()
    guarded = write_config(
        settings, tmp_path / "guarded.yaml", approvals={"approvers": [me, "alice"]}
    )
    await invoke(guarded, "run", "--id", "cli-asuser-1", "--detach", "--",
                 *tool("approval_tool.py"), "k", "Guarded step")
    await eventually(lambda: pending_keys(supervisor, "cli-asuser-1"))
    posing = await invoke(guarded, "approve", "cli-asuser-1/k", "--by", "alice")
    assert posing.exit_code == 1
    assert posing.stderr.strip() == (
        f"error: {me} may not decide as alice: an approver allowlist applies, so a local "
        "decision is made as the OS user (drop --by)"
    )
    own = await invoke(guarded, "approve", "cli-asuser-1/k")
    assert own.exit_code == 0 and f"approved by {me}" in own.stdout

    # The run's own allowlist counts, even when this CLI's config has none.
    alice_only = settings.model_copy(update={"approvals": ApprovalSettings(approvers=["alice"])})
    spec = alice_only.run_spec(
        run_id="cli-asuser-2", argv=[*tool("approval_tool.py"), "k", "Guarded step"]
    )
    await Supervisor(supervisor.client, alice_only).start_run(spec)
    await eventually(lambda: pending_keys(supervisor, "cli-asuser-2"))
    open_config = write_config(settings, tmp_path / "open.yaml")
    posing = await invoke(open_config, "reject", "cli-asuser-2/k", "--by", "alice", "--reason", "x")
    assert posing.exit_code == 1
    assert f"{me} may not decide as alice" in posing.stderr
    assert len(posing.stderr.strip().splitlines()) == 1
    assert await pending_keys(supervisor, "cli-asuser-2") == ["k"]  # nothing changed
    await supervisor.get_run("cli-asuser-2").cancel()


async def pending_keys(supervisor: Supervisor, run_id: str) -> list[str]:
    return [a.key for a in (await supervisor.get_run(run_id).status()).pending_approvals]


async def test_unknown_run_is_one_line(config_file: Path) -> None:
    for args in (["show", "nope-123"], ["logs", "nope-123"], ["cancel", "nope-123"]):
        result = await invoke(config_file, *args)
        assert result.exit_code == 1
        assert result.stderr.strip() == "error: unknown run nope-123"


async def test_unreachable_server_is_one_line(settings: Settings, tmp_path: Path) -> None:
    config = tmp_path / "down.yaml"
    config.write_text(
        yaml.safe_dump({"home": str(tmp_path), "temporal": {"address": "127.0.0.1:1",
                                                            "connect_timeout": "2s"}})
    )
    result = await invoke(config, "list")
    assert result.exit_code == 1
    assert "does not answer at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.output


async def test_bad_flags_and_bad_config(tmp_path: Path) -> None:
    assert (await invoke(None, "run", "--retries", "-1", "--", "true")).exit_code == 2
    assert (await invoke(None, "run", "--timeout", "soon", "--", "true")).exit_code == 2
    assert (await invoke(None, "run", "--env", "NOEQUALS", "--", "true")).exit_code == 2
    bad_id = await invoke(None, "run", "--id", "bad id!", "--", "true")
    assert bad_id.exit_code == 2
    assert bad_id.stderr.strip() == (
        "error: invalid run: run_id: invalid run id 'bad id!': use letters, digits and . _ : - "
        "(at most 200)"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults:\n  hang_timout: 5s\n")
    result = await invoke(bad, "config", "show")
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("defaults.hang_timout: unknown key")
    missing = await invoke(tmp_path / "nope.yaml", "config", "show")
    assert missing.exit_code == 2 and "config file not found" in missing.stderr


async def test_config_show_is_the_effective_config(settings: Settings, tmp_path: Path) -> None:
    config = write_config(
        settings, tmp_path / "c.yaml", tools={"aider": {"hang_timeout": "600s", "retries": 2}}
    )
    result = await invoke(config, "config", "show")
    assert result.exit_code == 0
    shown = yaml.safe_load(result.stdout)
    assert shown["tools"]["aider"]["hang_timeout"] == "600s"
    assert shown["temporal"]["task_queue"] == settings.temporal.task_queue


async def test_profile_by_executable_name(settings: Settings, tmp_path: Path, supervisor) -> None:
    config = write_config(
        settings, tmp_path / "p.yaml", tools={"sleep": {"hang_timeout": "1s"}}
    )
    result = await invoke(config, "run", "--", "sleep", "3600")
    assert result.exit_code == 124
    unknown = await invoke(config, "run", "--profile", "nope", "--", "true")
    assert unknown.exit_code == 2 and "unknown profile 'nope'" in unknown.stderr


async def test_installed_console_script(settings: Settings, tmp_path: Path) -> None:
    script = shutil.which("toolwarden", path=str(Path(sys.executable).parent))
    assert script is not None
    env = {**os.environ, "TOOLWARDEN_HOME": str(settings.home),
           "TOOLWARDEN_TEMPORAL__ADDRESS": settings.temporal.address,
           "TOOLWARDEN_TEMPORAL__TASK_QUEUE": settings.temporal.task_queue}
    completed = await asyncio.to_thread(
        subprocess.run, [script, "run", "--", "sh", "-c", "echo hi; exit 5"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 5, completed.stderr
    assert completed.stdout == "hi\n"


async def test_show_without_a_worker_is_one_line(
    settings: Settings, tmp_path: Path, client
) -> None:
    lonely = settings.model_copy(
        update={"temporal": settings.temporal.model_copy(update={"task_queue": "nobody-polls"})}
    )
    await Supervisor(client, lonely).start_run(lonely.run_spec(run_id="no-worker-1", argv=["true"]))
    config = write_config(lonely, tmp_path / "lonely.yaml")
    result = await invoke(config, "show", "no-worker-1")
    assert result.exit_code == 1
    assert "no worker answers for run no-worker-1" in result.stderr
    assert "Traceback" not in result.output
