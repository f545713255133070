"""The tool-side library (toolwarden.tool), run in real subprocesses against a real ToolChannel."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import DECIDED_AT, Harness
from tests.support import eventually
from toolwarden import protocol, tool
from toolwarden.channel import ToolChannel
from toolwarden.models import ApprovalState

ROOT = Path(__file__).resolve().parent.parent
APPROVAL_TOOL = ROOT / "tests" / "tools" / "approval_tool.py"
BEAT_TOOL = ROOT / "tests" / "tools" / "beat_tool.py"
EXAMPLES = ROOT / "examples" / "tools"
DEADLINE = 20.0
INTERVAL = 0.2



@dataclass
class Supervisor:
    channel: ToolChannel
    harness: Harness

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWARDEN_")}
        env.update(
            {
                protocol.ENV_SOCKET: str(self.channel.path),
                protocol.ENV_RUN_ID: "run-7",
                protocol.ENV_ATTEMPT: "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    async def start(self, *args: str | Path, **env: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *[str(a) for a in args],
            env=self.env(**env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def decision_line(stdout: str, stderr: str = "") -> dict[str, Any]:
    lines = [x for x in stdout.splitlines() if x.startswith("DECISION ")]
    assert len(lines) == 1, f"stdout: {stdout!r} stderr: {stderr!r}"
    return json.loads(lines[0].removeprefix("DECISION "))  # type: ignore[no-any-return]


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="twt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def supervisor(sock_dir: Path) -> AsyncIterator[Supervisor]:
    harness = Harness()
    channel = ToolChannel(
        sock_dir / "s.sock",
        run_id="run-7",
        attempt=1,
        heartbeat_interval=INTERVAL,
        on_heartbeat=harness.on_heartbeat,
        on_request=harness.on_request,
    )
    await channel.start()
    yield Supervisor(channel, harness)
    await channel.close()


@pytest.fixture
def unsupervised(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (protocol.ENV_SOCKET, protocol.ENV_RESUME, protocol.ENV_RUN_ID):
        monkeypatch.delenv(name, raising=False)


# -- in-process: no supervisor ---------------------------------------------------------------


def test_import_pulls_in_neither_temporalio_nor_pydantic() -> None:
    code = textwrap.dedent(
        """
        import sys
        import toolwarden.tool, toolwarden.protocol, toolwarden.cli.toolside
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("temporalio", "pydantic", "pydantic_core"))
        print(heavy)
        sys.exit(1 if heavy else 0)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unsupervised(unsupervised: None) -> None:
    assert not tool.supervised()
    assert tool.resume_decisions() == {}
    with pytest.raises(tool.NotSupervisedError, match="TOOLWARDEN_SOCKET"):
        tool.request_approval("deploy", "Deploy?")
    with pytest.raises(tool.ApprovalError):  # NotSupervisedError is an ApprovalError
        tool.submit_approval("deploy", "Deploy?")


async def test_unsupervised_async(unsupervised: None) -> None:
    await tool.aheartbeat(0.5, "no-op")
    with pytest.raises(tool.NotSupervisedError):
        await tool.arequest_approval("deploy", "Deploy?")


def test_heartbeat_is_a_no_op_when_unsupervised() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWARDEN_")}
    code = (
        "import threading\nfrom toolwarden.tool import heartbeat\n"
        "for i in range(1000): heartbeat(i / 1000, 'x')\n"
        "print(threading.active_count())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=DEADLINE
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"  # no emitter thread was started


def test_arguments_are_checked_before_anything_else(unsupervised: None) -> None:
    with pytest.raises(ValueError, match="approval key"):
        tool.request_approval("not a key", "Deploy?")
    with pytest.raises(ValueError, match="summary"):
        tool.request_approval("deploy", "")
    with pytest.raises(ValueError, match="details"):
        tool.request_approval("deploy", "Deploy?", details="x" * 40000)
    with pytest.raises(ValueError, match="details are not JSON"):
        tool.request_approval("deploy", "Deploy?", details={1, 2})
    with pytest.raises(ValueError, match="on_expiry"):
        tool.request_approval("deploy", "Deploy?", on_expiry="maybe")
    with pytest.raises(ValueError, match="timeout"):
        tool.request_approval("deploy", "Deploy?", timeout=-5)


def test_resume_decisions(monkeypatch: pytest.MonkeyPatch, unsupervised: None) -> None:
    resume = {
        "deploy": {
            "outcome": "approved",
            "approved": True,
            "by": "alice",
            "reason": None,
            "response": {"branch": "main"},
            "decided_at": "2030-01-01T00:00:00Z",
        },
        "broken": {"outcome": "sort of"},
        "also-broken": 5,
    }
    monkeypatch.setenv(protocol.ENV_RESUME, json.dumps(resume))
    decisions = tool.resume_decisions()
    assert list(decisions) == ["deploy"]
    assert decisions["deploy"] == tool.DecisionReply(
        "deploy", "approved", True, "alice", None, {"branch": "main"}, DECIDED_AT
    )
    # A decided key answers at once, even without a supervisor.
    assert tool.request_approval("deploy", "Deploy?") == decisions["deploy"]
    assert tool.request_approval_or_exit("deploy", "Deploy?") == decisions["deploy"]
    with pytest.raises(tool.NotSupervisedError):
        tool.request_approval("broken", "Deploy?")
    monkeypatch.setenv(protocol.ENV_RESUME, "{not json")
    assert tool.resume_decisions() == {}


# -- subprocesses against a real channel -----------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "approved", "exit_code"),
    [
        (ApprovalState.APPROVED, True, 0),
        (ApprovalState.REJECTED, False, 1),
        (ApprovalState.EXPIRED, False, 1),
        (ApprovalState.EXPIRED, True, 0),
        (ApprovalState.CANCELLED, False, 1),
    ],
)
async def test_blocking_request(
    supervisor: Supervisor, outcome: ApprovalState, approved: bool, exit_code: int
) -> None:
    harness = supervisor.harness
    proc = await supervisor.start(
        sys.executable,
        APPROVAL_TOOL,
        "deploy",
        "Deploy to prod?",
        "--timeout",
        "30",
        "--on-expiry",
        "approve",
        "--details",
        '{"env": "prod"}',
    )
    await eventually(lambda: len(harness.asks) == 1)
    assert supervisor.channel.waiting_keys == ["deploy"]
    (ask,) = harness.asks
    assert (ask.key, ask.summary, ask.details) == ("deploy", "Deploy to prod?", {"env": "prod"})
    assert ask.timeout is not None and ask.timeout.total_seconds() == 30
    assert ask.on_expiry == "approve"
    harness.decide("deploy", outcome, approved, by="alice", reason="r", response={"b": "main"})
    code, out, err = await finish(proc)
    assert code == exit_code, err
    assert out.splitlines()[0] == "asking deploy"
    assert decision_line(out, err) == {
        "key": "deploy",
        "outcome": outcome.value,
        "approved": approved,
        "by": "alice",
        "reason": "r",
        "response": {"b": "main"},
        "decided_at": DECIDED_AT.isoformat(),
    }


async def test_heartbeats_keep_flowing_while_waiting(supervisor: Supervisor) -> None:
    code = textwrap.dedent(
        """
        import threading, time
        from toolwarden.tool import heartbeat, request_approval

        def beat():
            n = 0
            while True:
                n += 1
                heartbeat(message=f"beat {n}")
                time.sleep(0.02)

        threading.Thread(target=beat, daemon=True).start()
        print(request_approval("wait", "Wait for me").approved)
        """
    )
    harness = supervisor.harness
    proc = await supervisor.start(sys.executable, "-c", code)
    await eventually(lambda: supervisor.channel.waiting_keys == ["wait"])
    seen = len(harness.heartbeats)
    await eventually(lambda: len(harness.heartbeats) >= seen + 3)
    assert supervisor.channel.waiting_keys == ["wait"]
    harness.decide("wait", ApprovalState.APPROVED, True)
    rc, out, err = await finish(proc)
    assert (rc, out.strip()) == (0, "True"), err


async def test_heartbeats_coalesce_last_value_wins(supervisor: Supervisor) -> None:
    code = textwrap.dedent(
        """
        import time
        from toolwarden.tool import heartbeat
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < 1.0:
            n += 1
            heartbeat(progress=min(n / 1e6, 0.99), message=f"step {n}")
        heartbeat(progress=1.0, message="done")
        print(n, time.monotonic() - start)
        """
    )
    harness = supervisor.harness
    rc, out, err = await finish(await supervisor.start(sys.executable, "-c", code))
    assert rc == 0, err
    calls, elapsed = out.split()
    assert int(calls) > 1000
    await eventually(lambda: bool(harness.heartbeats) and harness.heartbeats[-1] == (1.0, "done"))
    # At most one per interval while running, plus the final value flushed at exit.
    assert 2 <= len(harness.heartbeats) <= float(elapsed) / INTERVAL + 3, harness.heartbeats
    progress = [p for p, _ in harness.heartbeats]
    assert progress == sorted(progress)  # type: ignore[type-var]
    hello = supervisor.channel.hello  # the emitter introduced itself
    assert hello is not None and isinstance(hello.pid, int) and hello.pid > 0


async def test_out_of_range_heartbeats_are_clamped(supervisor: Supervisor) -> None:
    code = "from toolwarden.tool import heartbeat\nheartbeat(progress=7, message='m' * 5000)\n"
    rc, _, err = await finish(await supervisor.start(sys.executable, "-c", code))
    assert rc == 0, err
    await eventually(lambda: bool(supervisor.harness.heartbeats))
    assert supervisor.harness.heartbeats == [(1.0, "m" * protocol.MAX_MESSAGE_CHARS)]


async def test_silent_beat_tool(supervisor: Supervisor) -> None:
    rc, out, err = await finish(await supervisor.start(sys.executable, BEAT_TOOL, "0.6"))
    assert (rc, out, err) == (0, "", "")
    await eventually(lambda: supervisor.harness.heartbeats[-1:] == [(1.0, "done")])
    assert len(supervisor.harness.heartbeats) >= 3


async def test_supervisor_vanishing_does_not_break_heartbeat(supervisor: Supervisor) -> None:
    code = textwrap.dedent(
        """
        import time
        from toolwarden.tool import heartbeat
        heartbeat(0.1, "first")
        while not __import__("os").path.exists(__import__("sys").argv[1]):
            heartbeat(0.2, "waiting")
            time.sleep(0.01)
        for i in range(200):
            heartbeat(0.5, "after")
            time.sleep(0.005)
        print("ok")
        """
    )
    flag = supervisor.channel.path.parent / "closed.flag"
    proc = await supervisor.start(sys.executable, "-c", code, flag)
    await eventually(lambda: bool(supervisor.harness.heartbeats))
    await supervisor.channel.close()
    flag.write_text("")
    rc, out, err = await finish(proc)
    assert (rc, out.strip(), err) == (0, "ok", "")


async def test_exit_and_relaunch(supervisor: Supervisor) -> None:
    harness = supervisor.harness
    proc = await supervisor.start(sys.executable, APPROVAL_TOOL, "push", "Push?", "--or-exit")
    rc, out, err = await finish(proc)
    assert rc == protocol.EXIT_AWAIT_DECISION, err
    assert out.strip() == "asking push"
    assert "run-7/push is pending" in err
    assert [a.key for a in harness.asks] == ["push"]
    # The workflow records the decision, then relaunches the tool with it in the environment.
    resume = {
        "push": {
            "outcome": "approved",
            "approved": True,
            "by": "bob",
            "reason": "go",
            "response": [1, 2],
            "decided_at": DECIDED_AT.isoformat(),
        }
    }
    proc = await supervisor.start(
        sys.executable,
        APPROVAL_TOOL,
        "push",
        "Push?",
        "--or-exit",
        TOOLWARDEN_RESUME=json.dumps(resume),
        TOOLWARDEN_ATTEMPT="2",
    )
    rc, out, err = await finish(proc)
    assert rc == 0, err
    assert decision_line(out, err) == {"key": "push", **resume["push"]}
    assert len(harness.asks) == 1  # the relaunched tool did not ask again


async def test_or_exit_returns_a_decision_the_supervisor_already_knows(
    supervisor: Supervisor,
) -> None:
    harness = supervisor.harness
    harness.send_pending = False
    harness.decide("known", ApprovalState.REJECTED, False, reason="no")
    proc = await supervisor.start(sys.executable, APPROVAL_TOOL, "known", "Known?", "--or-exit")
    rc, out, err = await finish(proc)
    assert rc == 1, err
    assert decision_line(out, err)["reason"] == "no"


async def test_or_exit_from_a_thread_exits_the_process(supervisor: Supervisor) -> None:
    code = textwrap.dedent(
        """
        import threading, time
        from toolwarden.tool import request_approval_or_exit
        threading.Thread(target=request_approval_or_exit, args=("t", "From a thread")).start()
        time.sleep(60)
        print("not reached")
        """
    )
    rc, out, err = await finish(await supervisor.start(sys.executable, "-c", code))
    assert (rc, out) == (protocol.EXIT_AWAIT_DECISION, ""), err


async def test_refused_request_raises_approval_error(supervisor: Supervisor) -> None:
    supervisor.harness.raises = RuntimeError("the workflow has ended")
    proc = await supervisor.start(sys.executable, APPROVAL_TOOL, "late", "Too late?")
    rc, out, err = await finish(proc)
    assert rc == 4, err
    assert "ERROR unavailable" in out and "the workflow has ended" in out


async def test_supervisor_gone_raises_approval_error(sock_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWARDEN_")}
    env[protocol.ENV_SOCKET] = str(sock_dir / "nobody.sock")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(APPROVAL_TOOL),
        "k",
        "Anyone?",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    rc, out, err = await finish(proc)
    assert rc == 4, err
    assert "cannot reach the supervisor" in out


async def test_channel_closing_while_waiting_raises(supervisor: Supervisor) -> None:
    proc = await supervisor.start(sys.executable, APPROVAL_TOOL, "k", "Wait?")
    await eventually(lambda: supervisor.channel.waiting_keys == ["k"])
    await supervisor.channel.close()
    rc, out, err = await finish(proc)
    assert rc == 4, err
    assert "ERROR unavailable" in out and "closed the connection" in out


async def test_async_twins(supervisor: Supervisor) -> None:
    code = textwrap.dedent(
        """
        import asyncio, json
        from toolwarden import tool

        async def main():
            await tool.aheartbeat(0.3, "async")
            first = await tool.arequest_approval("a1", "First?", {"n": 1}, 60)
            print("FIRST", json.dumps(first.to_json()))
            await tool.arequest_approval_or_exit("a2", "Second?")
            print("not reached")

        asyncio.run(main())
        """
    )
    harness = supervisor.harness
    proc = await supervisor.start(sys.executable, "-c", code)
    await eventually(lambda: supervisor.channel.waiting_keys == ["a1"])
    harness.decide("a1", ApprovalState.APPROVED, True, response="yes")
    rc, out, err = await finish(proc)
    assert rc == protocol.EXIT_AWAIT_DECISION, err
    (first,) = [line for line in out.splitlines() if line.startswith("FIRST ")]
    assert json.loads(first.removeprefix("FIRST "))["response"] == "yes"
    assert "not reached" not in out
    assert [a.key for a in harness.asks] == ["a1", "a2"]
    await eventually(lambda: (0.3, "async") in harness.heartbeats)


# -- the runnable examples -------------------------------------------------------------------


async def test_example_raw_socket_client(supervisor: Supervisor) -> None:
    harness = supervisor.harness
    proc = await supervisor.start(sys.executable, EXAMPLES / "raw_socket_client.py")
    await eventually(lambda: supervisor.channel.waiting_keys == ["raw-example"])
    harness.decide("raw-example", ApprovalState.APPROVED, True, response={"ok": 1})
    rc, out, err = await finish(proc)
    assert rc == 0, err
    assert '"response": {"ok": 1}' in out
    assert harness.heartbeats


async def test_example_python_tools(supervisor: Supervisor) -> None:
    harness = supervisor.harness
    blocking = await supervisor.start(sys.executable, EXAMPLES / "python_blocking.py")
    await eventually(lambda: "apply-patch" in supervisor.channel.waiting_keys)
    harness.decide("apply-patch", ApprovalState.APPROVED, True, response={"message": "ship it"})
    rc, out, err = await finish(blocking)
    assert rc == 0, err
    assert "ship it" in out

    resumable = await supervisor.start(sys.executable, EXAMPLES / "python_exit_and_resume.py")
    rc, out, err = await finish(resumable)
    assert rc == protocol.EXIT_AWAIT_DECISION, err
    resume = {"delete-old-backups": {"outcome": "rejected", "approved": False, "reason": "keep"}}
    resumed = await supervisor.start(
        sys.executable,
        EXAMPLES / "python_exit_and_resume.py",
        TOOLWARDEN_RESUME=json.dumps(resume),
    )
    rc, out, err = await finish(resumed)
    assert rc == 0, err
    assert "keep" in out


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")
async def test_example_socat(supervisor: Supervisor) -> None:
    harness = supervisor.harness
    proc = await supervisor.start("bash", EXAMPLES / "socat_ask.sh")
    await eventually(lambda: supervisor.channel.waiting_keys == ["socat-example"])
    harness.decide("socat-example", ApprovalState.REJECTED, False, reason="no")
    rc, out, err = await finish(proc)
    assert rc == 1, err
    assert '"type":"pending"' in out and '"reason":"no"' in out
    assert harness.heartbeats == [(0.5, "about to ask")]
