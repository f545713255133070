"""Agent adapters: the hook's cost per allowed call, and decision to approved command running.

    python bench/agents.py [--hook-samples 100] [--decision-samples 10] [--modes defer,fallback,block]

1. Hook overhead for a call the policy allows. The installed `toolwarden hook claude` runs as
   claude runs it: a fresh process, the hook JSON on stdin, one answer on stdout. It talks to a
   real `ToolChannel` whose agent calls go through `agents.adapter.screen`, the code the
   `run_tool` activity runs for an agent call. Time runs from spawning the process to its exit.
   Two floors, sampled interleaved with it, give context:
   - `python3 -c` reading the JSON and printing an answer: the least any Python hook costs;
   - the same interpreter as the worker, running the same script.
2. Decision to the approved command running (p50, p95). A real `claude -p` runs under a worker
   in this process, against the scripted model API (tests/agents/model_api.py). Its Bash call
   writes `date +%s.%N` to a stamp file. Time runs from just before `Supervisor.decide` is
   called to the stamp:
   - deferred (the default `agent_mode: defer`, one call): claude has exited; this includes
     the workflow's relaunch, `claude -p --resume SESSION` and claude's start-up;
   - blocking fallback (defer mode, two calls in one turn): the second call's hook is waiting
     on the socket while claude lives (claude keeps one deferred call per exit); the first is
     decided afterwards and not counted;
   - `agent_mode: block` (one call): every call's hook waits on the socket.

The binaries come from .agents-cli/ (as .ci/run installs them) or PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (
    bench_server,
    console_script,
    load_average,
    machine_line,
    median,
    ms,
    new_queue,
    other_load,
    percentile,
    use_bytecode_cache,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.agents.model_api import ModelAPI, Script  # noqa: E402
from toolwarden import protocol  # noqa: E402
from toolwarden.agents import adapter  # noqa: E402
from toolwarden.channel import NotifyPending, ToolChannel  # noqa: E402
from toolwarden.client import RunHandle, Supervisor  # noqa: E402
from toolwarden.config import Settings  # noqa: E402
from toolwarden.models import AgentKind, ApprovalAsk, AttemptOutcome, Decision, RunSpec, RunState  # noqa: E402
from toolwarden.worker.runner import build_worker  # noqa: E402

CALL = json.dumps(
    {
        "session_id": "bench",
        "hook_event_name": "PreToolUse",
        "tool_name": "Read",
        "tool_input": {"file_path": "/tmp/x"},
        "tool_use_id": "toolu_bench",
    }
).encode()
FLOOR = (
    "import json,sys; json.load(sys.stdin); "
    "print(json.dumps({'hookSpecificOutput':{'hookEventName':'PreToolUse','permissionDecision':'allow'}}))"
)


def claude_binary() -> str | None:
    local = REPO / ".agents-cli" / "node_modules" / ".bin" / "claude"
    return str(local) if local.exists() else shutil.which("claude")


async def timed(argv: list[str], env: dict[str, str]) -> tuple[float, bytes]:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
    )
    out, _ = await proc.communicate(CALL)
    return time.perf_counter() - started, out


async def hook_overhead(samples: int, home: Path) -> dict[str, list[float]]:
    spec = RunSpec(run_id="bench", tool_name="claude", argv=["claude"], agent=AgentKind.CLAUDE)

    async def on_agent_call(call: protocol.AgentCallMessage, notify: NotifyPending) -> Decision:
        screened = adapter.screen(spec, call, "/tmp", datetime.now(UTC))
        if screened.decision is None:
            raise RuntimeError(f"the bench call must be policy-allowed, got {screened.record.rule}")
        return screened.decision

    async def unused(ask: ApprovalAsk, notify: NotifyPending) -> Decision:
        raise RuntimeError("not used")

    channel = ToolChannel(
        home / "hook.sock", run_id="bench", attempt=1, heartbeat_interval=1.0,
        on_heartbeat=lambda progress, message: None, on_request=unused, on_agent_call=on_agent_call,
    )
    await channel.start()
    env = {**os.environ, protocol.ENV_SOCKET: str(channel.path)}
    commands = {
        "toolwarden hook claude": [console_script("toolwarden"), "hook", "claude"],
        "floor: python3 -c": ["python3", "-c", FLOOR],
        "floor: worker's python -c": [sys.executable, "-c", FLOOR],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    try:
        for argv in commands.values():  # warm-up: page cache, .pyc files
            await timed(argv, env)
        for _ in range(samples):
            for name, argv in commands.items():
                elapsed, out = await timed(argv, env)
                answer = json.loads(out)["hookSpecificOutput"]["permissionDecision"]
                if answer != "allow":
                    raise RuntimeError(f"{name} answered {answer}: {out!r}")
                times[name].append(elapsed)
    finally:
        await channel.close()
    return times


MODES = {
    "defer": "deferred (exit + --resume)",
    "fallback": "blocking fallback (2nd call)",
    "block": "agent_mode: block",
}


async def decision_to_running(samples: int, claude: str, mode: str) -> list[float]:
    latencies: list[float] = []
    async with bench_server() as server:
        settings: Settings = server.settings(new_queue(f"agents-{mode}"))
        supervisor = Supervisor(server.client, settings)
        async with build_worker(server.client, settings):
            for _ in range(samples + 1):  # the first one warms up and is not counted
                latency = await one_decision(supervisor, settings, claude, mode)
                if latency is not None:
                    latencies.append(latency)
                print(f"  {mode}: {len(latencies)}/{samples + 1}, load {load_average()}", flush=True)
    return latencies[1:]


def stamp_command(stamp: Path) -> str:
    return f"date +%s.%N > {stamp}"


async def one_decision(supervisor: Supervisor, settings: Settings, claude: str, mode: str) -> float | None:
    scratch = Path(tempfile.mkdtemp(prefix="bench-agents-"))
    stamps = [scratch / "stamp-one", scratch / "stamp-two"]
    calls = [("Bash", {"command": stamp_command(stamp)}) for stamp in stamps]
    api = ModelAPI(Script(calls=calls if mode == "fallback" else calls[:1])).start()
    try:
        (scratch / "home").mkdir()
        env = {
            "HOME": str(scratch / "home"), "ANTHROPIC_BASE_URL": api.base_url,
            "ANTHROPIC_API_KEY": "sk-bench", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
        }
        spec = settings.run_spec(
            run_id=f"bench-{uuid.uuid4().hex[:8]}", argv=[claude, "-p", "stamp it"], cwd=str(scratch),
            env=env, overrides={"agent": "claude", "agent_mode": "block" if mode == "block" else "defer"},
        )
        handle = await supervisor.start_run(spec)
        if mode == "fallback":
            first, second = await both_waiting(handle)
            stamp = stamps[1]
            decided_at = time.time()
            await supervisor.decide(second, approve=True, by="bench")
            await waiting(handle, parked=True)  # the turn ends, claude exits with the first deferred
            await supervisor.decide(first, approve=True, by="bench")
        else:
            approval_id = await waiting(handle, parked=(mode == "defer"))
            stamp = stamps[0]
            decided_at = time.time()
            await supervisor.decide(approval_id, approve=True, by="bench")
        result = await handle.result()
        if result.state is not RunState.SUCCEEDED or not stamp.exists():
            said = api.tool_results()[-1:]
            print(f"  sample lost: {result.state.value} at attempt {result.attempt}, {result.error}, "
                  f"the model was told {said}", flush=True)
            return None
        return float(stamp.read_text()) - decided_at
    finally:
        api.stop()
        shutil.rmtree(scratch, ignore_errors=True)


async def waiting(handle: RunHandle, parked: bool, timeout: float = 300) -> str:
    """The pending approval once the run waits on it: with claude gone (parked) or alive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await handle.status()
        last = status.last_attempt
        gone = status.live is None and last is not None and last.outcome is AttemptOutcome.AWAITING_DECISION
        if status.pending_approvals and (gone if parked else status.live is not None):
            return status.pending_approvals[0].approval_id
        await asyncio.sleep(0.02)
    raise TimeoutError("the claude call never waited for a decision")


async def both_waiting(handle: RunHandle, timeout: float = 300) -> tuple[str, str]:
    """(the deferred call, the blocked one) once both wait and claude lives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await handle.status()
        pending = status.pending_approvals
        if len(pending) == 2 and status.live is not None:
            blocked = [a for a in pending if "stamp-two" in a.summary]
            deferred = [a for a in pending if "stamp-one" in a.summary]
            if len(blocked) == 1 and len(deferred) == 1:
                return deferred[0].approval_id, blocked[0].approval_id
        await asyncio.sleep(0.02)
    raise TimeoutError("the two claude calls never both waited")


def row(name: str, values: list[float]) -> str:
    if not values:
        return f"  {name:28} no samples"
    return (
        f"  {name:28} p50 {ms(median(values)):>9}  p95 {ms(percentile(values, 95)):>9}  "
        f"n={len(values)}"
    )


async def main(args: argparse.Namespace) -> None:
    print(f"bench/agents.py  {machine_line()}")
    home = Path(tempfile.mkdtemp(prefix="bench-hook-"))
    try:
        times = await hook_overhead(args.hook_samples, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"hook overhead, policy-allowed call ({args.hook_samples} samples each, interleaved):")
    for name, values in times.items():
        print(row(name, values))
    claude = claude_binary()
    if claude is None:
        print("decision to running: skipped, no claude binary (npm install --prefix .agents-cli ...)")
        return
    if args.decision_samples:
        results: dict[str, list[float]] = {}
        for mode in args.modes:
            results[mode] = await decision_to_running(args.decision_samples, claude, mode)
        print(f"decision to the approved command running ({args.decision_samples} samples each):")
        for mode in args.modes:
            print(row(MODES[mode], results[mode]))
        print(f"other load: {other_load()}")
    print(f"load {load_average()}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--hook-samples", type=int, default=100)
    parser.add_argument("--decision-samples", type=int, default=10)
    parser.add_argument(
        "--modes", type=lambda text: [m for m in text.split(",") if m], default=list(MODES),
        help=f"comma-separated, of {', '.join(MODES)}",
    )
    parser.add_argument("--no-bytecode-cache", action="store_true", help="see bench/README.md")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)} (use {', '.join(MODES)})")
    return args


def entry(argv: list[str]) -> Any:
    return asyncio.run(main(parse_args(argv)))


if __name__ == "__main__":
    use_bytecode_cache(sys.argv[1:])
    entry(sys.argv[1:])
