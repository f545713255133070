"""TUI test plumbing.

Textual's pilot waits after every key until the *process* looks idle (CPU time barely moving),
up to one second. Here the Temporal worker's own threads share the process, so it never looks
idle and every key press would cost up to two seconds; on a loaded machine the heuristic also
says "idle" while work is still queued, because the process is starved rather than done. The
tests wait for the conditions they need instead (`until`, `settled`), so the idle heuristic is
replaced by a short yield.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.conftest import make_settings
from toolwarden.client import Unavailable, connect_client

RETRY_INTERVAL = 0.25  # between retries until a deadline

# Generous: the real-server tests run on loaded CI machines, next to other suites.
SERVER_DEADLINE = 60.0


async def _short_idle(min_sleep: float = 0.0, max_sleep: float = 1.0) -> None:
    await asyncio.sleep(max(min_sleep, 0.01))


@pytest.fixture(autouse=True)
def _gc_threshold() -> Iterator[None]:
    """The app raises the collector's young threshold for itself; not for the rest of the run."""
    import gc

    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)


@pytest.fixture(autouse=True)
def _fast_pilot(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import textual.app
    import textual.pilot

    monkeypatch.setattr(textual.app, "wait_for_idle", _short_idle)
    monkeypatch.setattr(textual.pilot, "wait_for_idle", _short_idle)
    yield


@pytest.fixture(scope="session")
async def client(temporal_address: str, server_home: Path) -> Client:
    """The session client, once the dev server serves: its port opens before its frontend is
    healthy, and on a loaded machine the gap is long enough for a first connect to fail with
    "Frontend is not healthy yet"."""
    settings = make_settings(server_home, temporal_address)
    deadline = time.monotonic() + SERVER_DEADLINE
    while True:
        try:
            return await connect_client(settings)
        except Unavailable:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(RETRY_INTERVAL)
