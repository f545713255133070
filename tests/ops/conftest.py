"""Helpers of the operations tests: free ports, waiting on a condition, tiny TCP servers."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

POLL_INTERVAL = 0.02  # between checks of a condition, not a wait for time to pass

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Wait until `check()` is true, polling, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)


def require_tool(name: str, apt_package: str) -> str:
    """The path of `name`; skip when absent outside CI, fail in CI (`.ci/run` installs it)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing in CI: apt-get install -y {apt_package}")
        pytest.skip(f"{name} not installed (apt-get install -y {apt_package})")
    return path
