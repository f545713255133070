"""Helpers every test module shares: a free port, waiting on a condition, the tool scripts.

Plain functions, not fixtures, so any test (or a fixture) imports them from one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.service import RPCError

T = TypeVar("T")

TOOLS = Path(__file__).parent / "tools"
REPO = Path(__file__).resolve().parents[1]
POLL_INTERVAL = 0.05  # between checks of a condition under a deadline, not a wait for time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[T] | T],
    timeout: float = 30.0,
    interval: float = POLL_INTERVAL,
    *,
    what: str = "condition",
) -> T:
    """Wait until `check()` returns something truthy (awaiting it if needed), or fail.

    An AssertionError raised by `check` counts as "not yet"; the last one is reported.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
            if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
                value = await value
            last = value
            if value:
                return value  # type: ignore[return-value]
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


def tool(name: str) -> list[str]:
    """argv to run one of the scripts under tests/tools with this interpreter."""
    path = TOOLS / name
    if path.suffix == ".py":
        return [sys.executable, str(path)]
    return [str(path)]


async def end_open_runs(client: Client, task_queue: str) -> None:
    """Terminate the runs a test left open on its task queue: with their worker gone they
    could answer no query, and every later approvals listing on the shared server would wait
    for them."""
    query = f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'"
    async for execution in client.list_workflows(query):
        with contextlib.suppress(RPCError):  # ended meanwhile
            await client.get_workflow_handle(execution.id, run_id=execution.run_id).terminate(
                reason="the test that started it has ended"
            )
