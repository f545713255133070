"""Chaos: a tool that prints 1 GB. The worker's memory stays flat; the log is capped and marked.

The worker is a real `toolwarden worker` process, so its RSS is measured alone (sampled by the
test while the tool floods).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psutil
import pytest
from temporalio.client import Client

from tests.conftest import make_settings
from tests.support import eventually
from tests.worker_process import WorkerProcess
from toolwarden.client import Supervisor
from toolwarden.models import RunState

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

TOTAL = 1_000_000_000
LOG_CAP = 1024 * 1024
RSS_GROWTH_LIMIT = 100 * 1024 * 1024  # the flood is 10x this; a buffered copy would show


async def test_a_1gb_flood_keeps_the_worker_small_and_the_log_capped(
    client: Client, temporal_address: str, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path / "home", temporal_address)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        process = psutil.Process(worker.pid)
        supervisor = Supervisor(client, settings)
        spec = settings.run_spec(
            run_id="flood",
            argv=["sh", "-c", f"yes toolwarden-chaos-flood-line | head -c {TOTAL}"],
            overrides={"log_cap": LOG_CAP},
        )
        handle = await supervisor.start_run(spec)
        started = time.monotonic()

        async def running() -> bool:
            live = (await handle.status()).live
            return live is not None and live.pgid is not None

        await eventually(running, timeout=120, what="the flood started")
        baseline = peak = process.memory_info().rss
        waiting = asyncio.ensure_future(handle.result())
        while not waiting.done():
            peak = max(peak, process.memory_info().rss)
            await asyncio.wait({waiting}, timeout=0.1)
        result = waiting.result()
        elapsed = time.monotonic() - started

        assert result.state is RunState.SUCCEEDED, result
        attempt = (await handle.status()).last_attempt
        assert attempt is not None and attempt.stdout_path is not None
        assert attempt.stdout_bytes == TOTAL
        assert attempt.truncated
        log = Path(attempt.stdout_path)
        size = log.stat().st_size
        with log.open("rb") as handle_:
            handle_.seek(-200, 2)
            end = handle_.read()
        assert LOG_CAP <= size <= LOG_CAP + 200
        assert end.endswith(f"[toolwarden: log capped at {LOG_CAP} bytes; rest discarded]\n".encode())
        assert attempt.tail and attempt.tail[-1].startswith("toolwarden-chaos-flood-line"[:10])
        assert peak - baseline < RSS_GROWTH_LIMIT
        print(
            f"\nchaos flood: {TOTAL / 1e9:g} GB printed in {elapsed:.1f}s "
            f"({TOTAL / elapsed / 1e6:.0f} MB/s through the worker); worker RSS {baseline / 2**20:.0f} MiB "
            f"at start, peak {peak / 2**20:.0f} MiB (+{(peak - baseline) / 2**20:.1f} MiB); "
            f"log {size} bytes (cap {LOG_CAP}), truncated={attempt.truncated}"
        )
    finally:
        worker.stop()
