"""`toolwarden beat` and `toolwarden ask` against a real ToolChannel with a scripted supervisor."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from tests.harness import DECIDED_AT, Harness
from tests.support import eventually
from toolwarden import protocol
from toolwarden.channel import ToolChannel
from toolwarden.cli.toolside import ask, beat, default_key
from toolwarden.durations import duration_seconds
from toolwarden.models import ApprovalState

ROOT = Path(__file__).resolve().parents[2]
ASK_TOOL = ROOT / "tests" / "tools" / "ask_tool.sh"
DEADLINE = 20.0



@dataclass
class Env:
    channel: ToolChannel
    harness: Harness

    @property
    def vars(self) -> dict[str, str | None]:
        return {
            protocol.ENV_SOCKET: str(self.channel.path),
            protocol.ENV_RUN_ID: "run-3",
            protocol.ENV_ATTEMPT: "1",
            protocol.ENV_RESUME: None,
        }

    async def invoke(self, command: click.Command, args: list[str], **env: str | None) -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(
            runner.invoke, command, args, env={**self.vars, **env}, catch_exceptions=False
        )


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="twk-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def env(sock_dir: Path) -> AsyncIterator[Env]:
    harness = Harness(run_id="run-3")
    channel = ToolChannel(
        sock_dir / "s.sock",
        run_id="run-3",
        attempt=1,
        heartbeat_interval=0.2,
        on_heartbeat=harness.on_heartbeat,
        on_request=harness.on_request,
    )
    await channel.start()
    yield Env(channel, harness)
    await channel.close()


UNSUPERVISED: dict[str, str | None] = {
    protocol.ENV_SOCKET: None,
    protocol.ENV_RESUME: None,
}


def test_duration_seconds() -> None:
    assert duration_seconds("30s") == 30
    assert duration_seconds("10m") == 600
    assert duration_seconds("2h") == 7200
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds("1d") == 86400
    assert duration_seconds("250ms") == 0.25
    assert duration_seconds("45") == 45
    with pytest.raises(ValueError, match="invalid duration"):
        duration_seconds("soon")


def test_default_key_is_stable_and_valid() -> None:
    key = default_key("Deploy to prod?")
    assert key == default_key("Deploy to prod?")
    assert key.startswith("deploy-to-prod-") and len(key) == len("deploy-to-prod-") + 8
    assert key != default_key("Deploy to staging?")
    for summary in ("???", "x" * 500, "Ünïcode only ✓", "-leading"):
        assert protocol.KEY_PATTERN.match(default_key(summary)), summary


# -- beat ------------------------------------------------------------------------------------


def test_beat_unsupervised_is_a_no_op() -> None:
    result = CliRunner().invoke(beat, ["--progress", "0.5"], env=UNSUPERVISED)
    assert (result.exit_code, result.output) == (0, "")


async def test_beat_sends_one_heartbeat(env: Env) -> None:
    result = await env.invoke(beat, ["--progress", "0.4", "--message", "compiling"])
    assert result.exit_code == 0, result.output
    await eventually(lambda: env.harness.heartbeats == [(0.4, "compiling")])
    result = await env.invoke(beat, [])
    assert result.exit_code == 0
    await eventually(lambda: len(env.harness.heartbeats) == 2)
    assert env.harness.heartbeats[-1] == (None, None)


async def test_beat_truncates_a_long_message(env: Env) -> None:
    result = await env.invoke(beat, ["--message", "y" * 3000])
    assert result.exit_code == 0
    await eventually(lambda: env.harness.heartbeats == [(None, "y" * 1000)])


def test_beat_rejects_out_of_range_progress() -> None:
    result = CliRunner().invoke(beat, ["--progress", "1.5"], env=UNSUPERVISED)
    assert result.exit_code == 2
    assert "--progress" in result.stderr


def test_beat_with_the_supervisor_gone_warns_and_succeeds(sock_dir: Path) -> None:
    result = CliRunner().invoke(
        beat, ["--progress", "0.1"], env={protocol.ENV_SOCKET: str(sock_dir / "gone.sock")}
    )
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "supervisor unreachable" in result.stderr


# -- ask -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "approved", "code"),
    [
        (ApprovalState.APPROVED, True, 0),
        (ApprovalState.REJECTED, False, 1),
        (ApprovalState.EXPIRED, False, 2),
        (ApprovalState.EXPIRED, True, 0),
        (ApprovalState.CANCELLED, False, 3),
    ],
)
async def test_ask_exit_codes(env: Env, outcome: ApprovalState, approved: bool, code: int) -> None:
    task = asyncio.create_task(
        env.invoke(
            ask,
            [
                "Deploy?",
                "--key",
                "deploy",
                "--details",
                '{"env":"prod"}',
                "--timeout",
                "10m",
                "--on-expiry",
                "approve",
            ],
        )
    )
    await eventually(lambda: len(env.harness.asks) == 1)
    (request,) = env.harness.asks
    assert (request.key, request.summary, request.details) == ("deploy", "Deploy?", {"env": "prod"})
    assert request.timeout is not None and request.timeout.total_seconds() == 600
    assert request.on_expiry == "approve"
    env.harness.decide("deploy", outcome, approved, response={"branch": "main"})
    result = await task
    assert result.exit_code == code, result.output
    assert json.loads(result.stdout) == {"branch": "main"}
    assert result.stderr == ""


async def test_ask_prints_null_without_a_response_and_json_on_request(env: Env) -> None:
    env.harness.decide("k1", ApprovalState.REJECTED, False, by="bob", reason="no")
    result = await env.invoke(ask, ["Go?", "--key", "k1"])
    assert (result.exit_code, result.stdout.strip()) == (1, "null")
    result = await env.invoke(ask, ["Go?", "--key", "k1", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "key": "k1",
        "outcome": "rejected",
        "approved": False,
        "by": "bob",
        "reason": "no",
        "response": None,
        "decided_at": DECIDED_AT.isoformat(),
    }


async def test_ask_default_key_is_derived_from_the_summary(env: Env) -> None:
    env.harness.decide(default_key("Rotate the keys?"), ApprovalState.APPROVED, True)
    result = await env.invoke(ask, ["Rotate the keys?"])
    assert result.exit_code == 0, result.output
    assert [a.key for a in env.harness.asks] == [default_key("Rotate the keys?")]


async def test_ask_details_from_a_file(env: Env, sock_dir: Path) -> None:
    details = sock_dir / "details.json"
    details.write_text(json.dumps({"files": ["a", "b"]}))
    env.harness.decide("f", ApprovalState.APPROVED, True)
    result = await env.invoke(ask, ["Files?", "--key", "f", "--details", f"@{details}"])
    assert result.exit_code == 0, result.output
    assert env.harness.asks[0].details == {"files": ["a", "b"]}


async def test_ask_exit_and_resume(env: Env) -> None:
    result = await env.invoke(ask, ["Later?", "--key", "later", "--exit-and-resume"])
    assert result.exit_code == protocol.EXIT_AWAIT_DECISION
    assert result.stdout == ""
    assert "run-3/later is pending" in result.stderr
    resume = {"later": {"outcome": "approved", "approved": True, "response": 7}}
    result = await env.invoke(
        ask,
        ["Later?", "--key", "later", "--exit-and-resume"],
        **{protocol.ENV_RESUME: json.dumps(resume)},
    )
    assert (result.exit_code, result.stdout.strip()) == (0, "7")
    assert len(env.harness.asks) == 1


async def test_ask_reports_a_refused_request(env: Env) -> None:
    env.harness.raises = RuntimeError("run already finished")
    result = await env.invoke(ask, ["Go?", "--key", "k"])
    assert result.exit_code == 4
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "run already finished" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Go?"], "not supervised"),
        (["Go?", "--details", "{broken"], "--details is not valid JSON"),
        (["Go?", "--details", "@/nonexistent/details.json"], "cannot read --details file"),
        (["Go?", "--timeout", "soon"], "--timeout"),
        (["Go?", "--on-expiry", "maybe"], "--on-expiry"),
        (["Go?", "--key", "not a key"], "invalid approval key"),
        (["x" * 1001], "summary"),
        ([], "SUMMARY"),
    ],
)
def test_ask_errors_exit_4_with_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(ask, args, env=UNSUPERVISED)
    assert result.exit_code == 4, result.output
    assert result.stdout == ""
    assert message in result.stderr
    assert "Traceback" not in result.output


# -- real processes --------------------------------------------------------------------------


def _process_env(env: Env) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWARDEN_")}
    base.update({k: v for k, v in env.vars.items() if v is not None})
    return base


async def test_ask_as_a_real_process(env: Env) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from toolwarden.cli.toolside import ask; ask(prog_name='toolwarden ask')",
        "Ship it?",
        "--key",
        "ship",
        env=_process_env(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await eventually(lambda: env.channel.waiting_keys == ["ship"])
    env.harness.decide("ship", ApprovalState.APPROVED, True, response={"ok": True})
    out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode == 0, err
    assert json.loads(out) == {"ok": True}


def _entry_point_has_ask() -> bool:
    exe = shutil.which("toolwarden") or str(Path(sys.executable).parent / "toolwarden")
    if not Path(exe).exists():
        return False
    result = subprocess.run([exe, "ask", "--help"], capture_output=True, timeout=60)
    return result.returncode == 0


async def test_ask_tool_script(env: Env) -> None:
    if not await asyncio.to_thread(_entry_point_has_ask):
        pytest.skip("the toolwarden entry point does not register `ask` yet")
    process_env = _process_env(env)
    process_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{process_env['PATH']}"
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(ASK_TOOL),
        "Drop the table?",
        "drop-table",
        env=process_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await eventually(lambda: env.channel.waiting_keys == ["drop-table"])
    env.harness.decide("drop-table", ApprovalState.REJECTED, False, response={"why": "no"})
    out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode == 1, err
    assert out.decode().splitlines() == ['RESPONSE {"why": "no"}', "EXIT 1"]
