"""Hang detection by CPU: a silent busy tool is alive, a silent idle one is hung.

Real processes throughout: `GroupCpu` and `supervise` directly, then whole runs through a real
worker with `liveness` from a tool profile and from the run.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support import eventually, tool
from toolwarden.client import Supervisor
from toolwarden.config import ConfigError, Settings, ToolProfile, load_settings
from toolwarden.models import DEFAULT_LIVENESS, AttemptOutcome, Liveness, RunState
from toolwarden.process import GroupCpu, Launched, drain_output, kill_group, launch, supervise

BUSY_SECONDS = 4
HANG_TIMEOUT = 1.5


def busy_in_a_child(seconds: float) -> list[str]:
    """A shell that waits silently on a busy, silent child: only the group's CPU shows life."""
    return ["sh", "-c", f"{shlex.join(tool('busy_silent.py'))} {seconds}; exit 0"]


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[list[Launched]]:
    launched: list[Launched] = []
    yield launched
    for one in launched:
        await kill_group(one, 1.0)
        await drain_output(one)


async def start(argv: list[str], tmp_path: Path, started: list[Launched]) -> Launched:
    one = await launch(
        argv, cwd=None, env={"PATH": "/usr/bin:/bin"},
        stdout_path=tmp_path / f"{len(started)}.out", stderr_path=tmp_path / f"{len(started)}.err",
        log_cap_bytes=1000, tail_lines=5,
    )
    started.append(one)
    return one


async def test_group_cpu_sees_a_busy_member_and_not_a_sleeping_one(
    tmp_path: Path, started: list[Launched]
) -> None:
    busy = GroupCpu((await start(busy_in_a_child(60), tmp_path, started)).pgid)
    idle = GroupCpu((await start(["sleep", "60"], tmp_path, started)).pgid)
    idle.sample()
    busy_since, idle_since = busy.active_at, idle.active_at
    await eventually(lambda: busy.sample() > busy_since, what="CPU used by the busy child")
    assert idle.sample() == idle_since


async def supervised(launched: Launched, liveness: tuple[Liveness, ...]) -> AttemptOutcome:
    ending = await supervise(
        launched, timeout=60, hang_timeout=HANG_TIMEOUT, kill_grace=1, tick=0.25,
        last_tool_heartbeat=lambda: 0.0, waiting_for_person=lambda: False, on_tick=lambda: None,
        liveness=liveness,
    )
    return ending.outcome


CPU_ON = (Liveness.OUTPUT, Liveness.CPU, Liveness.HEARTBEAT)


@pytest.mark.parametrize(
    ("busy", "liveness", "expected"),
    [
        (True, CPU_ON, AttemptOutcome.SUCCEEDED),
        (False, CPU_ON, AttemptOutcome.HUNG),
        (True, DEFAULT_LIVENESS, AttemptOutcome.HUNG),
    ],
    ids=["busy-cpu-on", "idle-cpu-on", "busy-cpu-off"],
)
async def test_supervise_counts_cpu_only_when_asked(
    tmp_path: Path, started: list[Launched],
    busy: bool, liveness: tuple[Liveness, ...], expected: AttemptOutcome,
) -> None:
    argv = busy_in_a_child(BUSY_SECONDS) if busy else ["sleep", str(BUSY_SECONDS)]
    assert await supervised(await start(argv, tmp_path, started), liveness) is expected


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize(
    ("busy", "cpu", "expected"),
    [(True, True, RunState.SUCCEEDED), (False, True, RunState.HUNG), (True, False, RunState.HUNG)],
    ids=["busy-cpu-on", "idle-cpu-on", "busy-cpu-off"],
)
async def test_runs_take_liveness_from_the_profile(
    supervisor: Supervisor, settings: Settings, run_id, busy: bool, cpu: bool, expected: RunState
) -> None:
    settings.tools["compiler"] = ToolProfile(
        hang_timeout=timedelta(seconds=HANG_TIMEOUT),
        liveness=["output", "cpu"] if cpu else ["output"],
    )
    argv = busy_in_a_child(BUSY_SECONDS) if busy else ["sleep", str(BUSY_SECONDS)]
    spec = settings.run_spec(run_id=run_id("cpu"), argv=argv, profile="compiler")
    result = await (await supervisor.start_run(spec)).result()
    assert result.state is expected
    if expected is RunState.HUNG:
        signs = "output or cpu" if cpu else "output"
        assert result.error == f"no {signs} for {HANG_TIMEOUT:g}s"


def test_liveness_in_the_config_file_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "supervision.yaml"
    path.write_text(
        "defaults:\n  liveness: [output]\n"
        "tools:\n  make:\n    liveness: output, cpu, heartbeat\n"
    )
    settings = load_settings(path)
    assert settings.run_spec(run_id="r", argv=["ls"]).liveness == [Liveness.OUTPUT]
    assert settings.run_spec(run_id="r", argv=["make"]).liveness == list(CPU_ON)
    overridden = settings.run_spec(run_id="r", argv=["make"], overrides={"liveness": ["cpu"]})
    assert overridden.liveness == [Liveness.CPU]
    assert Settings().run_spec(run_id="r", argv=["ls"]).liveness == list(DEFAULT_LIVENESS)
    path.write_text("tools:\n  make:\n    liveness: output, cpus\n")
    with pytest.raises(ConfigError, match=r"tools\.make\.liveness\.1: Input should be"):
        load_settings(path)
    path.write_text("defaults:\n  liveness: []\n")
    with pytest.raises(ConfigError, match=r"defaults\.liveness: Value should have at least 1 item"):
        load_settings(path)


def test_cli_liveness_and_prompt_flags_reject_bad_values_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from toolwarden.cli.main import cli

    runner = CliRunner()
    for args, message in [
        (["--liveness", "output,cpus"], "unknown sign 'cpus' (use output, cpu, heartbeat)"),
        (["--liveness", ","], "name at least one sign"),
        (["--prompt", "remove (", "--prompt", "x"], "invalid pattern 'remove ('"),
    ]:
        result = runner.invoke(cli, ["run", *args, "--", sys.executable, "-c", "pass"])
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert "Traceback" not in result.output


def test_an_invalid_prompt_pattern_in_a_profile_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "supervision.yaml"
    path.write_text("tools:\n  rm:\n    prompts: ['remove (']\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == (
        f"config error in {path}: tools.rm.prompts: invalid prompt pattern "
        "'remove (': missing ), unterminated subpattern at position 7"
    )
