"""`toolwarden tui` wiring: the command builds the app from the settings and runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolwarden.cli.main import cli
from toolwarden.tui.app import ToolwardenApp


def test_tui_command_builds_the_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ran: list[ToolwardenApp] = []
    monkeypatch.setattr(ToolwardenApp, "run", lambda self, *a, **k: ran.append(self))
    monkeypatch.setenv("TOOLWARDEN_HOME", str(tmp_path))
    monkeypatch.setenv("TOOLWARDEN_TEMPORAL__ADDRESS", "127.0.0.1:1")
    result = CliRunner().invoke(cli, ["tui", "--by", "zed"])
    assert result.exit_code == 0, result.output
    (app,) = ran
    assert app.approver == "zed"
    assert app.settings.temporal.address == "127.0.0.1:1"


def test_tui_help_through_the_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "toolwarden.cli", "tui", "--help"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    assert "Pending approvals and live runs" in out
    assert "--by" in out
