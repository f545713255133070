"""Issue 13's "Done when", as a new user runs it: `toolwarden up`, then the CLI in a shell.

Every command is a real process: one `toolwarden up` (the embedded dev server and a worker, on
free ports, with its own TOOLWARDEN_HOME) shared by the module, and each `toolwarden run
--detach`, `approvals`, `approve`, `reject` and `show` started in a project directory, as a
user types them. Claude is the real binary (.agents-cli) against the scripted model API of
tests/agents/model_api.py; `rm -i` is the real one on a pseudo-terminal.

- claude: `run --detach --agent claude -- claude -p "clean the build"` lists `Bash: rm -rf
  build` under `approvals` while no claude process lives; `approve` makes it run and the run
  succeed; a second run, rejected, leaves `build` in place.
- `run --prompt 'remove .*\\?' -- rm -i FILE`: the prompt is an approval; approve removes the
  file, reject keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.agents.conftest import AGENTS_BIN, agent_binary
from tests.agents.model_api import ModelAPI, Script
from tests.support import eventually, free_port

TOOLWARDEN = str(Path(sys.executable).parent / "toolwarden")
UP_READY = "toolwarden is up."

pytestmark = pytest.mark.timeout(240)


@dataclass
class Up:
    """One `toolwarden up` and what a user's shell needs to talk to it."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path
    model_api: ModelAPI

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def claude_processes(self) -> list[str]:
        """Command lines of claude (or its hook) among everything `up` started."""
        found = []
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                argv = child.cmdline()
                name = child.name()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if "claude" in name or any(Path(arg).name in ("claude", "claude.exe") for arg in argv):
                found.append(" ".join(argv))
        return found


def _stop(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    try:
        left = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        left = []
    process.send_signal(signal.SIGTERM)  # as Ctrl-C: drain the worker, stop the server
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for child in left:  # nothing `up` started outlives it, even when it was killed
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    if agent_binary("claude") is None:
        pytest.skip("the claude binary is not installed: npm install --prefix .agents-cli "
                    "@anthropic-ai/claude-code (as .ci/run does)")
    base = tmp_path_factory.mktemp("walk")
    (base / "agent-home").mkdir()
    api = ModelAPI(Script()).start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWARDEN_")}
    env.update(
        TOOLWARDEN_HOME=str(base / "toolwarden-home"),
        TOOLWARDEN_SERVER__PORT=str(port),
        TOOLWARDEN_SERVER__UI_PORT=str(free_port()),
        TOOLWARDEN_TEMPORAL__ADDRESS=f"127.0.0.1:{port}",
        TOOLWARDEN_WORKER__HEALTH_ADDRESS=f"127.0.0.1:{free_port()}",
        TOOLWARDEN_WORKER__SDK_METRICS_ADDRESS="",
        # What the user's shell has for claude: its API (here the scripted one) and key, and
        # `claude` on PATH. Tools start in the worker's environment, so `up` gets them.
        PATH=os.pathsep.join([str(AGENTS_BIN), env.get("PATH", os.defpath)]),
        HOME=str(base / "agent-home"),
        ANTHROPIC_BASE_URL=api.base_url,
        ANTHROPIC_API_KEY="sk-ant-test-dummy",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
    )
    log = base / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [TOOLWARDEN, "up"], cwd=base, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT,
        )
    session = Up(process, env, log, api)
    try:
        deadline = time.monotonic() + 120
        while UP_READY not in session.output():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"toolwarden up did not come up:\n{session.output()}")
            time.sleep(0.05)  # polling the banner under a deadline, not waiting for time
        yield session
    finally:
        _stop(process)
        api.stop()
    assert "Traceback" not in session.output(), session.output()


async def toolwarden(up: Up, cwd: Path, *args: str, code: int | None = 0) -> str:
    """Run one `toolwarden ...` as a user's shell does; its stdout."""
    done = await asyncio.to_thread(
        subprocess.run, [TOOLWARDEN, *args], cwd=cwd, env=up.env, capture_output=True,
        text=True, timeout=120, check=False,
    )
    if code is not None:
        assert done.returncode == code, f"toolwarden {' '.join(args)}: {done.returncode}\n{done.stderr}"
    return done.stdout


async def pending(up: Up, cwd: Path, run_id: str) -> dict[str, Any]:
    """The run's one pending approval, once `toolwarden approvals` lists it."""

    async def listed() -> dict[str, Any] | None:
        rows = json.loads(await toolwarden(up, cwd, "approvals", "--json"))["approvals"]
        mine = [row["approval"] for row in rows if row["approval"]["run_id"] == run_id]
        return mine[0] if mine else None

    found: dict[str, Any] = await eventually(listed, timeout=120, what=f"{run_id} in approvals")
    return found


async def status(up: Up, cwd: Path, run_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(await toolwarden(up, cwd, "show", run_id, "--json"))
    return shown


async def ended(up: Up, cwd: Path, run_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        shown = await status(up, cwd, run_id)
        return shown if shown["ended_at"] else None

    found: dict[str, Any] = await eventually(check, timeout=120, what=f"{run_id} ended")
    return found


def field(shown: str, name: str) -> str:
    """One `name  value` line of `toolwarden show`'s human output."""
    (line,) = [line for line in shown.splitlines() if line.split(" ", 1)[0] == name]
    return line.split(None, 1)[1]


def project(tmp_path: Path) -> Path:
    work = tmp_path / "project"
    (work / "build").mkdir(parents=True)
    (work / "build" / "out.o").write_text("object\n")
    return work


async def start_claude(up: Up, work: Path) -> tuple[str, dict[str, Any]]:
    """`toolwarden run --detach --agent claude`; the run id and its approval, once parked."""
    run_id = (
        await toolwarden(up, work, "run", "--detach", "--agent", "claude", "--",
                         "claude", "-p", "clean the build")
    ).strip()
    approval = await pending(up, work, run_id)
    assert approval["summary"] == "Bash: rm -rf build"
    table = await toolwarden(up, work, "approvals")
    assert approval["approval_id"] in table and "Bash: rm -rf build" in table

    async def parked() -> bool:  # the deferred call's claude has exited: nothing holds the wait
        shown = await status(up, work, run_id)
        last = shown["last_attempt"] or {}
        return (shown["state"], shown["live"], last.get("outcome")) == (
            "waiting_approval", None, "awaiting_decision"
        )

    await eventually(parked, timeout=120, what="claude exited with the call deferred")
    assert field(await toolwarden(up, work, "show", run_id), "last_attempt") == "1 awaiting_decision"
    assert up.claude_processes() == []
    assert (work / "build" / "out.o").exists()  # nothing ran while it waited
    return run_id, approval


async def test_claude_approved_runs_the_command(up: Up, tmp_path: Path) -> None:
    work = project(tmp_path)
    run_id, approval = await start_claude(up, work)
    assert up.claude_processes() == []  # still none, however long the person takes

    said = await toolwarden(up, work, "approve", approval["approval_id"])
    assert said.startswith(f"{approval['approval_id']} approved by ")
    shown = await ended(up, work, run_id)
    assert (shown["state"], shown["exit_code"], shown["attempt"]) == ("succeeded", 0, 2)
    assert not (work / "build").exists()

    human = await toolwarden(up, work, "show", run_id)
    assert field(human, "command") == "claude -p 'clean the build'"
    assert field(human, "cwd") == str(work)
    assert field(human, "agent_session") == shown["last_attempt"]["agent_session"]
    (row,) = [line for line in human.splitlines() if line.startswith(approval["approval_id"])]
    assert "approved" in row and "Bash: rm -rf build" in row
    assert "could not handle it" not in up.output()  # the deferred call's channel closed quietly


async def test_claude_rejected_leaves_the_build(up: Up, tmp_path: Path) -> None:
    work = project(tmp_path)
    run_id, approval = await start_claude(up, work)

    said = await toolwarden(up, work, "reject", approval["approval_id"], "--reason", "keep the build")
    assert said.startswith(f"{approval['approval_id']} rejected by ")
    shown = await ended(up, work, run_id)
    assert (shown["state"], shown["exit_code"]) == ("succeeded", 0)  # claude's own end
    assert (work / "build" / "out.o").exists()
    assert any("keep the build" in text for text in up.model_api.tool_results())
    (record,) = shown["approvals"]
    assert (record["state"], record["reason"]) == ("rejected", "keep the build")


@pytest.mark.parametrize("approve", [True, False], ids=["approve", "reject"])
async def test_rm_i_prompt_is_an_approval(up: Up, tmp_path: Path, approve: bool) -> None:
    work = tmp_path / "files"
    work.mkdir()
    (work / "notes.txt").write_text("keep me?\n")
    run_id = (
        await toolwarden(up, work, "run", "--detach", "--prompt", r"remove .*\?", "--",
                         "rm", "-i", "notes.txt")
    ).strip()
    approval = await pending(up, work, run_id)
    assert approval["summary"] == "rm: remove regular file 'notes.txt'?"
    assert "rm: remove regular file 'notes.txt'?" in await toolwarden(up, work, "approvals")
    assert (work / "notes.txt").exists()

    if approve:
        said = await toolwarden(up, work, "approve", approval["approval_id"])
    else:
        said = await toolwarden(up, work, "reject", approval["approval_id"], "--reason", "keep it")
    assert said.startswith(f"{approval['approval_id']} {'approved' if approve else 'rejected'} by ")
    shown = await ended(up, work, run_id)
    assert (shown["state"], shown["exit_code"]) == ("succeeded", 0)  # rm -i exits 0 either way
    assert (work / "notes.txt").exists() is not approve
    answer = "y" if approve else "n"
    assert shown["last_attempt"]["tail"][-1] == f"rm: remove regular file 'notes.txt'? {answer}"
