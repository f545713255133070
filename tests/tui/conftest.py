"""TUI test plumbing.

Textual's pilot waits after every key until the *process* looks idle (CPU time barely moving),
up to one second. Here the Temporal worker's own threads share the process, so it never looks
idle and every key press would cost up to two seconds. The tests wait for the conditions they
need instead (`until`), so the idle heuristic is replaced by a short yield.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


async def _short_idle(min_sleep: float = 0.0, max_sleep: float = 1.0) -> None:
    await asyncio.sleep(max(min_sleep, 0.01))


@pytest.fixture(autouse=True)
def _fast_pilot(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import textual.app
    import textual.pilot

    monkeypatch.setattr(textual.app, "wait_for_idle", _short_idle)
    monkeypatch.setattr(textual.pilot, "wait_for_idle", _short_idle)
    yield
