"""deploy/systemd: the units pass `systemd-analyze verify`, keep their policy, and their commands
parse with the real CLI.

Needs `systemd-analyze` and `systemd-sysusers` (Debian package `systemd`); skipped when absent
outside CI, a failure in CI.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.deploy.conftest import REPO, require_tool
from tests.http.serving import report, serve_health
from toolwarden.cli.health import health
from toolwarden.config import Settings, parse_duration
from toolwarden.http.app import HttpServer
from toolwarden.http.health import Readiness

SYSTEMD = REPO / "deploy" / "systemd"
SYSTEM_UNITS = ["toolwarden-worker.service", "toolwarden-server.service"]
USER_UNIT = SYSTEMD / "user" / "toolwarden-up.service"
INSTALLED = "/opt/toolwarden/bin/toolwarden"
SCRIPT = str(Path(sys.executable).with_name("toolwarden"))


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"[{section}] {key}: expected one value, got {values}"
    return values[0]


def seconds(text: str) -> float:
    value = parse_duration(text)
    assert isinstance(value, timedelta)
    return value.total_seconds()


def installable_copy(path: Path, target_dir: Path, replace: str, with_: str) -> Path:
    """The unit with the install path pointed at the toolwarden script of this environment."""
    text = path.read_text()
    assert replace in text, f"{path.name} does not run {replace}"
    copy = target_dir / path.name
    copy.write_text(text.replace(replace, with_))
    return copy


def verify(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})}, check=False,
    )


@pytest.mark.parametrize("name", SYSTEM_UNITS)
def test_system_units_pass_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    require_tool("systemd-analyze", "systemd")
    unit = installable_copy(SYSTEMD / name, tmp_path, INSTALLED, SCRIPT)
    result = verify("verify", "--man=no", str(unit))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys are only warnings


def test_user_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    require_tool("systemd-analyze", "systemd")
    unit = installable_copy(USER_UNIT, tmp_path, "%h/.local/bin/toolwarden", SCRIPT)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    result = verify("--user", "verify", "--man=no", str(unit), env={
        "XDG_RUNTIME_DIR": str(runtime), "HOME": str(tmp_path),
    })
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_verify_does_catch_a_misspelt_key(tmp_path: Path) -> None:
    """The check above can fail: a typo in a hardening option shows up on stderr."""
    require_tool("systemd-analyze", "systemd")
    unit = installable_copy(SYSTEMD / SYSTEM_UNITS[0], tmp_path, INSTALLED, SCRIPT)
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    result = verify("verify", "--man=no", str(unit))
    assert "Unknown key 'ProtectSytem'" in result.stderr


@pytest.mark.parametrize("name", SYSTEM_UNITS)
def test_system_units_are_well_sandboxed(name: str, tmp_path: Path) -> None:
    """`systemd-analyze security` rates the exposure at most 2.5 of 10 ("OK")."""
    require_tool("systemd-analyze", "systemd")
    unit = installable_copy(SYSTEMD / name, tmp_path, INSTALLED, SCRIPT)
    result = verify("security", "--offline=yes", "--threshold=25", "--no-pager", str(unit))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_worker_unit_policy() -> None:
    unit = parse_unit(SYSTEMD / "toolwarden-worker.service")
    service = "Service"
    assert one(unit, service, "Type") == "exec"
    assert one(unit, service, "KillMode") == "mixed"
    assert one(unit, service, "KillSignal") == "SIGTERM"
    assert one(unit, service, "Restart") == "on-failure"
    assert one(unit, service, "User") == "toolwarden"
    assert "DynamicUser" not in unit[service]
    assert one(unit, service, "EnvironmentFile") == "/etc/toolwarden/env"
    assert one(unit, service, "ExecStart").split()[:2] == [INSTALLED, "worker"]
    post = one(unit, service, "ExecStartPost")
    assert post.startswith("-"), "a worker waiting for Temporal must not fail its start"
    assert shlex.split(post[1:])[:2] == [INSTALLED, "health"]
    for key, expected in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
        "ProtectHome": "read-only", "StateDirectory": "toolwarden",
        "RuntimeDirectory": "toolwarden", "CapabilityBoundingSet": "",
    }.items():
        assert one(unit, service, key) == expected, key
    assert "MemoryDenyWriteExecute" not in unit[service], "tools with a JIT need W+X memory"

    # The stop timeout covers the worker's grace and a tool's kill grace with room to spare.
    defaults = Settings()
    needed = (
        defaults.worker.shutdown_grace.total_seconds()
        + defaults.defaults.kill_grace.total_seconds()
        + 15
    )
    assert seconds(one(unit, service, "TimeoutStopSec")) >= needed
    wait = float(shlex.split(post[1:])[shlex.split(post[1:]).index("--wait") + 1])
    assert seconds(one(unit, service, "TimeoutStartSec")) > wait
    # Where the unit puts the data is where the env file and settings expect it.
    env = dict(v.split("=", 1) for v in unit[service]["Environment"])
    assert env["TOOLWARDEN_HOME"] == "/var/lib/toolwarden"
    assert env["TOOLWARDEN_WORKER__SOCKET_DIR"] == "/run/toolwarden"
    assert one(unit, service, "WorkingDirectory") == "/var/lib/toolwarden"


def test_server_unit_policy() -> None:
    unit = parse_unit(SYSTEMD / "toolwarden-server.service")
    assert one(unit, "Service", "ExecStart").split()[:2] == [INSTALLED, "server"]
    assert one(unit, "Service", "User") == "toolwarden"
    assert one(unit, "Service", "KillMode") == "mixed"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "EnvironmentFile") == "/etc/toolwarden/env"
    assert "toolwarden-worker.service" in one(unit, "Unit", "Before")
    worker = parse_unit(SYSTEMD / "toolwarden-worker.service")
    assert "toolwarden-server.service" in one(worker, "Unit", "After")


def test_sysusers_file_creates_the_service_account(tmp_path: Path) -> None:
    require_tool("systemd-sysusers", "systemd")
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSTEMD / "toolwarden.sysusers.conf")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    assert re.search(r"^toolwarden:x:\d+:\d+:[^:]*:/var/lib/toolwarden:/usr/sbin/nologin$",
                     passwd, re.MULTILINE), passwd


def test_env_example_names_only_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = (SYSTEMD / "env.example").read_text().splitlines()
    active: dict[str, str] = {}
    for line in lines:
        match = re.match(r"^(#?)(TOOLWARDEN_[A-Z0-9_]+)=(.*)$", line.strip())
        if not match:
            continue
        commented, name, value = match.groups()
        path = name.removeprefix("TOOLWARDEN_").lower().split("__")
        model: object = Settings
        for part in path:
            fields = getattr(model, "model_fields", None)
            if part == "config" and model is Settings:
                break
            assert fields is not None and part in fields, f"{name}: no such setting"
            model = fields[part].annotation
        if not commented:
            active[name] = value
    assert active, "env.example sets nothing"
    for name in list(os.environ):
        if name.startswith("TOOLWARDEN_"):
            monkeypatch.delenv(name)
    for name, value in active.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.worker.health_address == active["TOOLWARDEN_WORKER__HEALTH_ADDRESS"]


@pytest.fixture
async def ready_worker() -> AsyncIterator[HttpServer]:
    async def ready() -> Readiness:
        return report(temporal="connected", polling=True, task_queue="toolwarden")

    async with serve_health(ready, "127.0.0.1:0") as srv:
        yield srv


async def test_the_units_commands_parse_with_the_real_cli(ready_worker: HttpServer) -> None:
    """ExecStartPost's health wait succeeds against a ready worker; ExecStart's options exist."""
    from toolwarden.cli.main import cli

    unit = parse_unit(SYSTEMD / "toolwarden-worker.service")
    post = shlex.split(one(unit, "Service", "ExecStartPost").lstrip("-"))[1:]
    result = await asyncio.to_thread(
        CliRunner().invoke, health, [*post[1:], "--address", f"127.0.0.1:{ready_worker.port}"]
    )
    assert result.exit_code == 0, result.output
    assert result.output == ""  # --quiet

    for path in (SYSTEMD / "toolwarden-worker.service", SYSTEMD / "toolwarden-server.service",
                 USER_UNIT):
        start = shlex.split(one(parse_unit(path), "Service", "ExecStart"))[1:]
        result = await asyncio.to_thread(CliRunner().invoke, cli, [*start, "--help"])
        assert result.exit_code == 0, (path.name, result.output)
