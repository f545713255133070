"""`toolwarden worker` as a real process, and the process groups its tools leave.

For tests that kill a worker the way a crash does (SIGKILL), so nothing in it runs on the way out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from toolwarden.config import Settings


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a worker process configured like `settings` (TOOLWARDEN_* only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWARDEN_")}
    env.update(
        TOOLWARDEN_HOME=str(settings.home),
        TOOLWARDEN_TEMPORAL__ADDRESS=settings.temporal.address,
        TOOLWARDEN_TEMPORAL__TASK_QUEUE=settings.temporal.task_queue,
        TOOLWARDEN_WORKER__HEALTH_ADDRESS="",
        TOOLWARDEN_WORKER__SDK_METRICS_ADDRESS="",
        TOOLWARDEN_WORKER__HEARTBEAT_INTERVAL=f"{settings.worker.heartbeat_interval.total_seconds()}s",
        TOOLWARDEN_WORKER__HEARTBEAT_TIMEOUT=f"{settings.worker.heartbeat_timeout.total_seconds()}s",
        TOOLWARDEN_WORKER__SHUTDOWN_GRACE=f"{settings.worker.shutdown_grace.total_seconds()}s",
        TOOLWARDEN_MIRROR__ENABLED=str(settings.mirror.enabled).lower(),
    )
    if settings.mirror.url:
        env["TOOLWARDEN_MIRROR__URL"] = settings.mirror.url
    env.update(extra)
    return env


class WorkerProcess:
    """One `toolwarden worker -v`, its output in `log`."""

    def __init__(self, settings: Settings, log: Path, **extra_env: str) -> None:
        self.log_path = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "toolwarden.cli", "worker", "-v"],
                env=worker_env(settings, **extra_env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """As a crash would: SIGKILL, so nothing in the worker runs on the way out."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        return self.process.returncode


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in group `pgid`."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                found.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return found


def kill_groups(pgids: list[int]) -> None:
    """Clean up after a failed test: nothing it started may outlive it."""
    for pgid in pgids:
        for pid in group_members(pgid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
