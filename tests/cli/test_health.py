"""`toolwarden health` against a real health server on loopback: exit codes 0, 1 and 2."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.http.serving import report, serve_health
from tests.support import free_port
from toolwarden.cli.health import health
from toolwarden.http.app import HttpServer
from toolwarden.http.health import Readiness


class Probe:
    def __init__(self) -> None:
        self.ready_after = 0  # ready from this call on (0: always)
        self.calls = 0
        self.temporal_down = False
        self.mirror = "ok"

    async def __call__(self) -> Readiness:
        self.calls += 1
        polling = self.calls > self.ready_after
        return report(
            temporal="unreachable: connection refused" if self.temporal_down else "connected",
            polling=polling and not self.temporal_down,
            task_queue="ops-cli",
            mirror=self.mirror,
            mirror_backlog=12,
            mirror_lag_seconds=3.25,
            running_tools=4,
        )


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def server(probe: Probe) -> AsyncIterator[HttpServer]:
    async with serve_health(probe, "127.0.0.1:0") as srv:
        yield srv


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No supervision.yaml from the developer's machine leaks into these tests."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name in list(os.environ):
        if name.startswith("TOOLWARDEN_"):
            monkeypatch.delenv(name)
    yield


async def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run the command in a thread: it runs its own event loop, the server runs in ours."""
    return await asyncio.to_thread(CliRunner().invoke, health, list(args), env=env)


async def test_ready_worker_exits_0(server: HttpServer) -> None:
    result = await invoke("--address", f"127.0.0.1:{server.port}")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"ready: worker at 127.0.0.1:{server.port}"
    assert "  temporal: connected" in lines
    assert "  polling:  yes (task queue ops-cli)" in lines
    assert "  mirror:   ok (backlog 12, lag 3.2s)" in lines
    assert "  tools:    4 running" in lines


async def test_not_ready_worker_exits_1_with_reasons(server: HttpServer, probe: Probe) -> None:
    probe.temporal_down = True
    result = await invoke("--address", f"127.0.0.1:{server.port}")
    assert result.exit_code == 1, result.output
    first = result.output.splitlines()[0]
    assert first.startswith(f"not ready: worker at 127.0.0.1:{server.port}: ")
    assert "temporal unreachable: connection refused" in first
    assert "not polling task queue 'ops-cli'" in first


async def test_degraded_mirror_is_ready_but_says_so(server: HttpServer, probe: Probe) -> None:
    probe.mirror = "degraded: disk full"
    result = await invoke("--address", f"127.0.0.1:{server.port}")
    assert result.exit_code == 0, result.output
    assert "(degraded: mirror degraded: disk full)" in result.output.splitlines()[0]


async def test_json_output(server: HttpServer, probe: Probe) -> None:
    result = await invoke("--json", "--address", f"127.0.0.1:{server.port}")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["ready"] is True
    assert data["address"] == f"127.0.0.1:{server.port}"
    assert data["running_tools"] == 4
    probe.temporal_down = True
    result = await invoke("--json", "--address", f"127.0.0.1:{server.port}")
    assert result.exit_code == 1
    assert json.loads(result.output)["ready"] is False


async def test_nobody_listening_exits_2_with_one_line() -> None:
    address = f"127.0.0.1:{free_port()}"
    result = await invoke("--address", address)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"no toolwarden worker answers at {address}" in lines[0]
    assert "toolwarden worker" in lines[0] and "Traceback" not in result.stderr


async def test_something_else_listening_exits_2() -> None:
    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await writer.drain()
        writer.close()

    other = await asyncio.start_server(not_http, "127.0.0.1", 0)
    port = other.sockets[0].getsockname()[1]
    try:
        result = await invoke("--address", f"127.0.0.1:{port}")
    finally:
        other.close()
        await other.wait_closed()
    assert result.exit_code == 2
    assert "did not answer with HTTP" in result.stderr


async def test_wait_keeps_asking_until_ready(server: HttpServer, probe: Probe) -> None:
    probe.ready_after = 3
    result = await invoke("--wait", "20", "--address", f"127.0.0.1:{server.port}")
    assert result.exit_code == 0, result.output
    assert probe.calls == 4


async def test_wait_gives_up_when_time_is_up(server: HttpServer, probe: Probe) -> None:
    probe.ready_after = 10**6
    result = await invoke("--wait", "0.5", "--quiet", "--address", f"127.0.0.1:{server.port}")
    assert result.exit_code == 1
    assert result.output == ""
    assert probe.calls >= 2


async def test_address_defaults_to_the_settings(server: HttpServer) -> None:
    env = {"TOOLWARDEN_WORKER__HEALTH_ADDRESS": f"127.0.0.1:{server.port}"}
    result = await invoke(env=env)
    assert result.exit_code == 0, result.output
    assert f"worker at 127.0.0.1:{server.port}" in result.output


async def test_wildcard_bind_address_is_asked_on_loopback(server: HttpServer) -> None:
    env = {"TOOLWARDEN_WORKER__HEALTH_ADDRESS": f"0.0.0.0:{server.port}"}
    result = await invoke(env=env)
    assert result.exit_code == 0, result.output


async def test_settings_come_from_the_root_group_context(server: HttpServer) -> None:
    from toolwarden.cli.main import cli

    config = Path("supervision.yaml")
    config.write_text(f"worker:\n  health_address: 127.0.0.1:{server.port}\n")
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["--config", str(config), "health", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["address"] == f"127.0.0.1:{server.port}"


async def test_disabled_health_address_and_bad_addresses_exit_2() -> None:
    Path("supervision.yaml").write_text("worker:\n  health_address: null\n")
    result = await invoke()
    assert result.exit_code == 2
    assert "health endpoint is disabled" in result.stderr
    result = await invoke("--address", "localhost")
    assert result.exit_code == 2
    assert "expected HOST:PORT" in result.stderr


async def test_bad_config_exits_2_with_one_line() -> None:
    Path("supervision.yaml").write_text("worker:\n  health_adress: 127.0.0.1:1\n")
    result = await invoke()
    assert result.exit_code == 2
    assert "worker.health_adress" in result.stderr
    assert "Traceback" not in result.stderr


async def test_installed_script_reports_an_unreachable_worker() -> None:
    script = Path(sys.executable).with_name("toolwarden")
    assert script.exists(), "the package is not installed in this environment"
    address = f"127.0.0.1:{free_port()}"
    proc = await asyncio.create_subprocess_exec(
        str(script), "health", "--address", address,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2
    assert out == b""
    assert err.decode().count("\n") == 1
    assert f"no toolwarden worker answers at {address}" in err.decode()
