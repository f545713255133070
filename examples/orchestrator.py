"""An orchestrator: start 20 supervised tools at once and report how each one ended.

    toolwarden up                      # in another terminal (or any reachable worker)
    python examples/orchestrator.py    # uses the same supervision.yaml / TOOLWARDEN_* env

Some tools succeed, some fail, one hangs and is killed, one is missing: the report shows how
toolwarden classifies each.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from datetime import timedelta

from toolwarden.client import Supervisor, SupervisorError, exit_process, new_run_id
from toolwarden.config import load_settings
from toolwarden.models import RunResult, RunSpec


def commands() -> list[list[str]]:
    batch = [["sh", "-c", f"echo job {i}; sleep 0.{i % 10}"] for i in range(16)]
    batch += [
        ["sh", "-c", "echo failing >&2; exit 3"],
        ["sleep", "3600"],  # hangs: silent for longer than its hang timeout
        ["no-such-tool-xyz"],  # cannot start
        [sys.executable, "-c", "print('python tool')"],
    ]
    return batch


async def main() -> int:
    settings = load_settings()
    try:
        supervisor = await Supervisor.connect(settings)
    except SupervisorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    specs: list[RunSpec] = [
        settings.run_spec(
            run_id=new_run_id("orchestrated"),
            argv=argv,
            name="orchestrated",
            overrides={"hang_timeout": timedelta(seconds=3)},
        )
        for argv in commands()
    ]
    handles = await asyncio.gather(*(supervisor.start_run(spec) for spec in specs))
    print(f"started {len(handles)} runs; waiting for them to end...")
    results: list[RunResult] = await asyncio.gather(*(h.result() for h in handles))
    for spec, result in zip(specs, results, strict=True):
        detail = f" exit={result.exit_code}" if result.exit_code is not None else ""
        print(f"{result.run_id:40} {result.state.value:16}{detail}  {' '.join(spec.argv)[:40]}")
    counts = Counter(r.state.value for r in results)
    print("summary:", ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    exit_process(asyncio.run(main()))
