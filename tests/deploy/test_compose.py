"""The root docker-compose.yml: accepted by `docker-compose config -q` (Debian's docker-compose
package, no engine needed) and shaped so that `--scale worker=N` works.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.conftest import REPO, require_tool
from toolwarden.config import Settings, parse_duration

COMPOSE = REPO / "docker-compose.yml"


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def config_q(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-f", str(directory / "docker-compose.yml"), "config", "-q"],
        capture_output=True, text=True, timeout=120, cwd=directory, check=False,
    )


def test_docker_compose_accepts_the_file() -> None:
    require_tool("docker-compose", "docker-compose")
    result = config_q(REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_docker_compose_config_can_fail(tmp_path: Path) -> None:
    """The check above is real: a wrong option under the worker is refused."""
    require_tool("docker-compose", "docker-compose")
    shutil.copy(REPO / "Dockerfile", tmp_path / "Dockerfile")
    text = COMPOSE.read_text().replace("stop_grace_period: 90s", "stop_grace_periods: 90s")
    (tmp_path / "docker-compose.yml").write_text(text)
    result = config_q(tmp_path)
    assert result.returncode != 0
    assert "stop_grace_periods" in result.stderr


def test_the_expected_services_exist() -> None:
    services = compose()["services"]
    assert {"temporal-db", "temporal", "temporal-ui", "mirror-db", "worker"} <= set(services)
    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/auto-setup:")
    assert temporal["environment"]["DB"] == "postgres12"
    assert temporal["environment"]["POSTGRES_SEEDS"] == "temporal-db"
    assert services["temporal-db"]["image"].startswith("postgres:")
    assert services["mirror-db"]["image"].startswith("postgres:")
    assert services["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    # Published ports stay on loopback.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_workers_can_scale() -> None:
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker, "a fixed name allows one container only"
    assert "ports" not in worker, "a fixed host port allows one container only"
    assert worker["build"] == "."
    assert worker["init"] is True, "orphaned tool grandchildren must be reaped"
    assert worker["restart"] == "unless-stopped"
    assert worker["command"][0] == "worker"
    assert "9464" in [str(p) for p in worker["expose"]]


def test_worker_environment() -> None:
    env = compose()["services"]["worker"]["environment"]
    assert env["TOOLWARDEN_TEMPORAL__ADDRESS"] == "temporal:7233"
    assert env["TOOLWARDEN_WORKER__HEALTH_ADDRESS"] == "0.0.0.0:9464"
    assert re.fullmatch(
        r"postgresql\+psycopg://toolwarden:[^@]+@mirror-db:5432/toolwarden",
        env["TOOLWARDEN_MIRROR__URL"],
    )
    for name in env:
        path = name.removeprefix("TOOLWARDEN_").lower().split("__")
        model: Any = Settings
        for part in path:
            assert part in model.model_fields, f"{name}: no such setting"
            model = model.model_fields[part].annotation
    settings = Settings(**{  # the values validate as settings
        "temporal": {"address": env["TOOLWARDEN_TEMPORAL__ADDRESS"]},
        "worker": {"shutdown_grace": env["TOOLWARDEN_WORKER__SHUTDOWN_GRACE"]},
    })
    grace = parse_duration(compose()["services"]["worker"]["stop_grace_period"])
    assert isinstance(grace, timedelta)
    needed = settings.worker.shutdown_grace + settings.defaults.kill_grace + timedelta(seconds=15)
    assert grace >= needed, "Docker would SIGKILL running tools before their grace period"


def test_migrations_run_once_before_workers() -> None:
    services = compose()["services"]
    migrate = services["mirror-migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["environment"] == services["worker"]["environment"]
    depends = services["worker"]["depends_on"]
    assert depends["mirror-migrate"]["condition"] == "service_completed_successfully"
    assert services["mirror-migrate"]["depends_on"]["mirror-db"]["condition"] == "service_healthy"


def test_monitoring_profile_mounts_the_checked_rules() -> None:
    prometheus = compose()["services"]["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    mount = next(v for v in prometheus["volumes"] if v.startswith("./deploy/prometheus:"))
    assert (REPO / "deploy" / "prometheus" / "prometheus.yml").is_file()
    assert mount.endswith(":ro")
    scrape = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    job = scrape["scrape_configs"][0]
    assert job["dns_sd_configs"][0]["names"] == ["worker"]
    assert job["dns_sd_configs"][0]["port"] == 9464
