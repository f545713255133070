"""`toolwarden run` starts the tool in the caller's directory; `show` quotes the command.

The CLI runs as the installed console script in a child process started in a directory of the
test's choosing, against a worker in this process (whose own directory is elsewhere).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli import write_config
from toolwarden.client import Supervisor
from toolwarden.config import Settings

TOOLWARDEN = str(Path(sys.executable).parent / "toolwarden")
PRINT_CWD = ["sh", "-c", 'pwd; echo "$1"', "sh", "a b"]

pytestmark = pytest.mark.usefixtures("worker")


async def toolwarden(config: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [TOOLWARDEN, "--config", str(config), *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.fixture
def config(settings: Settings, tmp_path: Path) -> Path:
    return write_config(settings, tmp_path / "supervision.yaml")


def field(shown: str, name: str) -> str:
    (line,) = [line for line in shown.splitlines() if line.split(" ", 1)[0] == name]
    return line.split(None, 1)[1]


async def test_the_tool_runs_where_run_was_called(config: Path, tmp_path: Path) -> None:
    here = tmp_path / "caller dir"
    here.mkdir()
    assert Path.cwd() != here
    ran = await toolwarden(config, here, "run", "--id", "cwd-here-1", "--", *PRINT_CWD)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"{here}\na b\n"

    shown = await toolwarden(config, here, "show", "cwd-here-1")
    assert shown.returncode == 0, shown.stderr
    assert field(shown.stdout, "command") == "sh -c 'pwd; echo \"$1\"' sh 'a b'"
    assert field(shown.stdout, "cwd") == str(here)


async def test_cwd_wins_and_is_made_absolute(config: Path, tmp_path: Path) -> None:
    (tmp_path / "here").mkdir()
    (tmp_path / "there").mkdir()
    ran = await toolwarden(config, tmp_path / "here", "run", "--cwd", "../there", "--", "pwd")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"{tmp_path / 'there'}\n"


async def test_a_relative_executable_is_found_in_the_callers_directory(
    config: Path, tmp_path: Path
) -> None:
    script = tmp_path / "deploy.sh"
    script.write_text("#!/bin/sh\necho deployed from \"$(pwd)\"\n")
    script.chmod(0o755)
    ran = await toolwarden(config, tmp_path, "run", "--", "./deploy.sh")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"deployed from {tmp_path}\n"


async def test_the_python_api_keeps_the_workers_directory(
    config: Path, tmp_path: Path, settings: Settings, supervisor: Supervisor
) -> None:
    spec = settings.run_spec(run_id="cwd-api-1", argv=["pwd"])
    assert spec.cwd is None
    result = await (await supervisor.start_run(spec)).result()
    assert result.exit_code == 0
    logs = await toolwarden(config, tmp_path, "logs", "cwd-api-1")
    assert logs.stdout == f"{os.getcwd()}\n"
    shown = await toolwarden(config, tmp_path, "show", "cwd-api-1")
    assert field(shown.stdout, "cwd") == "(the worker's)"


async def test_a_removed_current_directory_is_one_line(config: Path, tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f'cd "{gone}" && rmdir "{gone}" && exec "$@"'
    ran = await asyncio.to_thread(
        subprocess.run, ["sh", "-c", script, "sh", TOOLWARDEN, "--config", str(config), "run", "--", "true"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert ran.returncode == 2
    assert ran.stderr.startswith("error: cannot tell the current directory (")
    assert ran.stderr.rstrip().endswith("pass --cwd DIR") and ran.stderr.count("\n") == 1
