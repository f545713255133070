"""The mirror writer's CPU per run for short runs, by how long it lingers before a batch.

    python bench/linger.py [--runs 500] [--rate 25] [--lingers 0.075,0.25,0.5] [--rounds 2]

One `MirrorWriter` on a fresh SQLite mirror is fed what --rate short runs a second produce, in
real time: a start snapshot (2 events) and, 0.3 s later, the closing snapshot (2 more events),
as `bench/runs.py` (a) does with `true`. Reported per linger value (`BATCH_LINGER_SECONDS`, set
on the module for the trial): the writer thread's CPU per run.
The lingers rotate for --rounds rounds so the machine's load falls on all alike.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
from common import load_average, machine_line
from mirror import end_update, start_update

import toolwarden.mirror.writer as writer_module
from toolwarden.config import MirrorSettings
from toolwarden.mirror import MirrorWriter, upgrade

CLOSE_AFTER_SECONDS = 0.3
CATCH_UP_TIMEOUT = 60.0


def writer_cpu() -> float:
    """CPU seconds of this process's mirror writer threads."""
    ids = {t.native_id for t in threading.enumerate() if t.name == "toolwarden-mirror"}
    return sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id in ids)


def trial(linger: float, runs: int, rate: float) -> float:
    """The writer thread's CPU milliseconds per run for one linger value."""
    writer_module.BATCH_LINGER_SECONDS = linger
    home = Path(tempfile.mkdtemp(prefix="toolwarden-linger-"))
    try:
        url = f"sqlite:///{home / 'mirror.db'}"
        upgrade(url)
        writer = MirrorWriter(url, MirrorSettings(), upgrade_schema=False)
        writer.start()
        time.sleep(0.5)  # the writer's probe, outside the measurement
        cpu0, failures0 = writer_cpu(), writer.stats()
        schedule = sorted(
            [(i / rate, "start", i) for i in range(runs)]
            + [(i / rate + CLOSE_AFTER_SECONDS, "end", i) for i in range(runs)]
        )
        started: dict[int, datetime] = {}
        t0 = time.monotonic()
        for due, kind, i in schedule:
            wait = t0 + due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            now = datetime.now(UTC)
            run_id = f"linger-{i}"
            if kind == "start":
                started[i] = now
                writer.run_changed(start_update(run_id, now))
            else:
                writer.run_changed(end_update(run_id, started[i], now))
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        while writer.stats().backlog and time.monotonic() < deadline:
            time.sleep(0.05)
        cpu = writer_cpu() - cpu0
        stats = writer.stats()
        writer.stop()
        if stats.backlog or stats.failures_total != failures0.failures_total:
            raise SystemExit(f"linger {linger}: backlog {stats.backlog}, failures {stats.failures_total}")
        return cpu / runs * 1000
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--rate", type=float, default=25.0, help="runs started per second")
    parser.add_argument("--lingers", default="0.075,0.25,0.5", help="seconds, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    lingers = [float(v) for v in args.lingers.split(",")]
    print(f"bench/linger.py  {machine_line()}")
    print(f"{args.runs} short runs at {args.rate:g}/s, closing {CLOSE_AFTER_SECONDS} s after they start")
    results: dict[float, list[float]] = {linger: [] for linger in lingers}
    for round_no in range(args.rounds):
        shift = round_no % len(lingers)
        for linger in lingers[shift:] + lingers[:shift]:
            per_run = trial(linger, args.runs, args.rate)
            results[linger].append(per_run)
            print(
                f"    linger {linger * 1000:4.0f} ms: writer thread {per_run:.2f} ms CPU per run"
                f"   load {load_average()}"
            )
    for linger, values in results.items():
        print(f"linger {linger * 1000:4.0f} ms: {', '.join(f'{v:.2f}' for v in values)} ms CPU per run")


if __name__ == "__main__":
    main(sys.argv[1:])
