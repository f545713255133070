"""Chaos: a hung tool that ignores SIGTERM and forked grandchildren that ignore it too.

The whole group must be gone once the hang timeout and the kill grace have passed: SIGTERM to
the group, then SIGKILL to every member, grandchildren included.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support import eventually
from tests.worker_process import group_members
from toolwarden.client import Supervisor
from toolwarden.config import Settings
from toolwarden.models import RunState

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120), pytest.mark.usefixtures("worker")]

HANG_TIMEOUT = 2.0
KILL_GRACE = 1.5
SLACK = 5.0  # scheduling on a loaded 2-core machine: ticks, the SIGKILL wait, the result


async def test_a_hung_group_that_ignores_sigterm_is_killed_whole_after_the_grace(
    supervisor: Supervisor, settings: Settings, run_id
) -> None:
    spec = settings.run_spec(
        run_id=run_id("stubborn"),
        argv=[sys.executable, str(Path(__file__).parent / "stubborn_tree.py")],
        overrides={
            "hang_timeout": timedelta(seconds=HANG_TIMEOUT),
            "kill_grace": timedelta(seconds=KILL_GRACE),
        },
    )
    handle = await supervisor.start_run(spec)

    async def grandchildren() -> list[int] | None:
        live = (await handle.status()).live
        line = next((t for t in live.tail if t.startswith("GRANDCHILDREN")), None) if live else None
        return [int(pid) for pid in line.split()[1:]] if line else None

    pids = await eventually(grandchildren, timeout=60, what="the grandchildren forked")
    live = (await handle.status()).live
    assert live is not None and live.pgid is not None
    pgid = live.pgid
    assert set(pids) <= set(group_members(pgid))

    result = await handle.result()
    assert result.state is RunState.HUNG
    assert result.error == f"no output or heartbeat for {HANG_TIMEOUT:g}s"
    attempt = (await handle.status()).last_attempt
    assert attempt is not None and attempt.stdout_path and attempt.ended_at
    last_output = os.stat(attempt.stdout_path).st_mtime
    ended_after = attempt.ended_at.timestamp() - last_output
    assert group_members(pgid) == []
    # Had SIGTERM ended them, the kill would have returned before the grace was out.
    assert ended_after >= HANG_TIMEOUT + KILL_GRACE - 0.1
    assert ended_after <= HANG_TIMEOUT + KILL_GRACE + SLACK
    print(
        f"\nchaos hung-tree: group of {1 + len(pids)} processes ignoring SIGTERM; hang_timeout "
        f"{HANG_TIMEOUT}s + kill_grace {KILL_GRACE}s; run ended {ended_after:.2f}s after its "
        f"last output; processes left: {len(group_members(pgid))}"
    )
