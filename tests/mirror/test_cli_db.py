"""`toolwarden db`: upgrade, current, downgrade, status (with a worker's /readyz), errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.mirror.conftest import make_approval, make_events, make_status
from tests.support import free_port
from toolwarden.cli.db import db
from toolwarden.config import MirrorSettings, Settings, WorkerSettings
from toolwarden.mirror import apply_update, head_revision, make_engine
from toolwarden.models import RunUpdate


def make(home: Path, url: str | None, health: str | None = None) -> Settings:
    return Settings(
        home=home,
        mirror=MirrorSettings(url=url),
        worker=WorkerSettings(health_address=health, sdk_metrics_address=None),
    )


def invoke(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(db, list(args), obj=SimpleNamespace(settings=settings))


@pytest.fixture
def readyz() -> Iterator[str]:
    """A stand-in for the worker's health server, answering /readyz like it does."""
    body = {
        "ready": True,
        "temporal": "connected",
        "polling": True,
        "task_queue": "q",
        "mirror": "degraded: OperationalError: database is locked",
        "mirror_backlog": 42,
        "mirror_lag_seconds": 3.5,
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = json.dumps(body).encode()
            self.send_response(200 if self.path == "/readyz" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_upgrade_current_status_downgrade(empty_url: str, tmp_path: Path) -> None:
    settings = make(tmp_path, empty_url)
    result = invoke(settings, "current")
    assert result.exit_code == 0 and "none" in result.output

    result = invoke(settings, "upgrade")
    assert result.exit_code == 0, result.output
    assert head_revision() in result.output

    result = invoke(settings, "current")
    assert result.output.strip() == f"{head_revision()} (head)"

    engine = make_engine(empty_url)
    with engine.begin() as conn:
        apply_update(
            conn,
            RunUpdate(
                status=make_status("r1", approvals=[make_approval("r1")]),
                events=make_events(1, 4),
            ),
        )
    engine.dispose()
    result = invoke(settings, "status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["revision"] == head_revision() and report["up_to_date"]
    counts = report["counts"]
    assert (counts["tool_runs"], counts["approvals"], counts["pending_approvals"]) == (1, 1, 1)
    assert counts["run_events"] == 3
    assert counts["newest_event"].startswith("2026-11-25T09:00:03")
    assert report["writer"] is None

    result = invoke(settings, "status")
    assert "1 runs, 1 approvals (1 pending), 3 events" in result.output

    result = invoke(settings, "downgrade", "base")
    assert result.exit_code == 0 and "base" in result.output
    assert "none" in invoke(settings, "current").output


def test_status_shows_the_running_writer(tmp_path: Path, readyz: str) -> None:
    settings = make(tmp_path, f"sqlite:///{tmp_path / 'm.db'}", health=readyz)
    assert invoke(settings, "upgrade").exit_code == 0
    result = invoke(settings, "status")
    assert result.exit_code == 0, result.output
    assert "backlog 42, lag 3.5s" in result.output
    assert "database is locked" in result.output
    report = json.loads(invoke(settings, "status", "--json").output)
    assert report["writer"]["backlog"] == 42


def test_status_tolerates_no_worker(tmp_path: Path) -> None:
    settings = make(tmp_path, f"sqlite:///{tmp_path / 'm.db'}", health=f"127.0.0.1:{free_port()}")
    result = invoke(settings, "status")
    assert result.exit_code == 0 and "no worker answering" in result.output


def test_errors_are_one_line(tmp_path: Path) -> None:
    settings = make(tmp_path, f"sqlite:///{tmp_path / 'm.db'}")
    result = invoke(settings, "downgrade", "nope")
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "nope" in result.output

    down = make(tmp_path, f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test")
    result = invoke(down, "upgrade")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: mirror database postgresql")
    assert "Traceback" not in result.output


def test_installed_script(tmp_path: Path) -> None:
    env = {**os.environ, "TOOLWARDEN_HOME": str(tmp_path / "home")}
    exe = Path(sys.executable).parent / "toolwarden"
    done = subprocess.run([str(exe), "db", "upgrade"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([str(exe), "db", "current"], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == f"{head_revision()} (head)"
    assert (tmp_path / "home" / "mirror.db").exists()


def test_status_with_the_database_down_still_reports_and_fails(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from toolwarden.cli.main import cli

    config = tmp_path / "down.yaml"
    config.write_text(
        f"home: {tmp_path}\n"
        "worker:\n  health_address: 127.0.0.1:1\n"
        "mirror:\n  url: postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2\n"
    )
    result = CliRunner().invoke(cli, ["--config", str(config), "db", "status"])
    assert result.exit_code == 1
    assert "revision:  unknown (mirror database" in result.output
    assert "writer:    no worker answering" in result.output
