"""Shared fixtures: one real Temporal dev server per test session, a worker per test.

Each test gets its own data dir and task queue, so tests never see each other's work.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio.client import Client

from toolwarden.client import Supervisor, connect_client
from toolwarden.config import (
    MirrorSettings,
    ServerSettings,
    Settings,
    TemporalSettings,
    WorkerSettings,
)
from toolwarden.worker.devserver import DevServer
from toolwarden.worker.runner import build_worker

TOOLS = Path(__file__).parent / "tools"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[T] | T], timeout: float = 30.0, interval: float = 0.05
) -> T:
    """Wait until `check()` returns something truthy (awaiting it if needed), or fail."""
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
            raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


def tool(name: str) -> list[str]:
    """argv to run one of the scripts under tests/tools with this interpreter."""
    path = TOOLS / name
    if path.suffix == ".py":
        return [sys.executable, str(path)]
    return [str(path)]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TOOLWARDEN_"):
            monkeypatch.delenv(key)
    # Tools find `toolwarden` through the worker's shim, not the venv: keep the venv off PATH,
    # as under systemd or with `.venv/bin/toolwarden up` from a shell that never activated it.
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p != venv_bin]
    monkeypatch.setenv("PATH", os.pathsep.join(path))


@pytest.fixture(scope="session")
def server_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("temporal")


@pytest.fixture(scope="session")
async def temporal_address(server_home: Path) -> AsyncIterator[str]:
    settings = Settings(
        home=server_home,
        server=ServerSettings(port=free_port(), ui_port=0, log_level="error"),
    )
    server = DevServer(settings)
    await server.start()
    try:
        yield server.address
    finally:
        await server.stop()


def make_settings(home: Path, address: str, **sections: Any) -> Settings:
    worker = {
        "health_address": None,
        "sdk_metrics_address": None,
        "heartbeat_interval": timedelta(seconds=0.5),
        "shutdown_grace": timedelta(seconds=2),
        **sections.pop("worker", {}),
    }
    return Settings(
        home=home,
        temporal=TemporalSettings(address=address, task_queue=f"tq-{uuid.uuid4().hex[:12]}"),
        server=ServerSettings(port=int(address.rsplit(":", 1)[1])),
        worker=WorkerSettings(**worker),
        mirror=MirrorSettings(enabled=False),
        **sections,
    )


@pytest.fixture
def settings(tmp_path: Path, temporal_address: str) -> Settings:
    return make_settings(tmp_path / "home", temporal_address)


@pytest.fixture(scope="session")
async def client(temporal_address: str, server_home: Path) -> Client:
    return await connect_client(make_settings(server_home, temporal_address))


@pytest.fixture
async def worker(client: Client, settings: Settings) -> AsyncIterator[None]:
    async with build_worker(client, settings):
        yield


@pytest.fixture
def supervisor(client: Client, settings: Settings) -> Supervisor:
    return Supervisor(client, settings)


@pytest.fixture
def run_id(request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    def make(stem: str = "t") -> str:
        return f"{stem}-{uuid.uuid4().hex[:10]}"

    yield make
