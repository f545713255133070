"""The runnable examples run as a user would run them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolwarden.config import Settings

EXAMPLES = Path(__file__).parent.parent / "examples"


def env_for(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "TOOLWARDEN_HOME": str(settings.home),
        "TOOLWARDEN_TEMPORAL__ADDRESS": settings.temporal.address,
        "TOOLWARDEN_TEMPORAL__TASK_QUEUE": settings.temporal.task_queue,
    }


@pytest.mark.usefixtures("worker")
async def test_orchestrator_starts_twenty_and_reports(settings: Settings) -> None:
    completed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(EXAMPLES / "orchestrator.py")],
        env=env_for(settings), capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "started 20 runs" in out
    assert "summary: 1 failed, 1 failed_to_start, 1 hung, 17 succeeded" in out
