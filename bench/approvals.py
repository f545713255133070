"""The approval round trip: from a decider starting to the waiting tool holding the decision.

    python bench/approvals.py [--samples 50] [--batch 6]

On one private dev server with one toolwarden worker in this process, each sample is a run of
bench/tools/stamp_approval_tool.py waiting (blocked in `request_approval`) on a pending
approval. It is decided by one of four deciders, interleaved in the same run:
  toolwarden  `toolwarden approve RUN/k --by bench` (the installed console script; a `decide`
              update that reports whether the decision took effect);
  python      bench/tools/signal_minimal.py: temporalio alone, one `approve` signal with the
              documented payload {"key": "k", "by": "bench"};
  floor       bench/tools/signal_floor.py: the same signal sent the way the project's conventions
              require of any decider (click, pydantic-settings, a pydantic model through the
              SDK's pydantic data converter), without toolwarden: the lowest a conforming
              `approve` could go;
  go          `temporal workflow signal --workflow-id RUN --name approve --input '{...}'`.
The round trip runs from just before the decider's process is started to the instant the tool
writes `time.time()` after `request_approval` returns. Targets: toolwarden within 1.3 times the
minimal Python script (p50; the floor's ratio says how much of that the libraries alone take),
and from the signal reaching the workflow (its
WorkflowExecutionSignaled / WorkflowExecutionUpdateAccepted event time in the history) to the
tool holding the decision, p50 under 100 ms.

Runs are started a batch at a time; within a batch decisions are made one after the other, and
each run is allowed to end before the next decision, so samples never overlap.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    BENCH_DIR,
    BenchServer,
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
    wait_for,
)
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHandle

from toolwarden.client import RunHandle, Supervisor
from toolwarden.config import Settings
from toolwarden.models import RunState
from toolwarden.worker.runner import build_worker
from toolwarden.workflows import APPROVE_SIGNAL, DECIDE_UPDATE, WAIT_DECISION_UPDATE

KEY = "k"
METHODS = ("toolwarden", "python", "floor", "go")
PENDING_TIMEOUT = 60.0
DECISION_TIMEOUT = 60.0
STAMP_TOOL = BENCH_DIR / "tools" / "stamp_approval_tool.py"
SIGNAL_MINIMAL = BENCH_DIR / "tools" / "signal_minimal.py"
SIGNAL_FLOOR = BENCH_DIR / "tools" / "signal_floor.py"


@dataclass
class Sample:
    method: str
    run_id: str
    round_trip: float  # decider started -> tool holds the decision
    decider_exit: float  # decider started -> decider exited
    exit_code: int = 0
    stderr: str = ""
    signal_to_tool: float | None = None  # Signaled / UpdateAccepted event -> tool holds it
    arrival_to_tool: float | None = None  # signal / update's workflow task scheduled -> tool


@dataclass
class Results:
    samples: list[Sample] = field(default_factory=list)

    def of(self, method: str) -> list[Sample]:
        return [s for s in self.samples if s.method == method]


def decider_argv(method: str, server: BenchServer, run_id: str) -> list[str]:
    if method == "toolwarden":
        return [console_script("toolwarden"), "approve", f"{run_id}/{KEY}", "--by", "bench"]
    if method == "python":
        return [sys.executable, str(SIGNAL_MINIMAL), server.address, "default", run_id, KEY]
    if method == "floor":
        return [sys.executable, str(SIGNAL_FLOOR), server.address, "default", run_id, KEY]
    return [
        console_script("temporal"),
        "workflow",
        "signal",
        "--address",
        server.address,
        "--namespace",
        "default",
        "--workflow-id",
        run_id,
        "--name",
        "approve",
        "--input",
        f'{{"key":"{KEY}","by":"bench"}}',
    ]


def _event_seconds(event: HistoryEvent) -> float:
    return event.event_time.seconds + event.event_time.nanos / 1e9


async def history_events(handle: WorkflowHandle[object, object]) -> list[HistoryEvent]:
    history = await handle.fetch_history()
    return list(history.events)


def is_update(event: HistoryEvent, name: str) -> bool:
    return (
        event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
        and event.workflow_execution_update_accepted_event_attributes.accepted_request.input.name == name
    )


def decision_reached(events: list[HistoryEvent]) -> tuple[float, float] | None:
    """When the decision reached the workflow, as (recorded, arrived) epoch seconds.

    A signal is one event, WorkflowExecutionSignaled: both times are its time. An update is
    recorded as WorkflowExecutionUpdateAccepted only when the workflow task that ran its handler
    completes, so it "arrived" when that (speculative) workflow task was scheduled.
    """
    scheduled: float | None = None
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            scheduled = _event_seconds(event)
        if (
            event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            and event.workflow_execution_signaled_event_attributes.signal_name == APPROVE_SIGNAL
        ):
            return _event_seconds(event), _event_seconds(event)
        if is_update(event, DECIDE_UPDATE):
            recorded = _event_seconds(event)
            return recorded, scheduled if scheduled is not None else recorded
    return None


async def waiting(server: BenchServer, run_id: str) -> bool:
    """The tool is blocked on the decision: the `wait_decision` update has been accepted."""
    handle = server.client.get_workflow_handle(run_id)
    return any(is_update(e, WAIT_DECISION_UPDATE) for e in await history_events(handle))


async def read_stamp(path: Path) -> float | None:
    if not path.exists():
        return None
    held, outcome = path.read_text().split()
    if outcome != "approved":
        raise RuntimeError(f"{path.name}: the tool got {outcome}, not approved")
    return float(held)


async def decide_one(
    server: BenchServer, settings: Settings, handle: RunHandle, method: str, stamp: Path
) -> Sample:
    argv = decider_argv(method, server, handle.run_id)
    env = server.env(settings)
    started = time.time()
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=str(server.home),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    communicate = asyncio.ensure_future(process.communicate())
    held: float = await wait_for(
        lambda: read_stamp(stamp), DECISION_TIMEOUT, f"{method}: decision of {handle.run_id}", 0.005
    )
    _, err = await asyncio.wait_for(communicate, DECISION_TIMEOUT)
    exited = time.time()
    # A non-zero exit after the tool holds the decision is recorded, not fatal: short-lived
    # temporalio clients can abort in interpreter finalization (temporalio/sdk-python#300).
    code = process.returncode if process.returncode is not None else -1
    result = await asyncio.wait_for(handle.result(), DECISION_TIMEOUT)
    if result.state is not RunState.SUCCEEDED:
        raise RuntimeError(f"{handle.run_id} ended {result.state.value}: {result.error}")
    return Sample(method, handle.run_id, held - started, exited - started, code, err.decode()[-300:])


async def run_batch(
    server: BenchServer,
    supervisor: Supervisor,
    settings: Settings,
    methods: list[str],
    stamps: Path,
) -> list[Sample]:
    handles: list[tuple[RunHandle, Path]] = []
    for _ in methods:
        run_id = f"bench-approval-{uuid.uuid4().hex[:8]}"
        stamp = stamps / f"{run_id}.stamp"
        spec = settings.run_spec(run_id=run_id, argv=[sys.executable, str(STAMP_TOOL), KEY, str(stamp)])
        handles.append((await supervisor.start_run(spec), stamp))

    async def pending(run_id: str) -> None:
        await wait_for(lambda: waiting(server, run_id), PENDING_TIMEOUT, f"{run_id} pending", 0.05)

    await asyncio.gather(*(pending(h.run_id) for h, _ in handles))
    samples = []
    for (handle, stamp), method in zip(handles, methods, strict=True):
        sample = await decide_one(server, settings, handle, method, stamp)
        events = await history_events(server.client.get_workflow_handle(handle.run_id))
        reached = decision_reached(events)
        if reached is not None:
            held = float(stamp.read_text().split()[0])
            sample.signal_to_tool = held - reached[0]
            sample.arrival_to_tool = held - reached[1]
        samples.append(sample)
    return samples


def _row(name: str, values: list[float]) -> str:
    return f"{ms(median(values)):>8} {ms(percentile(values, 95)):>8}" if values else f"{'-':>8} {'-':>8}"


def report(results: Results, samples: int) -> None:
    print(
        f"{'decider':<11} {'round trip p50':>14} {'p95':>8} {'max':>8}  {'decider exits':>13}  "
        f"{'event->tool p50':>15} {'p95':>8}  {'arrival->tool p50':>17} {'p95':>8}"
    )
    for method in METHODS:
        rows = results.of(method)
        trips = [s.round_trip for s in rows]
        inner = [s.signal_to_tool for s in rows if s.signal_to_tool is not None]
        arrival = [s.arrival_to_tool for s in rows if s.arrival_to_tool is not None]
        print(
            f"{method:<11} {ms(median(trips)):>14} {ms(percentile(trips, 95)):>8} "
            f"{ms(max(trips)):>8}  {ms(median([s.decider_exit for s in rows])):>13}  "
            f"{_row(method, inner):>24}  {_row(method, arrival):>26}"
        )
    tw, py, floor = (
        [s.round_trip for s in results.of(method)] for method in ("toolwarden", "python", "floor")
    )
    ratio = median(tw) / median(py)
    ratio95 = percentile(tw, 95) / percentile(py, 95)
    print(
        f"round trip, toolwarden / minimal Python: p50 {ratio:.2f}x, p95 {ratio95:.2f}x "
        f"(target within 1.3x: {'met' if ratio <= 1.3 else 'NOT met'})"
    )
    print(
        f"    of which the required libraries (floor / minimal Python): p50 "
        f"{median(floor) / median(py):.2f}x, p95 {percentile(floor, 95) / percentile(py, 95):.2f}x; "
        f"toolwarden's own (toolwarden / floor): p50 {median(tw) / median(floor):.2f}x, "
        f"p95 {percentile(tw, 95) / percentile(floor, 95):.2f}x"
    )
    for label, attr in (("event", "signal_to_tool"), ("arrival", "arrival_to_tool")):
        values = [v for s in results.samples if (v := getattr(s, attr)) is not None]
        p50 = median(values)
        print(
            f"{label} -> tool holds the decision, all {len(values)} samples: p50 {ms(p50)}, "
            f"p95 {ms(percentile(values, 95))} (target p50 < 100 ms: {'met' if p50 < 0.1 else 'NOT met'})"
        )
    for method in METHODS:
        bad = [s for s in results.of(method) if s.exit_code != 0]
        if bad:
            first = bad[0].stderr.strip().splitlines()
            print(
                f"    {method}: {len(bad)}/{len(results.of(method))} decider processes exited "
                f"abnormally after the decision took effect (codes "
                f"{sorted({s.exit_code for s in bad})}; first: {first[0] if first else '-'})"
            )
    missing = len(METHODS) * samples - sum(1 for s in results.samples if s.signal_to_tool is not None)
    if missing:
        print(f"    ({missing} samples had no signal/update event in their history)")


async def main(args: argparse.Namespace) -> None:
    print(f"bench/approvals.py  {machine_line()}")
    print(f"busy before the bench: {other_load()}")
    print(f"bytecode cache: {'yes' if args.bytecode_cache else 'no (every import compiles)'}")
    started = time.monotonic()
    async with bench_server() as server:
        settings = server.settings(new_queue("approvals"))
        supervisor = Supervisor(server.client, settings)
        stamps = server.home / "stamps"
        stamps.mkdir()
        # Interleave the deciders and rotate who goes first, so load drift hits all alike.
        order: list[str] = []
        for i in range(args.samples):
            shift = i % len(METHODS)
            order += list(METHODS[shift:] + METHODS[:shift])
        results = Results()
        async with build_worker(server.client, settings):
            # Warm-up: one of each, not counted (sandbox imports, first connections).
            await run_batch(server, supervisor, settings, list(METHODS), stamps)
            for at in range(0, len(order), args.batch):
                batch = order[at : at + args.batch]
                results.samples += await run_batch(server, supervisor, settings, batch, stamps)
                if (at // args.batch) % 5 == 4:
                    print(f"  {len(results.samples)}/{len(order)} samples, load {load_average()}", flush=True)
    print(f"{args.samples} approvals per decider, in {time.monotonic() - started:.0f} s:")
    report(results, args.samples)
    print(f"busy after the bench: {other_load()}; load {load_average()}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=50, help="approvals per decider")
    parser.add_argument("--batch", type=int, default=6, help="runs started ahead at a time")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE as set (default: re-run with a .pyc cache)",
    )
    args = parser.parse_args(argv)
    if args.samples < 1 or args.batch < 1:
        parser.error("--samples and --batch must be >= 1")
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    arguments.bytecode_cache = use_bytecode_cache(sys.argv[1:])
    asyncio.run(main(arguments))
