"""Shared fixtures: one real Temporal dev server per test session, a worker per test.

Each test gets its own data dir and task queue, so tests never see each other's work.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from tests.support import TOOLS, end_open_runs, eventually, free_port, tool
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

__all__ = ["TOOLS", "eventually", "free_port", "tool"]



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
    await end_open_runs(client, settings.temporal.task_queue)



@pytest.fixture
def supervisor(client: Client, settings: Settings) -> Supervisor:
    return Supervisor(client, settings)


@pytest.fixture
def run_id(request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    def make(stem: str = "t") -> str:
        return f"{stem}-{uuid.uuid4().hex[:10]}"

    yield make
