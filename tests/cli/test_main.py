"""The entry point's start-up GC pause: on while importing, off before any command does work."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from toolwarden.cli.main import cli


@pytest.fixture
def paused_gc() -> Iterator[None]:
    """Start each test as `main()` starts the CLI: with the collector off."""
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


@pytest.fixture
def unreachable_config(tmp_path: Path) -> Path:
    config = tmp_path / "supervision.yaml"
    config.write_text(
        yaml.safe_dump(
            {"home": str(tmp_path), "temporal": {"address": "127.0.0.1:1", "connect_timeout": "2s"}}
        )
    )
    return config


@pytest.mark.usefixtures("paused_gc")
def test_commands_without_the_client_end_the_pause_first(unreachable_config: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(unreachable_config), "config", "show"])
    assert result.exit_code == 0, result.output
    assert gc.isenabled()


@pytest.mark.usefixtures("paused_gc")
@pytest.mark.parametrize("command", ["approve", "list", "tui"])
def test_self_paced_commands_leave_the_pause_on(unreachable_config: Path, command: str) -> None:
    # `--help` returns before `run_async` or the TUI's first frame, which end the pause.
    result = CliRunner().invoke(cli, ["--config", str(unreachable_config), command, "--help"])
    assert result.exit_code == 0, result.output
    assert not gc.isenabled()


@pytest.mark.usefixtures("paused_gc")
def test_client_commands_end_the_pause_in_run_async(unreachable_config: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(unreachable_config), "approve", "run/key"])
    assert result.exit_code == 1
    assert "does not answer" in result.stderr
    assert gc.isenabled()
