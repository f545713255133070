#!/usr/bin/env python3
"""Benchmark: the cost of `toolwarden.tool.heartbeat()` in a tight loop.

A realistic loop body (SHA-256 of a 4 KiB block) runs CALLS (100,000) times without heartbeats
and CALLS times with `heartbeat(progress=i / n)` after each step, ROUNDS times. The loops run in
alternating samples of CALLS/10 iterations and the fastest sample of each kind is kept, which
is robust against other load on the machine; medians are reported too, in wall-clock and in
process CPU time (which includes the emitter thread). The ratio is (with heartbeat) /
(without): the target is at most 1.05 (5 % overhead).

The measuring process is a real supervised tool: this script starts a real `ToolChannel` on a
temporary Unix socket and runs itself as a child with $TOOLWARDEN_SOCKET set, so the background
emitter thread is connected and sending. It also measures the unsupervised case (no-op).

    python bench/heartbeat.py                    # human summary
    python bench/heartbeat.py --json             # one JSON document
    python bench/heartbeat.py --max-overhead 0.05  # exit 1 if the supervised overhead is higher
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BLOCK = os.urandom(4096)


def _child(calls: int, rounds: int) -> dict[str, Any]:
    from toolwarden.tool import heartbeat, supervised

    sha256 = hashlib.sha256
    block = BLOCK
    # Short samples, alternating, keep the fastest of each kind: robust on a busy machine.
    size = max(calls // 10, 1)

    def without(clock: Any) -> float:
        start = clock()
        for _i in range(size):
            sha256(block).digest()
        return float(clock() - start)

    def with_heartbeat(clock: Any) -> float:
        start = clock()
        for i in range(size):
            sha256(block).digest()
            heartbeat(i / size)
        return float(clock() - start)

    heartbeat(0.0, "warming up")  # connect before measuring
    results: dict[str, Any] = {"supervised": supervised(), "calls": calls, "rounds": rounds}
    for name, clock in (("wall", time.perf_counter), ("cpu", time.process_time)):
        base: list[float] = []
        beat: list[float] = []
        for _ in range(rounds * calls // size):
            base.append(without(clock))
            beat.append(with_heartbeat(clock))
        best_base, best_beat = min(base), min(beat)
        results[name] = {
            "ratio": best_beat / best_base,
            "median_ratio": statistics.median(beat) / statistics.median(base),
            "overhead_ns_per_call": (best_beat - best_base) / size * 1e9,
            "body_ns": best_base / size * 1e9,
        }
    results.update(results["wall"])
    return results


async def _run_child(calls: int, rounds: int, socket_path: Path | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWARDEN_")}
    if socket_path is not None:
        env["TOOLWARDEN_SOCKET"] = str(socket_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        "--calls",
        str(calls),
        "--rounds",
        str(rounds),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed with status {proc.returncode}")
    return json.loads(out)  # type: ignore[no-any-return]


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    from toolwarden.channel import NotifyPending, ToolChannel
    from toolwarden.models import ApprovalAsk, Decision

    received: list[tuple[float | None, str | None]] = []

    async def no_requests(ask: ApprovalAsk, notify: NotifyPending) -> Decision:
        raise RuntimeError("the heartbeat benchmark does not take approval requests")

    directory = Path(tempfile.mkdtemp(prefix="twb-", dir="/tmp"))
    channel = ToolChannel(
        directory / "bench.sock",
        run_id="bench",
        attempt=1,
        heartbeat_interval=args.interval,
        on_heartbeat=lambda p, m: received.append((p, m)),
        on_request=no_requests,
    )
    try:
        await channel.start()
        supervised = await _run_child(args.calls, args.rounds, channel.path)
    finally:
        await channel.close()
        shutil.rmtree(directory, ignore_errors=True)
    unsupervised = await _run_child(args.calls, args.rounds, None)
    supervised["heartbeats_received"] = len(received)
    return {
        "interval_s": args.interval,
        "supervised": supervised,
        "unsupervised": unsupervised,
        "python": sys.version.split()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5, help="x 100,000 calls of each kind")
    parser.add_argument("--interval", type=float, default=1.0, help="heartbeat interval (s)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--max-overhead", type=float, default=None, help="e.g. 0.05")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.calls, args.rounds)))
        return 0
    result = asyncio.run(_main(args))
    sup, unsup = result["supervised"], result["unsupervised"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"heartbeat() in a loop of sha256(4 KiB) ({sup['body_ns']:.0f} ns per step), "
            f"{args.rounds} x {args.calls:,} calls, fastest of interleaved samples"
        )
        for name, data in (("supervised", sup), ("unsupervised", unsup)):
            cpu = data["cpu"]
            print(
                f"  {name:<13} ratio {data['ratio']:.3f} wall, {cpu['ratio']:.3f} cpu "
                f"({data['overhead_ns_per_call']:+.0f} ns/call; medians "
                f"{data['median_ratio']:.3f} wall, {cpu['median_ratio']:.3f} cpu)"
            )
        print(
            f"  heartbeats the supervisor received: {sup['heartbeats_received']} "
            f"(coalesced to at most one per {args.interval:g} s)"
        )
    if args.max_overhead is not None and sup["ratio"] > 1 + args.max_overhead:
        print(f"FAIL: overhead above {args.max_overhead:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
